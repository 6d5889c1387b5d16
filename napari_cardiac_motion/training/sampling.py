"""Training batches drawn from in-memory cases (no Qt): ACDC ED/ES pairs and whole cardiac cycles.

A batch is ``(images (B, T, S, S), codes (B, T, S, S), kind)``, frame 0 = the source (ED for cycles),
``S`` = the crop size in model pixels, ``kind`` one of :data:`PAIR`, :data:`OPEN`, :data:`CYCLE`:

* ``PAIR`` — ACDC: ``[ED, ES]`` or ``[ES, ED]`` of one slice;
* ``CYCLE`` — a cine slice sampled at ``n`` equal steps over the *whole* cycle from ED
  (``ED, ED + T/n, …``), so the frame after the last is ED again (the closed temporal term applies);
* ``OPEN`` — a cine whose frame count the chosen ``n`` does not divide, or a clip that covers part of a
  cycle (``Case.whole_cycle`` False, e.g. an echo ED→ES half cycle): ``n`` frames at equal steps from
  ED across the clip.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..analysis.strain import slice_levels
from ..model.losses import IGNORE_INDEX
from .augment import augment_batch, crop_centered
from .data import Case

if TYPE_CHECKING:  # pragma: no cover
    from .train import TrainConfig

PAIR, OPEN, CYCLE = 0, 1, 2


def cycle_lengths(n_frames: int, max_frames: int) -> list[int]:
    """Sequence lengths ``n`` (2 ≤ n ≤ max_frames) that divide a cycle of ``n_frames`` evenly; those of
    5 frames or more when there are any (the temporal term penalises the true curvature of the motion
    less when the steps are short)."""
    ok = [n for n in range(2, min(max_frames, n_frames) + 1) if n_frames % n == 0]
    long = [n for n in ok if n >= 5]
    return long or ok or [min(max_frames, n_frames)]


def basal_slices(case: Case, n: int = 2) -> list[int]:
    """The ``n`` most basal slices with LV myocardium at ED and the slice beyond them (above the base,
    where the experts drew nothing at ED). Base and apex as the strain read-out tells them
    (:func:`..analysis.strain.slice_levels`: the end with the larger LV); none with fewer than 3 such slices."""
    levels = slice_levels(case.codes[case.ed])
    zs = np.flatnonzero(levels >= 0)
    if zs.size == 0:
        return []
    base, step = (int(zs[0]), 1) if levels[zs[0]] == 0 else (int(zs[-1]), -1)
    return [base + step * k for k in range(-1, n) if 0 <= base + step * k < case.n_slices]


class Sampler:
    """Draws training batches from in-memory cases (numpy RNG; deterministic given the seed)."""

    def __init__(self, acdc: list[Case], sunny: list[Case], cfg: "TrainConfig", rng: np.random.Generator):
        self.acdc, self.sunny, self.cfg, self.rng = acdc, sunny, cfg, rng
        self.pre = int(math.ceil(cfg.crop * 1.6 / 16) * 16)
        self.acdc_items = [(i, z) for i, c in enumerate(acdc) for z in range(c.n_slices)]
        # --basal-weight: the basal slices (and the one above the base) drawn that many times as often
        self.acdc_p = None
        if cfg.basal_weight != 1.0 and self.acdc_items:
            basal = {(i, z) for i, c in enumerate(acdc) for z in basal_slices(c)}
            w = np.array([cfg.basal_weight if it in basal else 1.0 for it in self.acdc_items])
            self.acdc_p = w / w.sum()
        self.sunny_items = [(i, z) for i, c in enumerate(sunny) for z in range(c.n_slices)]

    def _centre(self, case: Case, z: int, wide: bool) -> tuple[float, float]:
        h, w = case.image.shape[-2:]
        if wide:
            return h / 2 + self.rng.normal(0, 12), w / 2 + self.rng.normal(0, 12)
        cy, cx = case.center[z]
        return cy + self.rng.normal(0, 8), cx + self.rng.normal(0, 8)

    def _finish(self, imgs, cods, wide):
        flips = self.cfg.flips if self.cfg.flips is not None else self.cfg.dataset != "echo"
        return augment_batch(np.stack(imgs), np.stack(cods), self.cfg.crop, self.rng, wide=np.array(wide),
                             flip=flips)

    def acdc_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[ED, ES]`` or ``[ES, ED]`` of ``batch_size`` random ACDC slices."""
        imgs, cods, wides = [], [], []
        picks = (self.rng.integers(len(self.acdc_items), size=self.cfg.batch_size) if self.acdc_p is None
                 else self.rng.choice(len(self.acdc_items), size=self.cfg.batch_size, p=self.acdc_p))
        for k in picks:
            i, z = self.acdc_items[k]
            case = self.acdc[i]
            order = [case.ed, case.es] if self.rng.random() < 0.5 else [case.es, case.ed]
            self._add_crop(case, z, order, imgs, cods, wides)
        return self._finish(imgs, cods, wides)

    def cycle_batch(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``sb_batch`` random cine slices, each ``n`` frames at equal steps over the whole cycle from ED
        (``CYCLE``), or ``n`` frames at equal steps from ED across the clip (``OPEN``, see module docstring)."""
        picks = [self.sunny_items[k] for k in self.rng.integers(len(self.sunny_items), size=self.cfg.sb_batch)]
        lengths = cycle_lengths(self.sunny[picks[0][0]].n_frames, self.cfg.sb_frames)
        n = int(lengths[self.rng.integers(len(lengths))])
        imgs, cods, wides = [], [], []
        closed = True
        for i, z in picks:
            case = self.sunny[i]
            t = case.n_frames
            whole = bool(case.whole_cycle) and t % n == 0
            step = t // n if whole else max(1, (t - 1) // max(n - 1, 1))
            closed = closed and whole
            order = [(case.ed + step * j) % t for j in range(n)]
            self._add_crop(case, z, order, imgs, cods, wides)
        images, codes = self._finish(imgs, cods, wides)
        return images, codes, CYCLE if closed else OPEN

    def _add_crop(self, case, z: int, order: list[int], imgs: list, cods: list, wides: list) -> None:
        """Crop frames ``order`` of slice ``z`` around the heart (or a wide view) and append them."""
        wide = bool(self.rng.random() < self.cfg.wide_prob)
        cy, cx = self._centre(case, z, wide)
        imgs.append(crop_centered(case.image[order, z], cy, cx, self.pre, 0))
        cods.append(crop_centered(case.codes[order, z], cy, cx, self.pre, IGNORE_INDEX))
        wides.append(wide)


class BatchStream(torch.utils.data.IterableDataset):
    """The batches of one epoch, ``(images, codes, kind)``, made in DataLoader worker processes when
    ``cfg.workers > 0`` (each worker makes every W-th step with its own random stream, so the schedule
    of ACDC and cine batches does not depend on W).
    """

    def __init__(self, acdc: list[Case], sunny: list[Case], cfg: "TrainConfig", first_step: int, n_steps: int,
                 seed: list[int]):
        super().__init__()
        self.acdc, self.sunny, self.cfg = acdc, sunny, cfg
        self.first_step, self.n_steps, self.seed = first_step, n_steps, seed

    def is_cine_step(self, step: int) -> bool:
        every = self.cfg.sunnybrook_every
        return bool(self.sunny) and every > 0 and step % every == every - 1

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        sampler = Sampler(self.acdc, self.sunny, self.cfg, np.random.default_rng(self.seed + [wid]))
        for k in range(wid, self.n_steps, nw):
            if self.is_cine_step(self.first_step + k):
                yield sampler.cycle_batch()
            else:
                yield (*sampler.acdc_batch(), PAIR)


def worker_init(_: int) -> None:
    """DataLoader workers: one torch thread each."""
    torch.set_num_threads(1)


def epoch_batches(acdc: list[Case], sunny: list[Case], cfg: "TrainConfig", first_step: int, n_steps: int,
                  seed: list[int], pin: bool = False):
    """Iterator over one epoch's batches (see :class:`BatchStream`)."""
    stream = BatchStream(acdc, sunny, cfg, first_step, n_steps, seed)
    if cfg.workers <= 0:
        return iter(stream)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers, pin_memory=pin,
                                         prefetch_factor=4, worker_init_fn=worker_init)
    return iter(loader)
