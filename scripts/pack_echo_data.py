"""Pack the CAMUS echo training data small enough to travel to a GPU machine (see docs/GPU_TRAINING.md).

    python scripts/pack_echo_data.py gpu/echo.tar.xz [--data ../shared/data]

Writes ``data/echo/camus_edes224/…`` and ``data/echo/camus_fullres/…`` (and the data README) into an xz tar,
every NIfTI stored uncompressed inside it (xz packs the 8-bit frames much better than gzip: about 38 MiB
instead of 52). On the GPU machine ``scripts/gpu_train.sh echo MINUTES`` unpacks it and gzips the files back
to the ``.nii.gz`` names the loaders read. CAMUS is CC BY-NC-SA 4.0, research use only: the tar must never be
committed (``gpu/`` is ignored by git).
"""

from __future__ import annotations

import argparse
import gzip
import io
import tarfile
import time
from pathlib import Path

PARTS = ("camus_edes224", "camus_fullres")


def pack(data: Path, out: Path) -> int:
    """Write the tar; returns the number of files packed."""
    echo = data / "echo"
    if not all((echo / p).is_dir() for p in PARTS):
        raise SystemExit(f"error: no CAMUS data ({', '.join(PARTS)}) under {echo}")
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(out, "w:xz", preset=6) as tar:
        files = [echo / "README.md"] + sorted(f for p in PARTS for f in (echo / p).rglob("*") if f.is_file())
        for f in files:
            if not f.exists():
                continue
            rel = Path("data/echo") / f.relative_to(echo)
            if f.name.endswith(".nii.gz"):
                payload, rel = gzip.decompress(f.read_bytes()), rel.with_name(f.name[:-3])
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
    args = ap.parse_args()
    n = pack(Path(args.data), Path(args.out))
    print(f"wrote {args.out}: {n} files, {Path(args.out).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
