"""Bookkeeping of a training run (no Qt): the log, the CPU thread count under load, the learning-rate
schedule, and the metadata stored in the checkpoint."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..model.network import JointMotionSegNet, count_parameters
from .data import Case
from .datasets import data_metadata, description_for

if TYPE_CHECKING:  # pragma: no cover
    from .train import TrainConfig

MODEL_NAME = "cardiac-joint-v2"
MODEL_VERSION = "2.0.0"
ECHO_MODEL_NAME = "echo-joint-v1"


class RunLogger:
    """Log lines with a time stamp, to a file (appended, line-buffered) and to ``log`` or stderr."""

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


def adapt_threads(max_threads: int) -> None:
    """Use ``max_threads`` torch threads when the cores are free, 1 when other processes keep them busy
    (measured here: on 2 shared cores, 2 intra-op threads ran 2–4× slower than 1 under contention)."""
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


def lr_factor(progress: float, min_ratio: float, warmup: float = 0.02) -> float:
    """Learning-rate factor at ``progress`` (0–1): linear warm-up, then cosine down to ``min_ratio``."""
    if progress < warmup:
        return max(progress / warmup, 0.05)
    p = min(max((progress - warmup) / (1 - warmup), 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def metadata_for(cfg: "TrainConfig", acdc: list[Case], sunny: list[Case], val_cases: list[Case],
                 history: list[dict], steps: int, seconds: float, model: JointMotionSegNet) -> dict[str, Any]:
    """The checkpoint metadata of a run: what it learnt from, how, its validation history and what the
    model segments (the dataset's model description)."""
    last = history[-1]["val"] if history and history[-1].get("val") else {}
    echo = cfg.dataset == "echo"
    what = "apical echocardiography (CAMUS)" if echo else "short-axis cine MR"
    return plain_json({
        "name": ECHO_MODEL_NAME if echo else MODEL_NAME,
        "version": MODEL_VERSION + ("-provisional" if cfg.provisional else ""),
        "provisional": bool(cfg.provisional),
        "description": f"Joint motion estimation and segmentation of {what} (Qin et al. 2018), "
                       "weakly supervised on ED/ES labels.",
        **data_metadata(acdc, sunny, val_cases),
        **description_for(cfg.dataset).to_metadata(),
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


def plain_json(obj: Any) -> Any:
    """Metadata as plain JSON types (checkpoints are read with ``weights_only=True``)."""
    return json.loads(json.dumps(obj, default=str))


