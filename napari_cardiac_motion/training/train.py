"""Core training loop of the joint model (no Qt): ``train(config, progress=None, cancel=None, log=None)``.

Weak supervision as in Qin et al. (2018), see docs/ARCHITECTURE.md and the model card:

* **segmentation loss** — partial-label cross-entropy (+ soft Dice on exactly labelled ACDC voxels) on
  every labelled frame (ED/ES); unlabelled voxels are ignored (see :mod:`.data` for label codes);
* **motion loss** — ``MSE(warp(I_src, u_t), I_t) + λ·Charbonnier(∇u_t)`` on every frame of every
  sequence: ACDC as ``src=ED, frames=[ED, ES]`` and ``src=ES, frames=[ES, ED]``; Sunnybrook as
  ``src=ED, frames=`` 8 frames in cycle order from ED (stride 1–3, so ES appears in some);
* **joint loss** — the source frame's labels (one-hot) warped by ``u_t`` against frame t's labels
  (partial-label NLL + Dice).

Updates are joint (one optimiser, summed loss) by default; ``mode="alternating"`` alternates a
segmentation step and a motion+joint step with separate Adam states, as the reference code did.
The learning rate follows a cosine schedule over ``max(step / total_steps, elapsed / time budget)``,
so a run stopped by the wall-clock budget still ends with a small learning rate.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..conventions import NUM_CLASSES
from ..devices import resolve_device
from ..errors import CancelledError, InputError
from ..evaluation.metrics import dice
from ..geometry import Region
from ..model.checkpoint import read_checkpoint, save_checkpoint
from ..model.losses import IGNORE_INDEX, charbonnier_smoothness, dice_loss_from_probs
from ..model.network import JointConfig, JointMotionSegNet, count_parameters
from ..model.transformer import warp
from .augment import augment_batch, crop_centered
from .data import (ACDC_LICENCE, ACDC_VAL_PATIENTS, NOT_LV, NOT_LV_MYO, SUNNYBROOK_LICENCE,
                   SUNNYBROOK_VAL_PATIENTS, Case, load_acdc, load_sunnybrook)

MODEL_NAME = "cardiac-joint-v2"
MODEL_VERSION = "2.0.0"

ProgressCallback = Callable[[int, int, str], None]


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint metadata)."""

    data: str = "../shared/data"
    out: str = "runs/model.pt"
    epochs: int = 20
    steps_per_epoch: int | None = None  # None: one pass over the ACDC training slices (both directions) / batch
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.03
    weight_decay: float = 1e-5
    seed: int = 0
    device: str = "auto"
    time_budget_min: float | None = None
    resume: str | None = None
    log_file: str | None = None
    mode: str = "joint"  # or "alternating"
    w_seg: float = 1.0
    w_motion: float = 10.0
    smooth: float = 5e-3
    w_joint: float = 0.5
    sunnybrook_every: int = 4  # one Sunnybrook cine batch every N steps (0: never)
    sb_batch: int = 2
    sb_frames: int = 8
    wide_prob: float = 0.25
    acdc_limit: int | None = None  # tests: only the first N training patients
    use_sunnybrook: bool = True
    validate: bool = True
    val_limit: int | None = None
    provisional: bool = False
    num_threads: int = 2
    adaptive_threads: bool = True  # CPU: drop to 1 thread while other processes load the cores
    model: dict = field(default_factory=lambda: JointConfig().to_dict())
    command: str = ""
    init: str | None = None  # start from these weights (a checkpoint), with a fresh optimiser
    workers: int = 0  # data-loading worker processes (0: batches are made in the training process)
    channels_last: bool | None = None  # None: on for CUDA and CPU (1.22× samples/s on the 2-core CPU), off for MPS
    amp: bool = True  # mixed precision (float16 autocast + gradient scaling) on CUDA
    compile: bool = False  # torch.compile the network (CUDA: faster after a warm-up of ~1 min)
    train_parts: str = "all"  # "motion": only the motion branch learns (encoder and segmentation frozen)


# --------------------------------------------------------------------------------------------------
# losses with partial labels

def _allowed_table(device: torch.device) -> torch.Tensor:
    t = torch.zeros(256, NUM_CLASSES, device=device)
    for c in range(NUM_CLASSES):
        t[c, c] = 1
    t[NOT_LV_MYO] = torch.tensor([1.0, 0, 0, 1], device=device)
    t[NOT_LV] = torch.tensor([1.0, 0, 1, 1], device=device)
    return t  # IGNORE_INDEX row stays all zero


def partial_nll_logits(logits: torch.Tensor, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean ``-log Σ_{c allowed by code} softmax(logits)_c`` over voxels with a known code."""
    allowed = table[codes].permute(0, 3, 1, 2)  # (N, C, H, W)
    valid = allowed.sum(1) > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), 1)
    allowed = torch.where(valid.unsqueeze(1), allowed, torch.ones_like(allowed))
    ll = torch.logsumexp(logp.masked_fill(allowed == 0, -1e4), 1)
    return -(ll[valid]).mean()


def partial_nll_probs(probs: torch.Tensor, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    allowed = table[codes].permute(0, 3, 1, 2)
    valid = allowed.sum(1) > 0
    if not bool(valid.any()):
        return probs.sum() * 0.0
    p = (probs.float() * allowed).sum(1).clamp_min(1e-6)
    return -torch.log(p[valid]).mean()


def exact_labels(codes: torch.Tensor) -> torch.Tensor:
    """Codes → labels with partial codes set to ``IGNORE_INDEX`` (for Dice)."""
    return torch.where(codes < NUM_CLASSES, codes, torch.full_like(codes, IGNORE_INDEX))


def source_onehot(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot ``(B, C, H, W)`` of a source frame's codes (partial codes → background) and a per-sample
    flag: the frame is labelled at all."""
    lab = codes.clone()
    lab[(lab == NOT_LV_MYO) | (lab == NOT_LV)] = 0
    labelled = (lab != IGNORE_INDEX).flatten(1).any(1)
    lab[lab == IGNORE_INDEX] = 0
    return F.one_hot(lab, NUM_CLASSES).permute(0, 3, 1, 2).float(), labelled


def forward_sequence(model: JointMotionSegNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.forward_sequence(images)``: the network's one sequence API (kept for callers of the
    module-level name)."""
    return model.forward_sequence(images)


def batch_losses(model: JointMotionSegNet, images: torch.Tensor, codes: torch.Tensor, cfg: TrainConfig,
                 table: torch.Tensor, use_dice: bool, fwd: Callable | None = None) -> dict[str, torch.Tensor]:
    """Losses of one batch of sequences ``images`` (B, T, H, W), source = frame 0, ``codes`` alike."""
    b, t = images.shape[:2]
    src = images[:, :1]
    seg, flows = (fwd or model.forward_sequence)(images)
    seg_f = seg.flatten(0, 1)
    codes_f = codes.flatten(0, 1)
    l_seg = partial_nll_logits(seg_f, codes_f, table)
    if use_dice:
        l_seg = l_seg + dice_loss_from_probs(torch.softmax(seg_f.float(), 1), exact_labels(codes_f))
    flows_f = flows.flatten(0, 1).float()
    src_rep = src.repeat_interleave(t, 0).float()
    tgt = images.flatten(0, 1).unsqueeze(1).float()
    l_mse = F.mse_loss(warp(src_rep, flows_f), tgt)
    l_smooth = charbonnier_smoothness(flows_f)
    # joint loss: source labels warped to every later frame
    oh, labelled = source_onehot(codes[:, 0])
    if t > 1 and bool(labelled.any()):
        oh_rep = oh.unsqueeze(1).expand(-1, t - 1, -1, -1, -1).flatten(0, 1)
        tgt_codes = codes[:, 1:].clone()
        tgt_codes[~labelled] = IGNORE_INDEX
        tgt_codes = tgt_codes.flatten(0, 1)
        warped = warp(oh_rep, flows[:, 1:].flatten(0, 1).float())
        l_joint = partial_nll_probs(warped, tgt_codes, table)
        if use_dice:
            l_joint = l_joint + dice_loss_from_probs(warped, exact_labels(tgt_codes))
    else:
        l_joint = flows.sum() * 0.0
    return {"seg": l_seg, "mse": l_mse, "smooth": l_smooth, "joint": l_joint}


def combine(losses: dict[str, torch.Tensor], cfg: TrainConfig, part: str = "all") -> torch.Tensor:
    seg = cfg.w_seg * losses["seg"]
    mot = cfg.w_motion * (losses["mse"] + cfg.smooth * losses["smooth"]) + cfg.w_joint * losses["joint"]
    return seg if part == "seg" else mot if part == "motion" else seg + mot


# --------------------------------------------------------------------------------------------------
# sampling

class Sampler:
    """Draws training batches from in-memory cases (numpy RNG; deterministic given the seed)."""

    def __init__(self, acdc: list[Case], sunny: list[Case], cfg: TrainConfig, rng: np.random.Generator):
        self.acdc, self.sunny, self.cfg, self.rng = acdc, sunny, cfg, rng
        self.pre = int(math.ceil(cfg.crop * 1.6 / 16) * 16)
        self.acdc_items = [(i, z) for i, c in enumerate(acdc) for z in range(c.n_slices)]
        self.sunny_items = [(i, z) for i, c in enumerate(sunny) for z in range(c.n_slices)]

    def _centre(self, case: Case, z: int, wide: bool) -> tuple[float, float]:
        h, w = case.image.shape[-2:]
        if wide:
            return h / 2 + self.rng.normal(0, 12), w / 2 + self.rng.normal(0, 12)
        cy, cx = case.center[z]
        return cy + self.rng.normal(0, 8), cx + self.rng.normal(0, 8)

    def _finish(self, imgs, cods, wide):
        return augment_batch(np.stack(imgs), np.stack(cods), self.cfg.crop, self.rng, wide=np.array(wide))

    def acdc_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, cods, wides = [], [], []
        for k in self.rng.integers(len(self.acdc_items), size=self.cfg.batch_size):
            i, z = self.acdc_items[k]
            case = self.acdc[i]
            order = [case.ed, case.es] if self.rng.random() < 0.5 else [case.es, case.ed]
            self._add_crop(case, z, order, imgs, cods, wides)
        return self._finish(imgs, cods, wides)

    def sunny_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, cods, wides = [], [], []
        for k in self.rng.integers(len(self.sunny_items), size=self.cfg.sb_batch):
            i, z = self.sunny_items[k]
            case = self.sunny[i]
            stride = int(self.rng.integers(1, 4))
            n = min(self.cfg.sb_frames, case.n_frames)
            order = [(case.ed + stride * j) % case.n_frames for j in range(n)]
            self._add_crop(case, z, order, imgs, cods, wides)
        return self._finish(imgs, cods, wides)

    def _add_crop(self, case, z: int, order: list[int], imgs: list, cods: list, wides: list) -> None:
        """Crop frames ``order`` of slice ``z`` around the heart (or a wide view) and append them."""
        wide = bool(self.rng.random() < self.cfg.wide_prob)
        cy, cx = self._centre(case, z, wide)
        imgs.append(crop_centered(case.image[order, z], cy, cx, self.pre, 0))
        cods.append(crop_centered(case.codes[order, z], cy, cx, self.pre, IGNORE_INDEX))
        wides.append(wide)


def set_train_mode(model: JointMotionSegNet, parts: str = "all") -> None:
    """Training mode; with ``parts="motion"`` the frozen encoder and segmentation branch stay in eval
    mode (their BatchNorm statistics do not move)."""
    model.train()
    if parts == "motion":
        for mod in (model.encoder, model.seg_fuse, model.seg_head):
            mod.eval()


class BatchStream(torch.utils.data.IterableDataset):
    """The batches of one epoch, ``(images (B, T, S, S), codes (B, T, S, S), is_sunnybrook)``, made in
    DataLoader worker processes when ``cfg.workers > 0`` (each worker makes every W-th step with its own
    random stream, so the schedule of ACDC and Sunnybrook batches does not depend on W).
    """

    def __init__(self, acdc: list[Case], sunny: list[Case], cfg: "TrainConfig", first_step: int, n_steps: int,
                 seed: list[int]):
        super().__init__()
        self.acdc, self.sunny, self.cfg = acdc, sunny, cfg
        self.first_step, self.n_steps, self.seed = first_step, n_steps, seed

    def is_sunnybrook(self, step: int) -> bool:
        every = self.cfg.sunnybrook_every
        return bool(self.sunny) and every > 0 and step % every == every - 1

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        sampler = Sampler(self.acdc, self.sunny, self.cfg, np.random.default_rng(self.seed + [wid]))
        for k in range(wid, self.n_steps, nw):
            is_sb = self.is_sunnybrook(self.first_step + k)
            images, codes = sampler.sunny_batch() if is_sb else sampler.acdc_batch()
            yield images, codes, is_sb


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def epoch_batches(acdc: list[Case], sunny: list[Case], cfg: "TrainConfig", first_step: int, n_steps: int,
                  seed: list[int], pin: bool = False):
    """Iterator over one epoch's batches (see :class:`BatchStream`)."""
    stream = BatchStream(acdc, sunny, cfg, first_step, n_steps, seed)
    if cfg.workers <= 0:
        return iter(stream)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers, pin_memory=pin,
                                         prefetch_factor=4, worker_init_fn=_worker_init)
    return iter(loader)


# --------------------------------------------------------------------------------------------------
# validation

def validation_region(case: Case, size: int) -> Region:
    """The square ``size`` region (model pixels; cases are already at the model's pixel size) around the
    heart centre of the case's labelled slices, placed inside the field where it fits."""
    from ..geometry import region_around

    h, w = case.image.shape[-2:]
    centre = np.median(case.center, axis=0) if len(case.center) else np.array([h / 2.0, w / 2.0])
    return region_around(centre, (min(size, h), min(size, w)), (1.0, 1.0), (h, w))


@torch.no_grad()
def validate(model: JointMotionSegNet, cases: list[Case], device: torch.device, size: int = 160) -> dict[str, float]:
    """3D Dice (LV/Myo/RV, mean of ED and ES) and propagated-label Dice (ED labels warped to ES) over
    ACDC-like validation cases, on a ``size``² region around the heart at the model's pixel size (the
    cases are re-sampled on loading), with the same geometry helpers as inference."""
    from ..geometry import to_model

    model.eval()
    seg_d = {k: [] for k in ("LV", "Myo", "RV")}
    prop_d = {k: [] for k in ("LV", "Myo", "RV")}
    for case in cases:
        region = validation_region(case, size)
        z_n = case.n_slices
        hh, ww = region.size
        frames = torch.from_numpy(case.image[[case.ed, case.es]].astype(np.float32)).to(device)  # (2, Z, Y, X)
        codes = torch.from_numpy(case.codes[[case.ed, case.es]].astype(np.float32)).to(device)
        img = to_model(frames.reshape(2 * z_n, 1, *frames.shape[-2:]), region, antialias=False).view(2, z_n, hh, ww)
        gt = to_model(codes.reshape(2 * z_n, 1, *codes.shape[-2:]), region, mode="nearest").view(2, z_n, hh, ww)
        gt = gt.round().cpu().numpy().astype(np.uint8)
        seg, flows = model.forward_sequence(img.permute(1, 0, 2, 3).contiguous())  # (Z, 2, ...)
        pred = seg.argmax(2).permute(1, 0, 2, 3).cpu().numpy()  # (2, Z, H, W)
        ed_lab = torch.from_numpy(gt[0].astype(np.float32)).unsqueeze(1).to(device)
        prop = warp(ed_lab, flows[:, 1].float(), mode="nearest")[:, 0].round().cpu().numpy()
        for c, k in ((1, "LV"), (2, "Myo"), (3, "RV")):
            seg_d[k].append(0.5 * (dice(pred[0] == c, gt[0] == c) + dice(pred[1] == c, gt[1] == c)))
            prop_d[k].append(dice(prop == c, gt[1] == c))
    model.train()
    out = {f"dice_{k}": float(np.mean(v)) for k, v in seg_d.items()}
    out.update({f"prop_{k}": float(np.mean(v)) for k, v in prop_d.items()})
    return out


# --------------------------------------------------------------------------------------------------

class _Logger:
    def __init__(self, path: str | None, log: Callable[[str], None] | None):
        self.fh = open(path, "a", buffering=1) if path else None
        self.log = log

    def __call__(self, msg: str) -> None:
        line = f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}"
        if self.fh:
            self.fh.write(line + "\n")
        if self.log:
            self.log(line)
        else:
            try:
                from tqdm import tqdm
                tqdm.write(line, file=sys.stderr)
            except ImportError:  # pragma: no cover
                print(line, file=sys.stderr)

    def close(self):
        if self.fh:
            self.fh.close()


def _adapt_threads(max_threads: int) -> None:
    """Use ``max_threads`` torch threads when the cores are free, 1 when other processes keep them busy
    (measured here: on 2 shared cores, 2 intra-op threads ran 2–4× slower than 1 under contention)."""
    import os

    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return
    ncpu = os.cpu_count() or 1
    mine = torch.get_num_threads()
    others = load - mine
    want = max_threads if others < 0.75 * ncpu - 0.5 else 1
    if want != mine:
        torch.set_num_threads(want)


def _lr_factor(progress: float, min_ratio: float, warmup: float = 0.02) -> float:
    if progress < warmup:
        return max(progress / warmup, 0.05)
    p = min(max((progress - warmup) / (1 - warmup), 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def metadata_for(cfg: TrainConfig, acdc: list[Case], sunny: list[Case], val_cases: list[Case],
                 history: list[dict], steps: int, seconds: float, model: JointMotionSegNet) -> dict[str, Any]:
    data = []
    if acdc:
        data.append({"dataset": "ACDC", "patients": [c.name for c in acdc], "licence": ACDC_LICENCE})
    if sunny:
        data.append({"dataset": "Sunnybrook", "patients": [c.name for c in sunny], "licence": SUNNYBROOK_LICENCE})
    last = history[-1]["val"] if history and history[-1].get("val") else {}
    return _plain({
        "name": MODEL_NAME,
        "version": MODEL_VERSION + ("-provisional" if cfg.provisional else ""),
        "provisional": bool(cfg.provisional),
        "description": "Joint motion estimation and segmentation of short-axis cine MR (Qin et al. 2018), "
                       "weakly supervised on ED/ES labels.",
        "training_data": data,
        "validation_split": {"acdc": list(ACDC_VAL_PATIENTS), "sunnybrook": list(SUNNYBROOK_VAL_PATIENTS),
                             "used_for_scores": [c.name for c in val_cases]},
        "command": cfg.command,
        "seed": cfg.seed,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("model",)},
        "parameters": count_parameters(model),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "torch": str(torch.__version__),
        "val": last,
        "history": history,
    })


def _plain(obj: Any) -> Any:
    """Metadata as plain JSON types (checkpoints are read with ``weights_only=True``)."""
    import json

    return json.loads(json.dumps(obj, default=str))


def train(config: TrainConfig, progress: ProgressCallback | None = None, cancel: Callable[[], bool] | None = None,
          log: Callable[[str], None] | None = None, cases: tuple[list[Case], list[Case], list[Case]] | None = None
          ) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Train the joint model; returns ``(model, metadata)`` and writes ``config.out`` after each epoch.

    Args:
        config: the run's settings.
        progress: ``progress(done, total, message)`` after every step.
        cancel: returns True to stop (the current state is saved, then :class:`CancelledError` is raised).
        log: receives every log line (default: stderr); lines also go to ``config.log_file``.
        cases: ``(acdc_train, sunnybrook_train, val)`` already in memory (tests); default: load from
            ``config.data``.
    """
    cfg = config
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    logger = _Logger(cfg.log_file, log)
    t_start = time.perf_counter()
    try:
        if cases is None:
            root = Path(cfg.data)
            acdc_root = root / "acdc" if (root / "acdc").is_dir() else root
            sunny_root = root / "sunnybrook"
            pixel_mm = JointConfig.from_dict(cfg.model).pixel_mm
            acdc = load_acdc(acdc_root, exclude=ACDC_VAL_PATIENTS, limit=cfg.acdc_limit, pixel_mm=pixel_mm)
            val_cases = load_acdc(acdc_root, names=list(ACDC_VAL_PATIENTS), pixel_mm=pixel_mm) if cfg.validate else []
            if cfg.val_limit is not None:
                val_cases = val_cases[:cfg.val_limit]
            sunny = load_sunnybrook(sunny_root, exclude=SUNNYBROOK_VAL_PATIENTS, pixel_mm=pixel_mm) \
                if cfg.use_sunnybrook and sunny_root.is_dir() else []
        else:
            acdc, sunny, val_cases = cases
        if not acdc:
            raise InputError(f"No ACDC-like training patients (folders with ED.nii.gz and ED_gt.nii.gz) under "
                             f"'{cfg.data}'. Point --data at the shared data folder or an ACDC-like folder.")
        logger(f"data: {len(acdc)} ACDC-like training patients, {len(sunny)} Sunnybrook cines, "
               f"{len(val_cases)} validation patients; loaded in {time.perf_counter() - t_start:.0f} s")

        model_cfg = JointConfig.from_dict(cfg.model)
        init_state = None
        if cfg.init and not cfg.resume:
            init_payload = read_checkpoint(cfg.init)
            arch = dict(init_payload["config"])
            arch["pixel_mm"] = model_cfg.pixel_mm  # the geometry of this run's data
            model_cfg = JointConfig.from_dict(arch)
            cfg.model = model_cfg.to_dict()
            init_state = init_payload["state_dict"]
        model = JointMotionSegNet(model_cfg).to(device)
        if init_state is not None:
            model.load_state_dict(init_state)
            logger(f"initialised from {cfg.init}")
        if cfg.train_parts == "motion":
            frozen = [model.encoder, model.seg_fuse, model.seg_head]
            for mod in frozen:
                mod.requires_grad_(False)
        elif cfg.train_parts != "all":
            raise InputError(f"Unknown --train-parts '{cfg.train_parts}'; use 'all' or 'motion'.")
        channels_last = device.type in ("cuda", "cpu") if cfg.channels_last is None else bool(cfg.channels_last)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        # the compiled sequence API shares the parameters; `model` is what is saved
        fwd = torch.compile(model.forward_sequence) if cfg.compile else model.forward_sequence
        seg_params = list(model.encoder.parameters()) + list(model.seg_fuse.parameters()) + \
            list(model.seg_head.parameters())
        if cfg.mode == "alternating":
            opts = {"seg": torch.optim.Adam(seg_params, lr=cfg.lr, weight_decay=cfg.weight_decay),
                    "motion": torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}
        elif cfg.mode == "joint":
            opts = {"all": torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                            weight_decay=cfg.weight_decay)}
        else:
            raise InputError(f"Unknown training mode '{cfg.mode}'; use 'joint' or 'alternating'.")
        step, epoch0, elapsed0, val_seconds0, history = 0, 0, 0.0, 0.0, []
        if cfg.resume:
            payload = read_checkpoint(cfg.resume)
            model.load_state_dict(payload["state_dict"])
            extra = payload.get("extra", {}) or {}
            for k, o in opts.items():
                if f"optimizer_{k}" in extra:
                    o.load_state_dict(extra[f"optimizer_{k}"])
            step, epoch0 = int(extra.get("step", 0)), int(extra.get("epoch", 0))
            elapsed0 = float(extra.get("elapsed", 0.0))
            val_seconds0 = float(extra.get("val_seconds", 0.0))
            history = list(payload.get("metadata", {}).get("history", []))
            torch.manual_seed(cfg.seed + epoch0)  # batches are seeded per epoch (see epoch_batches)
            logger(f"resumed from {cfg.resume} at epoch {epoch0}, step {step}")
        cuda = device.type == "cuda"
        amp = cuda and cfg.amp
        adaptive = device.type == "cpu" and cfg.adaptive_threads and cfg.num_threads > 1 and cfg.workers == 0
        scaler = torch.amp.GradScaler("cuda") if amp else None
        table = _allowed_table(device)
        n_slices = sum(c.n_slices for c in acdc)
        spe = cfg.steps_per_epoch or max(1, (2 * n_slices) // cfg.batch_size)
        total_steps = spe * cfg.epochs
        budget_s = cfg.time_budget_min * 60.0 if cfg.time_budget_min else None
        logger(f"model: {count_parameters(model):,} parameters, config {model.config.to_dict()}; device {device}; "
               f"{cfg.epochs} epochs × {spe} steps, batch {cfg.batch_size}, crop {cfg.crop}, mode {cfg.mode}, "
               f"budget {cfg.time_budget_min} min, workers {cfg.workers}, amp {amp}, channels_last {channels_last}, "
               f"compile {cfg.compile}")
        try:
            from tqdm import tqdm
            bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", file=sys.stderr,
                       dynamic_ncols=True, disable=progress is not None or log is not None)
        except ImportError:  # pragma: no cover
            bar = None
        set_train_mode(model, cfg.train_parts)
        t_run = time.perf_counter()
        val_seconds = val_seconds0  # last validation's duration: reserved before the time budget ends
        stop_reason = "epochs"
        epoch = epoch0
        out_path = Path(cfg.out)

        def elapsed() -> float:
            return elapsed0 + time.perf_counter() - t_run

        def save(ep: int) -> None:
            extra = {f"optimizer_{k}": o.state_dict() for k, o in opts.items()}
            extra.update({"step": step, "epoch": ep, "elapsed": elapsed(), "val_seconds": val_seconds})
            meta = metadata_for(cfg, acdc, sunny, val_cases, history, step, elapsed(), model)
            save_checkpoint(model, out_path, meta, extra=extra)

        for epoch in range(epoch0, cfg.epochs):
            sums: dict[str, float] = {}
            n_sum = 0
            t_ep = time.perf_counter()
            batches = epoch_batches(acdc, sunny, cfg, step, spe, [cfg.seed, epoch], pin=cuda)
            for images, codes, is_sb in batches:
                if cancel is not None and cancel():
                    history.append({"epoch": epoch + 1, "step": step, "cancelled": True})
                    save(epoch)
                    raise CancelledError("Training cancelled by the user; the last state was saved to "
                                         f"'{out_path}' (resume with --resume).")
                if adaptive and step % 10 == 0:
                    _adapt_threads(cfg.num_threads)
                prog = step / max(total_steps, 1)
                if budget_s:
                    prog = max(prog, elapsed() / budget_s)
                lr_f = _lr_factor(prog, cfg.min_lr_ratio)
                for o in opts.values():
                    for g in o.param_groups:
                        g["lr"] = cfg.lr * lr_f
                images = images.to(device, non_blocking=True)
                codes = codes.to(device, non_blocking=True)
                if cfg.mode == "alternating":
                    part = "seg" if step % 2 == 0 else "motion"
                    opt = opts[part]
                else:
                    part, opt = "all", opts["all"]
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                    losses = batch_losses(model, images, codes, cfg, table, use_dice=not is_sb, fwd=fwd)
                    loss = combine(losses, cfg, part)
                if not torch.isfinite(loss):
                    logger(f"step {step}: non-finite loss, skipped")
                    step += 1
                    continue
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                step += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["total"] = sums.get("total", 0.0) + float(loss.detach())
                n_sum += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"loss {float(loss.detach()):.3f}", refresh=False)
                if progress is not None:
                    progress(step, total_steps, f"epoch {epoch + 1}/{cfg.epochs} loss {float(loss.detach()):.3f}")
                if budget_s and elapsed() + 1.2 * val_seconds + 5 > budget_s:
                    stop_reason = "time budget"
                    break
            means = {k: v / max(n_sum, 1) for k, v in sums.items()}
            t_val = time.perf_counter()
            val = validate(model, val_cases, device) if val_cases else {}
            set_train_mode(model, cfg.train_parts)
            val_seconds = time.perf_counter() - t_val
            history.append({"epoch": epoch + 1, "step": step, "train": {k: round(v, 5) for k, v in means.items()},
                            "val": {k: round(v, 4) for k, v in val.items()},
                            "seconds": round(time.perf_counter() - t_ep, 1), "lr": cfg.lr * lr_f})
            logger(f"epoch {epoch + 1}/{cfg.epochs} step {step} lr {cfg.lr * lr_f:.2e} | "
                   + " ".join(f"{k} {v:.4f}" for k, v in means.items()) + " | "
                   + " ".join(f"{k} {v:.4f}" for k, v in val.items())
                   + f" | {time.perf_counter() - t_ep:.0f} s (val {val_seconds:.0f} s), elapsed {elapsed() / 60:.1f} min")
            save(epoch + 1)
            if stop_reason == "time budget":
                break
        if bar is not None:
            bar.close()
        meta = metadata_for(cfg, acdc, sunny, val_cases, history, step, elapsed(), model)
        meta["stop_reason"] = stop_reason
        extra = {f"optimizer_{k}": o.state_dict() for k, o in opts.items()}
        extra.update({"step": step, "epoch": len(history), "elapsed": elapsed(), "val_seconds": val_seconds})
        save_checkpoint(model, out_path, meta, extra=extra)
        logger(f"done ({stop_reason}): {step} steps in {elapsed() / 60:.1f} min; saved {out_path}")
        model.eval()
        return model, meta
    finally:
        logger.close()


def export_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a training checkpoint without its optimiser state (what ships in the package)."""
    payload = read_checkpoint(src)
    model = JointMotionSegNet(JointConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return save_checkpoint(model, dst, payload.get("metadata", {}))
