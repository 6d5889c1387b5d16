"""Synthetic training cases for the tests and ``benchmarks/train_speed.py`` (test data: not part of the
package). Tests import it as ``from synthetic import ...`` (pytest puts ``tests/`` on the path); a
benchmark adds ``tests/`` to ``sys.path`` first."""

from __future__ import annotations

import numpy as np

from napari_cardiac_motion.training.data import Case, heart_centres


def synthetic_acdc_like(n: int = 2, size: int = 96, n_slices: int = 3, seed: int = 0) -> list[Case]:
    """Tiny synthetic ED/ES cases (concentric discs that contract) for tests without shared data."""
    rng = np.random.default_rng(seed)
    cases = []
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for i in range(n):
        img = np.zeros((2, n_slices, size, size), np.float32)
        codes = np.zeros((2, n_slices, size, size), np.uint8)
        cy, cx = size / 2 + rng.uniform(-5, 5), size / 2 + rng.uniform(-5, 5)
        for t, r in enumerate((14.0, 10.0)):
            for z in range(n_slices):
                rr = np.hypot(yy - cy, xx - cx)
                rv = np.hypot(yy - cy, xx - (cx - 2.2 * r))
                lab = np.zeros((size, size), np.uint8)
                lab[rv < r * 0.9] = 3
                lab[rr < r + 5] = 2
                lab[rr < r] = 1
                codes[t, z] = lab
                img[t, z] = np.choose(lab, [0.1, 0.9, 0.35, 0.8]) + rng.normal(0, 0.03, (size, size))
        cases.append(Case(f"synthetic{i:03d}", "acdc", np.clip(img, 0, 1).astype(np.float16), codes, 0, 1, None,
                          heart_centres(codes[0])))
    return cases
