"""Joint motion-estimation and segmentation network (Qin et al., MICCAI 2018).

One shared multi-scale encoder (VGG-like: 3×3 conv + BN + ReLU, each stage after the first
down-samples by a stride-2 3×3 conv) is applied Siamese-style to the ED frame and to every frame.

* Segmentation branch (FCN): every scale → 3×3 conv to ``head`` channels → upsample to full size →
  concatenate → 1×1 conv → 1×1 conv + BN + ReLU → 1×1 conv to 4 classes.
* Motion branch: at every scale concatenate ED and frame-t features → 3×3 conv to ``head`` →
  upsample → concatenate → 1×1 convs → a convolutional GRU → 2-channel flow ``(dy, dx)`` in pixels
  (from frame t to ED: ``frame_t(p) ≈ frame_ED(p + u_t(p))``). The GRU is run *pairwise*: each frame's
  motion comes from its own two-step sequence (ED paired with itself, then ED with frame t), the
  sequence it is trained on, so nothing drifts over a long cycle (:meth:`JointMotionSegNet.pairwise_flows`).

Axis orders: a frame batch is ``(B, 1, H, W)``; a sequence ``(B, T, 1, H, W)``. H and W may be any
size: inputs are zero-padded to a multiple of 16 internally and outputs cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..conventions import NUM_CLASSES


@dataclass
class JointConfig:
    """Architecture hyper-parameters (stored in every checkpoint).

    Attributes:
        channels: encoder width per scale (paper: 64/128/256/512/512).
        head: channels of each per-scale branch feature (paper: 64).
        gru_hidden: hidden channels of the convolutional GRU of the motion branch.
        max_flow: bound on |displacement| per component, pixels (tanh × max_flow).
        input_size: training crop (H, W) in model pixels (inference runs on a region around the heart,
            see :mod:`napari_cardiac_motion.geometry`).
        pixel_mm: the in-plane pixel size (mm) the network works at; every input is resampled to it.
        motion_stride: the motion branch (fusion + GRU) runs at 1/stride resolution and its flow is
            upsampled bilinearly (motion is smooth; this makes the branch ~4× cheaper on a CPU).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    head: int = 24
    gru_hidden: int = 16
    max_flow: float = 24.0
    input_size: tuple[int, int] = (192, 192)
    motion_stride: int = 2
    pixel_mm: float = 1.5
    num_classes: int = field(default=NUM_CLASSES)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "JointConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(int(c) for c in known["channels"])
        if "input_size" in known:
            known["input_size"] = tuple(int(c) for c in known["input_size"])
        return cls(**known)


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Five-scale encoder; returns features at strides 1, 2, 4, 8, 16."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        stages = []
        cin = 1
        for i, c in enumerate(channels):
            layers = [] if i == 0 else [_conv_bn_relu(cin, c, stride=2)]
            layers += [_conv_bn_relu(cin if i == 0 else c, c), _conv_bn_relu(c, c)]
            stages.append(nn.Sequential(*layers))
            cin = c
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class MultiScaleFusion(nn.Module):
    """3×3 conv per scale to ``head`` channels, upsample to the first scale's size, concatenate."""

    def __init__(self, in_channels: list[int], head: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv_bn_relu(c, head) for c in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        outs = []
        for conv, f in zip(self.convs, feats):
            y = conv(f)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        return torch.cat(outs, dim=1)


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (3×3 gates)."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 2 * hidden, 3, padding=1)
        self.cand = nn.Conv2d(cin + hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, dim=1)
        c = torch.tanh(self.cand(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * c


class JointMotionSegNet(nn.Module):
    """The joint network. See the module docstring for the architecture and axis orders."""

    def __init__(self, config: JointConfig | None = None):
        super().__init__()
        self.config = config or JointConfig()
        ch = list(self.config.channels)
        head = self.config.head
        n = len(ch)
        self.encoder = Encoder(tuple(ch))
        self.seg_fuse = MultiScaleFusion(ch, head)
        self.seg_head = nn.Sequential(
            nn.Conv2d(n * head, head, 1),
            _conv_bn_relu(head, head, k=1),
            nn.Conv2d(head, self.config.num_classes, 1),
        )
        # motion fusion starts at the scale of stride `motion_stride` (1 -> scale 0, 2 -> scale 1)
        self._m0 = {1: 0, 2: 1, 4: 2}[self.config.motion_stride]
        self.motion_fuse = MultiScaleFusion([2 * c for c in ch[self._m0:]], head)
        self.motion_mix = nn.Sequential(_conv_bn_relu((n - self._m0) * head, head, k=1), _conv_bn_relu(head, head, k=1))
        self.gru = ConvGRUCell(head, self.config.gru_hidden)
        self.flow_out = nn.Conv2d(self.config.gru_hidden, 2, 3, padding=1)
        nn.init.normal_(self.flow_out.weight, std=1e-3)
        nn.init.zeros_(self.flow_out.bias)

    # -- building blocks ------------------------------------------------------------------------
    @staticmethod
    def pad16(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Zero-pad ``(..., H, W)`` at the bottom and right to multiples of 16 (the encoder's stride);
        returns the padded tensor and the original ``(H, W)`` to crop outputs back to."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x, (h, w)

    def encode(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Encode ``(B, 1, H, W)`` frames (H, W multiples of 16) into five feature maps."""
        return self.encoder(frames)

    @staticmethod
    def _fuse_mix(fuse: "MultiScaleFusion", mix_weight: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """``conv1x1(cat(upsample(conv_i(f_i))))`` without the concatenation: the 1×1 convolution and the
        bilinear up-sampling are both linear and commute, so each scale is mixed to ``head`` channels at
        its own resolution and only then up-sampled and summed (the same numbers as the concatenated
        form up to rounding; far fewer operations at full resolution). No bias (added by the caller)."""
        size = feats[0].shape[-2:]
        width = mix_weight.shape[1] // len(feats)
        out = None
        for i, (conv, f) in enumerate(zip(fuse.convs, feats)):
            y = F.conv2d(conv(f), mix_weight[:, i * width:(i + 1) * width])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return out

    def segment_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Segmentation logits ``(B, 4, H, W)`` from encoder features.

        Computes ``seg_head(seg_fuse(feats))`` with the first 1×1 convolution moved before the
        up-sampling (:meth:`_fuse_mix`)."""
        first = self.seg_head[0]
        x = self._fuse_mix(self.seg_fuse, first.weight, feats) + first.bias.view(1, -1, 1, 1)
        return self.seg_head[2](self.seg_head[1](x))

    def motion_features(self, feats_ed: list[torch.Tensor], feats_t: list[torch.Tensor]) -> torch.Tensor:
        """Fused ED/frame-t motion features ``(B, head, H/s, W/s)`` (s = ``motion_stride``).

        ``motion_mix(motion_fuse(pairs))`` with the first 1×1 convolution moved before the up-sampling
        (:meth:`_fuse_mix`; it has no bias: batch normalisation follows)."""
        pairs = [torch.cat([a.expand_as(b), b], 1) for a, b in zip(feats_ed[self._m0:], feats_t[self._m0:])]
        first = self.motion_mix[0]  # conv (no bias) + BN + ReLU
        x = first[2](first[1](self._fuse_mix(self.motion_fuse, first[0].weight, pairs)))
        return self.motion_mix[1](x)

    def flow_step(self, motion_feat: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: returns ``(flow (B, 2, H, W) in full-resolution pixels, new hidden)``."""
        hidden = self.gru(motion_feat, hidden)
        flow = torch.tanh(self.flow_out(hidden)) * self.config.max_flow
        s = self.config.motion_stride
        if s != 1:
            flow = F.interpolate(flow, scale_factor=s, mode="bilinear", align_corners=False)
        return flow, hidden

    # -- public API -----------------------------------------------------------------------------
    def segment(self, frames: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(B, 4, H, W)`` of frames ``(B, 1, H, W)`` (any H, W)."""
        x, (h, w) = self.pad16(frames)
        return self.segment_features(self.encode(x))[..., :h, :w]

    def forward(self, source: torch.Tensor, frames: torch.Tensor, pairwise: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Joint forward pass over a sequence.

        Args:
            source: ED frames ``(B, 1, H, W)``.
            frames: target frames ``(B, T, 1, H, W)`` in temporal order.
            pairwise: see :meth:`flows_from_features`.
        Returns:
            ``(seg_logits (B, T, 4, H, W), flows (B, T, 2, H, W) in pixels (dy, dx),
            source_seg_logits (B, 4, H, W))``.
        """
        b, t = frames.shape[:2]
        src, (h, w) = self.pad16(source)
        tgt, _ = self.pad16(frames.flatten(0, 1))
        feats_all = self.encode(torch.cat([src, tgt], 0))
        feats_src = [f[:b] for f in feats_all]
        feats_tgt = [f[b:] for f in feats_all]
        seg_all = self.segment_features(feats_all)[..., :h, :w]
        seg_src = seg_all[:b]
        seg = seg_all[b:].unflatten(0, (b, t))
        return seg, self.flows_from_features(feats_src, feats_tgt, (h, w), pairwise), seg_src

    def forward_sequence(self, images: torch.Tensor, pairwise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment and estimate motion over sequences whose source (ED) is their first frame.

        The one sequence API that inference, training and fine-tuning share: the same computation as
        ``forward(images[:, :1], images)`` without encoding the source twice.

        Args:
            images: ``(B, T, H, W)`` frames, frame 0 = source (ED), temporal order.
            pairwise: see :meth:`flows_from_features` (the default, as inference runs).
        Returns:
            ``(seg_logits (B, T, C, H, W), flows (B, T, 2, H, W))``, flows in pixels ``(dy, dx)``
            from frame t to frame 0 (``flows[:, 0] ≈ 0`` is learnt, not forced).
        """
        b, t, h, w = images.shape
        x, _ = self.pad16(images.reshape(b * t, 1, h, w))
        feats = self.encode(x)
        seg = self.segment_features(feats)[..., :h, :w].unflatten(0, (b, t))
        feats_src = [f.unflatten(0, (b, t))[:, 0] for f in feats]
        return seg, self.flows_from_features(feats_src, feats, (h, w), pairwise)

    def flows_from_features(self, feats_src: list[torch.Tensor], feats_tgt: list[torch.Tensor],
                            size: tuple[int, int], pairwise: bool = True) -> torch.Tensor:
        """Run the motion branch over sequences.

        Args:
            feats_src: encoder features of the B ED frames.
            feats_tgt: encoder features of the B·T target frames, sequence-major, in temporal order.
            size: ``(H, W)`` to crop the flows to (the unpadded frame size).
            pairwise: each frame from its own ``(ED, ED) → (ED, t)`` sequence (:meth:`pairwise_flows`,
                what inference runs) instead of one recurrence across all T frames.
        Returns:
            flows ``(B, T, 2, H, W)`` in pixels ``(dy, dx)``.
        """
        b = feats_src[0].shape[0]
        t = feats_tgt[0].shape[0] // b
        feats_src_rep = [f.repeat_interleave(t, dim=0) for f in feats_src]  # ED features for every frame
        mfeat = self.motion_features(feats_src_rep, feats_tgt).unflatten(0, (b, t))
        if pairwise:
            return self.pairwise_flows(mfeat, size, first=self.motion_features(feats_src, feats_src))
        return self.recurrent_flows(mfeat, size)

    def pairwise_flows(self, motion_feats: torch.Tensor, size: tuple[int, int],
                       first: torch.Tensor | None = None) -> torch.Tensor:
        """Every frame's motion from its own two-step sequence ``(ED, ED) → (ED, t)``.

        This is the sequence the recurrence is trained on (an ED/ES pair whose first frame is the
        source itself), so no state is carried across the cycle: the motion of frame t depends on the
        ED frame and frame t only (no drift, no odd/even alternation). The first step only depends on
        the ED frame, so it runs once per sequence; the second runs batched over all frames.

        Args:
            motion_feats: ``(B, T, head, H/s, W/s)`` from :meth:`motion_features`.
            size: ``(H, W)`` to crop the flows to.
            first: ``(B, head, H/s, W/s)`` motion features of the source paired with itself; default
                ``motion_feats[:, 0]`` (sequences whose frame 0 is the source).
        Returns:
            flows ``(B, T, 2, H, W)`` in pixels ``(dy, dx)``.
        """
        b, t = motion_feats.shape[:2]
        first = motion_feats[:, 0] if first is None else first
        _, hidden = self.flow_step(first, None)  # (B, hidden, h, w): the (ED, ED) step
        hidden = hidden.unsqueeze(1).expand(-1, t, -1, -1, -1).flatten(0, 1)
        flow, _ = self.flow_step(motion_feats.flatten(0, 1), hidden)
        return flow[..., : size[0], : size[1]].unflatten(0, (b, t))

    def recurrent_flows(self, motion_feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The recurrence of the motion branch over time, one state carried across all T frames.

        Kept for training on sequences and for comparison: a recurrence trained on two-frame pairs
        drifts over a whole cycle when run this way; inference uses :meth:`pairwise_flows`.

        Args:
            motion_feats: ``(B, T, head, H/s, W/s)`` from :meth:`motion_features`, temporal order.
            size: ``(H, W)`` to crop the flows to.
        Returns:
            flows ``(B, T, 2, H, W)`` in pixels ``(dy, dx)``.
        """
        hidden = None
        flows = []
        for k in range(motion_feats.shape[1]):
            flow, hidden = self.flow_step(motion_feats[:, k], hidden)
            flows.append(flow[..., : size[0], : size[1]])
        return torch.stack(flows, 1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
