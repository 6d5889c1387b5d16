"""Pack the CAMUS echo training data small enough to travel to a GPU machine (see docs/GPU_TRAINING.md).

    python scripts/pack_echo_data.py gpu/echo.tar.xz [--data ../shared/data] [--train-only]

Writes ``data/echo/camus_edes224/…`` and ``data/echo/camus_fullres/…`` (and the data README) into an xz tar,
every NIfTI stored uncompressed inside it (xz packs the 8-bit frames much better than gzip: about 38 MiB
instead of 52). On the GPU machine ``scripts/gpu_train.sh echo MINUTES`` unpacks it and gzips the files back
to the ``.nii.gz`` names the loaders read. CAMUS is CC BY-NC-SA 4.0, research use only: the tar must never be
committed (``gpu/`` is ignored by git).

``--fullres-step N`` stores the full-resolution (0.308 mm) views at N times their pixel size (images: the mean of
N × N blocks; labels: one pixel per block; header spacing and affine updated). The model works at 1 mm and
``train`` re-samples every view to it, so N = 2 changes nothing it sees but quarters their size.
``--train-only`` leaves out the validation patients' images (about a fifth: 30 instead of 38 MiB, so that the
MR pack fits beside it). ``index.json`` travels whole, so the split is the same on the GPU machine; train
there with ``--no-validate`` (the validation views are not there) and evaluate here afterwards.
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
import time
from pathlib import Path

PARTS = ("camus_edes224", "camus_fullres")


def _patient_of(path: Path) -> str:
    """``patientNNNN`` of a CAMUS file or folder name."""
    return next((part.split("_")[0] for part in path.parts if part.startswith("patient")), "")


def coarser_nifti(raw: bytes, step: int, labels: bool) -> bytes:
    """A NIfTI (in-plane axes first) at ``step`` times its pixel size: block means, or one label per block."""
    import nibabel as nib
    import numpy as np

    img = nib.Nifti1Image.from_bytes(raw)
    data = np.asarray(img.dataobj)
    nx, ny = data.shape[0] // step * step, data.shape[1] // step * step
    data = data[:nx, :ny]
    if labels:
        small = data[step // 2::step, step // 2::step]
    else:
        blocks = data.reshape(nx // step, step, ny // step, step, *data.shape[2:]).astype(np.float32)
        small = np.clip(blocks.mean((1, 3)).round(), 0, 255).astype(np.uint8) if data.dtype == np.uint8 \
            else blocks.mean((1, 3)).astype(data.dtype)
    affine = img.affine.copy()
    affine[:3, 3] += (affine[:3, 0] + affine[:3, 1]) * (step - 1) / 2.0
    affine[:3, :2] *= step
    header = img.header.copy()
    header.set_data_shape(small.shape)
    zooms = list(header.get_zooms())
    zooms[0], zooms[1] = zooms[0] * step, zooms[1] * step
    header.set_zooms(zooms)
    out = nib.Nifti1Image(np.ascontiguousarray(small), affine, header)
    out.set_sform(affine, code=int(img.header["sform_code"]) or 1)
    out.set_qform(affine, code=int(img.header["qform_code"]) or 1)
    return out.to_bytes()


def pack(data: Path, out: Path, train_only: bool = False, fullres_step: int = 1) -> int:
    """Write the tar; returns the number of files packed."""
    echo = data / "echo"
    if not all((echo / p).is_dir() for p in PARTS):
        raise SystemExit(f"error: no CAMUS data ({', '.join(PARTS)}) under {echo}")
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(out, "w:xz", preset=9) as tar:
        files = [echo / "README.md"] + sorted(f for p in PARTS for f in (echo / p).rglob("*") if f.is_file())
        if train_only:
            from napari_cardiac_motion.training.echo_data import echo_split

            val = set(echo_split(echo)["val"])
            files = [f for f in files if _patient_of(f.relative_to(echo)) not in val]
        for f in files:
            if not f.exists():
                continue
            rel = Path("data/echo") / f.relative_to(echo)
            if f.name.endswith(".nii.gz"):
                payload, rel = gzip.decompress(f.read_bytes()), rel.with_name(f.name[:-3])
                if fullres_step > 1 and "camus_fullres" in f.parts:
                    payload = coarser_nifti(payload, fullres_step, labels="_gt" in f.name)
            else:
                payload = f.read_bytes()
            info = tarfile.TarInfo(str(rel))
            info.size, info.mtime = len(payload), int(time.time())
            tar.addfile(info, io.BytesIO(payload))
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the .tar.xz to write (e.g. gpu/echo.tar.xz)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--train-only", action="store_true", help="leave out the validation patients' images")
    ap.add_argument("--fullres-step", type=int, default=1,
                    help="store the full-resolution views at this many times their pixel size (2: 0.616 mm)")
    args = ap.parse_args()
    n = pack(Path(args.data), Path(args.out), args.train_only, args.fullres_step)
    print(f"wrote {args.out}: {n} files, {Path(args.out).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
