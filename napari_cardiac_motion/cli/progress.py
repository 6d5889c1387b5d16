"""A tqdm progress bar on stderr adapted to the core's ``progress(done, total, message)`` callback."""

from __future__ import annotations

import sys

from tqdm import tqdm


class TqdmProgress:
    """Callable progress reporter; use as a context manager so the bar is closed."""

    def __init__(self, desc: str, unit: str = "step"):
        self.bar = tqdm(total=0, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        if message:
            self.bar.set_postfix_str(message, refresh=False)
        self.bar.refresh()

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
