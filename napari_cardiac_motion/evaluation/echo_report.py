"""The markdown tables of an echo evaluation (:func:`.echo.evaluate_echo`'s result; no Qt, no napari)."""

from __future__ import annotations

from typing import Any

import numpy as np

SOURCE_NAMES = {"fullres": "camus_fullres", "edes224": "camus_edes224"}


def _fmt(s: dict | None, digits: int = 3, low: bool = True) -> str:
    """``mean ± sd (lowest)`` of a :func:`.echo.stats` dict, ``—`` when empty."""
    if not s or s.get("mean") is None:
        return "—"
    text = f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"
    return text + (f" ({s['min']:.{digits}f})" if low else "")


def _mean(values) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return f"{np.mean(v):.3f}" if v else "—"


def structure_table(result: dict[str, Any]) -> list[str]:
    """Dice at ED/ES and on every labelled frame, HD95 (mm) at ED/ES, one row per structure."""
    s = result["summary"]
    lines = ["| structure | Dice ED | Dice ES | Dice every labelled frame | HD95 ED mm | HD95 ES mm |",
             "|---|---|---|---|---|---|"]
    for st in result["structures"]:
        k = st["key"]
        seq = s.get(f"seq_dice_{k}")
        seq_text = _fmt(seq) + (f", {seq['n']} frames" if seq and seq.get("n") else "")
        lines.append(f"| {st['name']} ({k}) | {_fmt(s.get(f'dice_ED_{k}'))} | {_fmt(s.get(f'dice_ES_{k}'))} | "
                     f"{seq_text} | {_fmt(s.get(f'hd95_ED_{k}'), 1, False)} | {_fmt(s.get(f'hd95_ES_{k}'), 1, False)} |")
    return lines


def source_table(result: dict[str, Any]) -> list[str]:
    """Mean Dice at ED / ES per data source (the full-resolution and the 224×224 views differ in kind)."""
    cases, structs = result["cases"], result["structures"]
    sources = [src for src in SOURCE_NAMES if any(c["source"] == src for c in cases)]
    if len(sources) < 2:
        return []
    lines = ["", "Mean Dice ED / ES per source:",
             "| source | views | " + " | ".join(st["name"] for st in structs) + " |",
             "|---|---|" + "---|" * len(structs)]
    for src in sources:
        rows = [c for c in cases if c["source"] == src]
        keys = [st["key"] for st in structs]
        cells = [f"{_mean(r.get('dice_ED_' + k) for r in rows)} / {_mean(r.get('dice_ES_' + k) for r in rows)}"
                 for k in keys]
        lines.append(f"| {SOURCE_NAMES[src]} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def ef_table(result: dict[str, Any]) -> list[str]:
    """Biplane EF per patient with a CAMUS reference, and the mean absolute errors (points)."""
    s = result["summary"]
    with_ref = [p for p in result["patients"] if p.get("ref_ef") is not None]
    lines = [""]
    if with_ref:
        lines += ["| patient | biplane EF % (model) | biplane EF % (manual labels) | CAMUS reference EF % | "
                  "abs. error (points) |", "|---|---|---|---|---|"]
        for p in with_ref:
            ef = "—" if p["ef"] is None else f"{p['ef']:.1f}"
            err = "—" if p["ef_abs_error"] is None else f"{p['ef_abs_error']:.1f}"
            manual = "—" if p["ef_manual"] is None else f"{p['ef_manual']:.1f}"
            lines.append(f"| {p['patient']} | {ef} | {manual} | {p['ref_ef']:.0f} | {err} |")
        lines.append("")

    def mae(key: str) -> str:
        v = s.get(key)
        return "—" if not v or v.get("mean") is None else f"{v['mean']:.1f} points (n={v['n']})"

    lines.append(f"EF vs the CAMUS reference: biplane MAE {mae('ef_biplane_abs_error')}, single plane per view MAE "
                 f"{mae('ef_single_abs_error')}")
    lines.append(f"EF vs the same read-out on the manual ED/ES labels: biplane MAE {mae('ef_biplane_abs_error_manual')},"
                 f" single plane MAE {mae('ef_single_abs_error_manual')}")
    return lines


def format_echo_table(result: dict[str, Any]) -> str:
    """A plain-text (markdown-compatible) report of :func:`.echo.evaluate_echo`'s result."""
    cases = result["cases"]
    m = result["model"]
    n_pat = len({c["patient"] for c in cases})
    lines = [f"model {m.get('name')} {m.get('version')} ({m.get('modality')}) on {len(cases)} view(s) of {n_pat} "
             f"{result['split']} patient(s) from {result['data']} (mean ± sd over views, lowest in brackets)", ""]
    lines += structure_table(result)
    lines += source_table(result)
    lines += ef_table(result)
    s = result["summary"]
    lines.append(f"seconds per view: model {_fmt(s.get('seconds_model'), 2, False)} (device {result['device']}, "
                 f"{result['torch_threads']} torch threads)")
    if not any(c.get("spacing_mm") for c in cases):
        lines.append("HD95: not reported (no view with a known pixel size).")
    errors = [c for c in cases if c.get("error")]
    if errors:
        lines.append(f"{len(errors)} view(s) without an EF read-out: "
                     + "; ".join(f"{c['name']}: {c['error']}" for c in errors[:3]))
    return "\n".join(lines)
