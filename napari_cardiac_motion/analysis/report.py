"""Exports of a :class:`~.measurements.Measurements`: JSON, CSV, PNG figures and a one-page HTML report.

Figures use matplotlib's object API with the Agg canvas (no pyplot state, no GUI; safe off the main
thread). The plotting functions draw onto a given ``Axes`` so the napari panel reuses them; structure
names and colours come from the model's description (:attr:`Measurements.description`). Every file
is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..atomic import atomic_write
from .measurements import SCALAR_MEASURES, Measurements
from .strain import SEGMENT_NAMES

RADIAL_COLOUR, CIRC_COLOUR = "#d95f02", "#7570b3"


def _write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def fmt_value(value: Any, unit: str = "") -> str:
    """A measure for display: 1 decimal (frames as integers), ``—`` when unknown."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if unit == "frame" or isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.1f}"


# ----------------------------------------------------------------------------- tables

def write_json(m: Measurements, path: str | os.PathLike) -> Path:
    """``measurements.json`` (see :meth:`Measurements.to_dict`)."""
    return _write_text(path, json.dumps(m.to_dict(), indent=2))


def measures_table(m: Measurements) -> list[tuple[str, str, str, str]]:
    """``(key, value, unit, help)`` rows of every scalar measure (value formatted for display)."""
    return [(k, fmt_value(m.scalars.get(k), u), u, h) for k, (u, h) in SCALAR_MEASURES.items()]


def write_csv(m: Measurements, path: str | os.PathLike) -> Path:
    """Every scalar measure as ``measure,value,unit,description`` rows, then model and input rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["measure", "value", "unit", "description"])
    row = m.summary_row()
    for k, (unit, desc) in SCALAR_MEASURES.items():
        w.writerow([k, "" if row.get(k) is None else row[k], unit, desc])
    w.writerow(["model_name", m.model.get("name") or "", "", "model that produced the labels and motion"])
    w.writerow(["model_version", m.model.get("version") or "", "", "its version"])
    w.writerow(["input", m.input or "", "", "input file"])
    return _write_text(path, buf.getvalue())


def write_curves_csv(m: Measurements, path: str | os.PathLike) -> Path:
    """One row per frame: time, LV/RV/myocardial volume, global strain (and AHA segment strain)."""
    t, unit = m.time_axis()
    cols: dict[str, Iterable] = {"frame": range(m.n_frames), f"time_{unit}": t,
                                 "lv_volume_ml": m.lv_volume_ml, "rv_volume_ml": m.rv_volume_ml,
                                 "myo_volume_ml": m.myo_volume_ml}
    s = m.strain
    if s is not None:
        cols["radial_strain_percent"] = s.radial_percent
        cols["circumferential_strain_percent"] = s.circumferential_percent
        if s.segments_available:
            for i in range(len(SEGMENT_NAMES)):
                cols[f"seg{i + 1}_radial_percent"] = s.segment_radial_percent[i]
                cols[f"seg{i + 1}_circumferential_percent"] = s.segment_circumferential_percent[i]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(cols))
    for values in zip(*cols.values()):
        w.writerow([_cell(v) for v in values])
    return _write_text(path, buf.getvalue())


def write_slices_csv(m: Measurements, path: str | os.PathLike) -> Path:
    """One row per decided (frame, slice, structure): counted or not, why, and whether the user chose."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["frame", "phase", "slice", "structure", "volume_ml", "included", "overridden", "reason"])
    for d in m.slices:
        w.writerow([d.frame, d.phase, d.slice, d.structure, round(d.volume_ml, 3), int(d.included),
                    int(d.overridden), d.reason])
    return _write_text(path, buf.getvalue())


def _cell(v: Any) -> Any:
    """A CSV cell: floats rounded to 4 decimals, NaN empty."""
    if isinstance(v, (float, np.floating)):
        return round(float(v), 4) if np.isfinite(v) else ""
    return v


def write_cohort_csv(rows: list[dict[str, Any]], path: str | os.PathLike, first: Iterable[str] = ("case",)) -> Path:
    """Rows (dicts) as a CSV with the union of their keys (``first`` columns first)."""
    keys: list[str] = list(first)
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in keys})
    return _write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- plots

def plot_volumes(ax, m: Measurements) -> None:
    """LV and RV volume (ml) over time (every labelled slice), ED and ES marked, the ED/ES volumes of the
    counted slices as open squares (names and colours of the model's classes)."""
    t, unit = m.time_axis()
    d = m.description
    if np.isfinite(m.lv_volume_ml).any():
        ax.plot(t, m.lv_volume_ml, "-o", color=d.hex_color("LV"), ms=3, label="LV")
    else:  # an echo clip without a pixel size (a video): no volumes, say so rather than draw an empty axis
        ax.text(0.5, 0.5, "no volumes: the image has no pixel size", transform=ax.transAxes, ha="center",
                va="center", fontsize=8, color="0.35")
    if np.any(m.rv_volume_ml > 0):
        ax.plot(t, m.rv_volume_ml, "-o", color=d.hex_color("RV"), ms=3, label="RV")
    counted = (("lv_edv_ml", m.ed_frame, "LV"), ("lv_esv_ml", m.es_frame, "LV"),
               ("rv_edv_ml", m.ed_frame, "RV"), ("rv_esv_ml", m.es_frame, "RV"))
    for key, f, structure in counted:  # the volumes of the counted slices (open squares)
        v = m.scalars.get(key)
        if v and (structure == "LV" or np.any(m.rv_volume_ml > 0)):
            ax.plot([t[f]], [v], "s", mfc="none", color=d.hex_color(structure), ms=6)
    for f, name in ((m.ed_frame, "ED"), (m.es_frame, "ES")):
        ax.axvline(t[f], color="0.6", lw=0.8, ls=":")
        ax.annotate(name, (t[f], 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("volume (ml)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)


def plot_strain(ax, m: Measurements) -> None:
    """Global radial and circumferential strain (%) over time, or an echo read-out's longitudinal strain (a
    note when there is no motion)."""
    t, unit = m.time_axis()
    s = m.strain
    gls = m.longitudinal_strain_percent
    if gls is not None:  # echo: the endocardial border's longitudinal strain
        ax.plot(t, gls, "-o", color=CIRC_COLOUR, ms=3, label="longitudinal (endocardial border)")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.legend(loc="best", fontsize=8)
    elif s is None or not np.isfinite(s.radial_percent).any():
        ax.text(0.5, 0.5, "no strain: needs the model's motion", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.plot(t, s.radial_percent, "-o", color=RADIAL_COLOUR, ms=3, label="radial")
        ax.plot(t, s.circumferential_percent, "-o", color=CIRC_COLOUR, ms=3, label="circumferential")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("strain vs ED (%)")
    ax.grid(alpha=0.3)


def plot_bullseye(ax, values: np.ndarray, label: str, cmap: str = "RdBu") -> None:
    """AHA 16-segment bull's-eye on a polar ``ax``: anterior (1, 7, 13) at the top, septum on the left.

    ``values``: ``(16,)`` for segments 1..16 (NaN = grey).
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    ax.set_theta_zero_location("N")
    ax.set_theta_direction(1)  # counter-clockwise: 1 anterior, 2 anteroseptal (upper left), ...
    finite = values[np.isfinite(values)]
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    norm = TwoSlopeNorm(0.0, -max(lim, 1e-6), max(lim, 1e-6))
    cm = colormaps[cmap]
    rings = [(range(0, 6), 2.0, 60.0), (range(6, 12), 1.0, 60.0), (range(12, 16), 0.0, 90.0)]
    for segs, bottom, width in rings:
        for k, i in enumerate(segs):
            theta = np.radians(k * width)
            v = values[i]
            colour = cm(norm(v)) if np.isfinite(v) else (0.85, 0.85, 0.85, 1.0)
            ax.bar(theta, 1.0, width=np.radians(width), bottom=bottom, color=colour, edgecolor="white", lw=1)
            ax.text(theta, bottom + 0.5, f"{i + 1}\n{v:.0f}" if np.isfinite(v) else f"{i + 1}",
                    ha="center", va="center", fontsize=6)
    ax.set_ylim(0, 3)
    ax.set_axis_off()
    ax.set_title(label, fontsize=8)


def plot_segments(fig, m: Measurements) -> None:
    """AHA segment curves (radial, circumferential; coloured by level) and bull's-eyes of their peaks."""
    t, unit = m.time_axis()
    s = m.strain
    grid = fig.add_gridspec(1, 4, width_ratios=[1.3, 1.3, 0.8, 0.8])
    axes = [fig.add_subplot(grid[0]), fig.add_subplot(grid[1])]
    if s is not None and s.segments_available:
        with np.errstate(all="ignore"):
            peak_r = np.array([np.nanmax(r) if np.isfinite(r).any() else np.nan for r in s.segment_radial_percent])
            peak_c = np.array([np.nanmin(c) if np.isfinite(c).any() else np.nan
                               for c in s.segment_circumferential_percent])
        plot_bullseye(fig.add_subplot(grid[2], projection="polar"), peak_r, "peak radial (%)")
        plot_bullseye(fig.add_subplot(grid[3], projection="polar"), peak_c, "peak circumferential (%)")
    colours = {0: "#1b9e77", 1: "#d95f02", 2: "#7570b3"}
    for ax, data, title in ((axes[0], None if s is None else s.segment_radial_percent, "radial"),
                            (axes[1], None if s is None else s.segment_circumferential_percent, "circumferential")):
        if data is None or not np.isfinite(data).any():
            ax.text(0.5, 0.5, (s.note if s is not None and s.note else "no segments"), ha="center", va="center",
                    transform=ax.transAxes, wrap=True, fontsize=8)
        else:
            for i in range(data.shape[0]):
                lev = 0 if i < 6 else (1 if i < 12 else 2)
                ax.plot(t, data[i], color=colours[lev], lw=1, alpha=0.8,
                        label=("basal", "mid", "apical")[lev] if i in (0, 6, 12) else None)
            ax.legend(fontsize=7)
        ax.set_title(f"AHA segments: {title} strain (%)", fontsize=9)
        ax.set_xlabel(f"time ({unit})")
        ax.grid(alpha=0.3)


def _figure(width: float = 5.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(kind: str, m: Measurements) -> bytes:
    """PNG bytes of one figure: ``volumes``, ``strain`` or ``segments``."""
    if kind == "segments":
        fig = _figure(12.0, 3.2)
        plot_segments(fig, m)
    else:
        fig = _figure()
        ax = fig.add_subplot()
        {"volumes": plot_volumes, "strain": plot_strain}[kind](ax, m)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_figures(m: Measurements, folder: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """``volumes.png``, ``strain.png`` and (with segments) ``segments.png`` in ``folder``."""
    kinds = ["volumes", "strain"] + (["segments"] if m.strain is not None and m.strain.segments_available else [])
    out = {}
    for kind in kinds:
        data = figure_png(kind, m)

        def write(tmp: str, data: bytes = data) -> None:
            Path(tmp).write_bytes(data)

        out[kind] = atomic_write(Path(folder) / f"{prefix}{kind}.png", write)
    return out


# ----------------------------------------------------------------------------- HTML report

def slices_table_html(m: Measurements) -> str:
    """The per-slice decisions as a small HTML table: one row per (frame, slice, structure)."""
    if not m.slices:
        return ""
    rows = "\n".join(
        f"<tr><td>{html.escape(d.phase)} ({d.frame})</td><td>{d.slice}</td><td>{html.escape(d.structure)}</td>"
        f"<td class='v'>{d.volume_ml:.1f}</td><td>{'yes' if d.included else '<b>no</b>'}"
        f"{' (user)' if d.overridden else ''}</td><td class='h'>{html.escape(d.reason)}</td></tr>"
        for d in m.slices)
    return ("<h3>Slices counted in the ED/ES volumes</h3><table><tr><th>frame</th><th>slice</th>"
            f"<th>structure</th><th>ml</th><th>counted</th><th>why</th></tr>\n{rows}</table>")


def html_report(m: Measurements, title: str = "Cardiac function") -> str:
    """A self-contained one-page HTML report (figures embedded as PNG)."""
    rows = "\n".join(
        f"<tr><td>{html.escape(k)}</td><td class='v'>{html.escape(v)}</td><td>{html.escape(u)}</td>"
        f"<td class='h'>{html.escape(h)}</td></tr>"
        for k, v, u, h in measures_table(m) if v != "—" or not k.endswith("_m2"))
    kinds = ["volumes", "strain"] + (["segments"] if m.strain is not None and m.strain.segments_available else [])
    figs = "\n".join(
        f"<img alt='{k}' src='data:image/png;base64,{base64.b64encode(figure_png(k, m)).decode()}'>" for k in kinds)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in m.notes)
    model = html.escape(f"{m.model.get('name') or '?'} (version {m.model.get('version') or '?'})")
    dz, dy, dx = m.spacing_mm
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:1em auto;font-size:13px}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:2px 8px}}
td.v{{text-align:right;font-weight:bold}}td.h{{color:#555}}img{{max-width:48%;margin:4px}}
.small{{color:#666;font-size:11px}}</style></head><body>
<h2>{html.escape(title)}</h2>
<p>Input: <b>{html.escape(m.input or '?')}</b><br>Model: {model}<br>
Voxel spacing (dz, dy, dx): {dz:.2f} × {dy:.2f} × {dx:.2f} mm; frame interval {m.frame_interval_ms:.1f} ms;
ED frame {m.ed_frame}, ES frame {m.es_frame} (0-based).</p>
<table><tr><th>measure</th><th>value</th><th>unit</th><th>meaning</th></tr>
{rows}</table>
{f'<ul>{notes}</ul>' if notes else ''}
{slices_table_html(m)}
<div>{figs}</div>
<p class="small">Automated measurements from a segmentation and motion model; review the contours before
clinical use. Generated {datetime.now().strftime('%Y-%m-%d %H:%M')} by napari-cardiac-motion.</p>
</body></html>
"""


def write_html(m: Measurements, path: str | os.PathLike) -> Path:
    return _write_text(path, html_report(m))


def export_all(m: Measurements, folder: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """JSON, CSV (measures, curves and the slices counted), PNG figures and the HTML report into ``folder``."""
    folder = Path(folder)
    out = {
        "json": write_json(m, folder / f"{prefix}measurements.json"),
        "csv": write_csv(m, folder / f"{prefix}measurements.csv"),
        "curves_csv": write_curves_csv(m, folder / f"{prefix}curves.csv"),
        "slices_csv": write_slices_csv(m, folder / f"{prefix}slices.csv"),
    }
    out.update(save_figures(m, folder, prefix))
    out["html"] = write_html(m, folder / f"{prefix}report.html")
    return out
