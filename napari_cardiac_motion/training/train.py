"""Core training loop of the joint model (no Qt): ``train(config, progress=None, cancel=None, log=None)``.

Weak supervision as in Qin et al. (2018), see docs/ARCHITECTURE.md and the model card:

* **segmentation loss** — partial-label cross-entropy (+ soft Dice on exactly labelled ACDC voxels) on
  every labelled frame (ED/ES); unlabelled voxels are ignored (see :mod:`.data` for label codes);
* **motion loss** — ``MSE(warp(I_src, u_t), I_t) + λ·Charbonnier(∇u_t)`` on every frame of every
  sequence: ACDC as ``src=ED, frames=[ED, ES]`` and ``src=ES, frames=[ES, ED]``; Sunnybrook cines as
  ``src=ED`` and up to 10 frames at equal steps over the *whole* cycle (see :mod:`.sampling`); every
  frame's motion comes from its own (ED, frame) pair, as inference computes it;
* **joint loss** — the source frame's labels (one-hot) warped by ``u_t`` against frame t's labels
  (partial-label NLL + Dice);
* **temporal loss** (cines) — ``|u_{t−1} − 2 u_t + u_{t+1}|²`` in cycle order, closed through ED
  (``u_ED = 0`` after the last frame), so the motion returns to ED over the cycle and consecutive frames
  do not alternate;
* **mean teacher** (cines; Wu et al., MedIA 2022) — an exponential moving average of the network
  segments every unlabelled cine frame under its own noise; the student's segmentation of those frames
  is pulled towards it (KL), ramped up over the first 10 % of the run. A resumed run starts its teacher
  from the resumed weights;
* **carried consistency** (cines; off by default, ``w_carry``) — every frame's segmentation against the
  ED segmentation carried there by its motion (soft Dice, no labels needed): asks the two branches to agree
  on every frame of the cycle.

Updates are joint (one optimiser, summed loss) by default; ``mode="alternating"`` alternates a
segmentation step and a motion+joint step with separate Adam states, as the reference code did.
The learning rate follows a cosine schedule over ``max(step / total_steps, elapsed / time budget)``,
so a run stopped by the wall-clock budget still ends with a small learning rate.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..conventions import NUM_CLASSES
from ..devices import resolve_device
from ..errors import CancelledError, InputError
from ..model.checkpoint import read_checkpoint, save_checkpoint
from ..model.losses import (IGNORE_INDEX, allowed_table, carried_consistency, charbonnier_smoothness, consistency_kl,
                            dice_loss_from_probs, exact_labels, partial_nll_logits, partial_nll_probs, source_onehot,
                            temporal_roughness)
from ..model.mean_teacher import MeanTeacher
from ..model.network import JointConfig, JointMotionSegNet, count_parameters
from ..model.transformer import warp
from .data import Case
from .datasets import ECHO_PIXEL_MM, description_for, load_cases
from .sampling import CYCLE, PAIR, epoch_batches
from .run_support import RunLogger, adapt_threads, lr_factor, metadata_for
from .validation import validate


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
    sb_frames: int = 10  # frames per cine sequence (at equal steps over the whole cycle when they divide it)
    w_time: float = 0.01  # temporal second difference of the cine flows (closed through ED over a whole cycle)
    w_teacher: float = 0.3  # mean-teacher consistency on unlabelled cine frames (0: no teacher)
    teacher_decay: float = 0.99
    teacher_noise: float = 0.05  # the teacher's own Gaussian perturbation (normalised intensities 0–1)
    w_carry: float = 0.0  # carried consistency on cine sequences (segmentation vs ED labels moved by the motion)
    wide_prob: float = 0.25
    basal_weight: float = 1.0  # ACDC pairs: the basal slices (and the one above the base) drawn this many times as often
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
    dataset: str = "mr"  # "mr" (ACDC + Sunnybrook) or "echo" (CAMUS apical views; see .datasets)
    flips: bool | None = None  # random flips in augmentation; None: on for MR, off for echo (apex always on top)


def batch_losses(model: JointMotionSegNet, images: torch.Tensor, codes: torch.Tensor, cfg: TrainConfig,
                 table: torch.Tensor, use_dice: bool, fwd: Callable | None = None, kind: int = PAIR,
                 teacher: MeanTeacher | None = None) -> dict[str, torch.Tensor]:
    """Losses of one batch of sequences ``images`` (B, T, H, W), source = frame 0, ``codes`` alike.

    ``kind`` (see :mod:`.sampling`): cine sequences add the temporal term (closed through ED for a whole
    ``CYCLE``) and, with a ``teacher``, the mean-teacher consistency on their unlabelled frames.
    """
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
    out = {"seg": l_seg, "mse": l_mse, "smooth": l_smooth, "joint": _joint_loss(flows, codes, table, use_dice)}
    if kind != PAIR:
        out["time"] = temporal_roughness(flows.float(), closed=kind == CYCLE)
        if cfg.w_carry > 0:
            out["carry"] = carried_consistency(seg, flows)
        unlabelled = ~(codes_f < NUM_CLASSES).flatten(1).any(1)  # frames without one exact label
        if teacher is not None and bool(unlabelled.any()):
            t_logits = teacher.segment(images.flatten(0, 1)[unlabelled], cfg.teacher_noise)
            out["teacher"] = consistency_kl(seg_f[unlabelled].float(), t_logits)
    return out


def _joint_loss(flows: torch.Tensor, codes: torch.Tensor, table: torch.Tensor, use_dice: bool) -> torch.Tensor:
    """The source frame's labels (one-hot) warped by each later frame's flow against that frame's codes."""
    t = codes.shape[1]
    oh, labelled = source_onehot(codes[:, 0])
    if t < 2 or not bool(labelled.any()):
        return flows.sum() * 0.0
    oh_rep = oh.unsqueeze(1).expand(-1, t - 1, -1, -1, -1).flatten(0, 1)
    tgt_codes = codes[:, 1:].clone()
    tgt_codes[~labelled] = IGNORE_INDEX
    tgt_codes = tgt_codes.flatten(0, 1)
    warped = warp(oh_rep, flows[:, 1:].flatten(0, 1).float())
    loss = partial_nll_probs(warped, tgt_codes, table)
    if use_dice:
        loss = loss + dice_loss_from_probs(warped, exact_labels(tgt_codes))
    return loss


def combine(losses: dict[str, torch.Tensor], cfg: TrainConfig, part: str = "all", teacher_ramp: float = 1.0
            ) -> torch.Tensor:
    """The weighted sum of :func:`batch_losses`' terms (``part``: "seg", "motion" or "all");
    ``teacher_ramp`` (0–1) scales the mean-teacher term up over the first part of the run."""
    seg = cfg.w_seg * losses["seg"]
    if "teacher" in losses:
        seg = seg + cfg.w_teacher * teacher_ramp * losses["teacher"]
    mot = cfg.w_motion * (losses["mse"] + cfg.smooth * losses["smooth"]) + cfg.w_joint * losses["joint"]
    if "time" in losses:
        mot = mot + cfg.w_time * losses["time"]
    if "carry" in losses:  # both branches: counted once, with the motion part (or alone in a seg-only step)
        if part == "seg":
            seg = seg + cfg.w_carry * losses["carry"]
        else:
            mot = mot + cfg.w_carry * losses["carry"]
    return seg if part == "seg" else mot if part == "motion" else seg + mot


def set_train_mode(model: JointMotionSegNet, parts: str = "all") -> None:
    """Training mode; with ``parts="motion"`` the frozen encoder and segmentation branch stay in eval
    mode (their BatchNorm statistics do not move)."""
    model.train()
    if parts == "motion":
        for mod in (model.encoder, model.seg_fuse, model.seg_head):
            mod.eval()


# --------------------------------------------------------------------------------------------------

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
    logger = RunLogger(cfg.log_file, log)
    t_start = time.perf_counter()
    try:
        if cfg.resume:  # a resumed run keeps its own architecture and pixel size
            cfg.model = JointConfig.from_dict(read_checkpoint(cfg.resume)["config"]).to_dict()
        elif cfg.dataset == "echo" and cfg.model == TrainConfig().model:
            cfg.model = JointConfig.from_dict({**cfg.model, "pixel_mm": ECHO_PIXEL_MM}).to_dict()
        if cases is None:
            acdc, sunny, val_cases = load_cases(cfg, JointConfig.from_dict(cfg.model).pixel_mm)
        else:
            acdc, sunny, val_cases = cases
        if not acdc:
            raise InputError("No training cases: pass ED/ES pairs (cases) or point --data at the shared data folder.")
        logger(f"data ({cfg.dataset}): {len(acdc)} ED/ES training cases, {len(sunny)} cine sequences, "
               f"{len(val_cases)} validation cases; loaded in {time.perf_counter() - t_start:.0f} s")
        val_keys = description_for(cfg.dataset).keys()

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
        table = allowed_table(device)
        teacher = MeanTeacher(model, cfg.teacher_decay) if cfg.w_teacher > 0 and cfg.train_parts == "all" \
            and sunny else None
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
            counts: dict[str, int] = {}
            t_ep = time.perf_counter()
            batches = epoch_batches(acdc, sunny, cfg, step, spe, [cfg.seed, epoch], pin=cuda)
            for images, codes, kind in batches:
                if cancel is not None and cancel():
                    history.append({"epoch": epoch + 1, "step": step, "cancelled": True})
                    save(epoch)
                    raise CancelledError("Training cancelled by the user; the last state was saved to "
                                         f"'{out_path}' (resume with --resume).")
                if adaptive and step % 10 == 0:
                    adapt_threads(cfg.num_threads)
                prog = step / max(total_steps, 1)
                if budget_s:
                    prog = max(prog, elapsed() / budget_s)
                lr_f = lr_factor(prog, cfg.min_lr_ratio)
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
                    losses = batch_losses(model, images, codes, cfg, table, use_dice=kind == PAIR, fwd=fwd,
                                          kind=int(kind), teacher=teacher)
                    loss = combine(losses, cfg, part, teacher_ramp=min(1.0, prog / 0.1))
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
                if teacher is not None:
                    teacher.update(model)
                step += 1
                for k, v in [*losses.items(), ("total", loss)]:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                    counts[k] = counts.get(k, 0) + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"loss {float(loss.detach()):.3f}", refresh=False)
                if progress is not None:
                    progress(step, total_steps, f"epoch {epoch + 1}/{cfg.epochs} loss {float(loss.detach()):.3f}")
                if budget_s and elapsed() + 1.2 * val_seconds + 5 > budget_s:
                    stop_reason = "time budget"
                    break
            means = {k: v / counts[k] for k, v in sums.items()}
            t_val = time.perf_counter()
            val = validate(model, val_cases, device, keys=val_keys, size=224 if cfg.dataset == "echo" else 160) if val_cases else {}
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
