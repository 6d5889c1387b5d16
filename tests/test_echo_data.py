"""Echo training data: CAMUS-like folders written by the test, the patient split, the real CAMUS subset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_cardiac_motion.model.losses import IGNORE_INDEX
from napari_cardiac_motion.model_description import ECHO_DEFAULT, ModelDescription
from napari_cardiac_motion.training.data import Case
from napari_cardiac_motion.training.echo_data import (
    EDES224_NOTE,
    EchoCase,
    echo_split,
    load_camus_fullres_view,
    load_echo,
)

ECHO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "echo"


def _labels(t: int, h: int = 60, w: int = 50) -> np.ndarray:
    """``(T, Y, X)``: a cavity shrinking over time, myocardium around it, atrium below."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        r = 12 - 4 * i / max(t - 1, 1)
        d = np.hypot((yy - 30) / 1.5, xx - 25)
        out[i][(d < r + 4) & (yy < 40)] = 2
        out[i][(d < r) & (yy < 40)] = 1
        out[i][(yy >= 40) & (abs(xx - 25) < 8) & (yy < 55)] = 3
    return out


def _save(path: Path, tyx: np.ndarray, px: float) -> None:
    arr = np.transpose(tyx) if tyx.shape[0] > 1 else tyx[0].T
    img = nib.Nifti1Image(arr.astype(np.uint8), np.diag([-px, -px, 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _camus_like(root: Path) -> Path:
    """A tiny camus_fullres (two patients: one with sequences, one ES->ED and ED/ES only) and camus_edes224."""
    full = root / "camus_fullres"
    for pid, reverse in (("patient0001", False), ("patient0015", True)):
        (full / pid).mkdir(parents=True)
        views = {}
        for view in ("2CH", "4CH"):
            lab = _labels(6)
            if reverse and view == "4CH":
                lab = lab[::-1]
            ed, es = (5, 0) if reverse and view == "4CH" else (0, 5)
            img = (lab * 60 + 20).astype(np.uint8)
            stem = full / pid / f"{pid}_{view}"
            if pid == "patient0015" and view == "2CH":  # ED/ES images only
                _save(Path(f"{stem}_ED.nii.gz"), img[ed:ed + 1], 0.308)
                _save(Path(f"{stem}_ES.nii.gz"), img[es:es + 1], 0.308)
                seq = False
            else:
                _save(Path(f"{stem}_seq.nii.gz"), img, 0.308)
                _save(Path(f"{stem}_seq_gt.nii.gz"), lab, 0.308)
                seq = True
            _save(Path(f"{stem}_ED_gt.nii.gz"), lab[ed:ed + 1], 0.308)
            _save(Path(f"{stem}_ES_gt.nii.gz"), lab[es:es + 1], 0.308)
            views[view] = {"ed_index": ed, "es_index": es, "frame_rate_hz": 50.0, "sequence_available": seq}
        (full / pid / "info.json").write_text(json.dumps({"views": views, "ef_percent": 55.0}))
    small = root / "camus_edes224"
    small.mkdir()
    cases = []
    for i in range(17, 27):
        pid = f"patient{i:04d}"
        lab = _labels(2)
        _save(small / f"{pid}_2CH.nii.gz", (lab * 60 + 20).astype(np.uint8), 1.0)
        _save(small / f"{pid}_2CH_gt.nii.gz", lab, 1.0)
        cases.append({"patient": pid, "view": "2CH", "image": f"{pid}_2CH.nii.gz", "labels": f"{pid}_2CH_gt.nii.gz"})
    (small / "index.json").write_text(json.dumps({"cases": cases}))
    return root


def test_echo_default_description():
    d = ECHO_DEFAULT
    assert d.modality == "US" and d.names()[3] == "left atrium" and d.value_of("LV") == 1
    assert d.value_of("Myo") == 2 and d.value_of("LA") == 3 and d.geometry["layout"] == "2d+t"
    assert ModelDescription.from_metadata(d.to_metadata()) == d


def test_split_holds_out_patients(tmp_path):
    root = _camus_like(tmp_path)
    split = echo_split(root)
    assert "patient0015" in split["val"] and "patient0001" in split["train"]
    assert not set(split["train"]) & set(split["val"])
    assert [p for p in split["val"] if p.startswith("patient00") and int(p[-4:]) >= 17] == ["patient0017", "patient0022"]
    val = load_echo(root, "val")
    train = load_echo(root, "train")
    assert {c.name.split("_")[0] for c in val}.isdisjoint({c.name.split("_")[0] for c in train})
    assert all(isinstance(c, Case) and isinstance(c, EchoCase) for c in val + train)


def test_fullres_views_and_224(tmp_path):
    root = _camus_like(tmp_path)
    seq = load_camus_fullres_view(root / "camus_fullres" / "patient0001", "2CH")
    assert seq.image.shape == (6, 1, 60, 50) and seq.image.dtype == np.float16
    assert seq.codes.shape == seq.image.shape and (seq.ed, seq.es) == (0, 5)
    assert seq.spacing == pytest.approx((1.0, 0.308, 0.308), rel=1e-5) and seq.frame_rate_hz == 50.0
    assert float(seq.image.max()) <= 1.0 and set(np.unique(seq.codes)) <= {0, 1, 2, 3}
    rev = load_camus_fullres_view(root / "camus_fullres" / "patient0015", "4CH")
    assert (rev.ed, rev.es) == (0, 5) and "reversed" in rev.note
    assert (rev.codes[0] == 1).sum() > (rev.codes[5] == 1).sum()  # ED cavity larger after the reversal
    edes = load_camus_fullres_view(root / "camus_fullres" / "patient0015", "2CH")
    assert edes.image.shape[0] == 2 and (edes.ed, edes.es) == (0, 1) and "ED and ES" in edes.note
    resampled = load_camus_fullres_view(root / "camus_fullres" / "patient0001", "2CH", pixel_mm=0.616)
    assert resampled.image.shape[2:] == (30, 25) and resampled.spacing == (1.0, 0.616, 0.616)
    small = [c for c in load_echo(root, "all") if c.source == "camus224"]
    assert len(small) == 10 and small[0].spacing is None and small[0].note == EDES224_NOTE
    assert small[0].image.shape == (2, 1, 60, 50)
    with pytest.raises(ValueError, match="split"):
        load_echo(root, "test")


def test_unlabelled_frames_are_ignored(tmp_path):
    root = _camus_like(tmp_path)
    (root / "camus_fullres" / "patient0001" / "patient0001_4CH_seq_gt.nii.gz").unlink()
    case = load_camus_fullres_view(root / "camus_fullres" / "patient0001", "4CH")
    assert (case.codes[1:5] == IGNORE_INDEX).all() and (case.codes[0] != IGNORE_INDEX).all()


@pytest.mark.skipif(not (ECHO / "camus_fullres").is_dir(), reason="../shared/data/echo not present")
def test_real_camus_split_and_cases():
    split = echo_split(ECHO)
    assert len(split["val"]) >= 60 and not set(split["train"]) & set(split["val"])
    cases = load_echo(ECHO, "val", pixel_mm=0.616, limit=6)
    full = [c for c in cases if c.source == "camus"]
    assert full and all(c.spacing == (1.0, 0.616, 0.616) for c in full)
    p15 = [c for c in full if c.name == "patient0015_4CH"][0]
    assert p15.ed == 0 and p15.es == p15.n_frames - 1 and p15.n_frames == 27
    assert set(np.unique(p15.codes)) <= {0, 1, 2, 3}


def test_pack_echo_data_for_a_gpu_call(tmp_path):
    """scripts/pack_echo_data.py: every CAMUS file travels, NIfTI uncompressed inside the xz tar, same bytes."""
    import gzip
    import importlib.util
    import tarfile
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "pack_echo_data", Path(__file__).resolve().parents[1] / "scripts" / "pack_echo_data.py")
    pack_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_mod)
    echo = tmp_path / "data" / "echo"
    (echo / "camus_edes224").mkdir(parents=True)
    (echo / "camus_fullres" / "patient0001").mkdir(parents=True)
    (echo / "README.md").write_text("readme")
    (echo / "camus_edes224" / "index.json").write_text("{}")
    raw = bytes(range(256)) * 4
    (echo / "camus_fullres" / "patient0001" / "p_2CH_ED.nii.gz").write_bytes(gzip.compress(raw))
    out = tmp_path / "gpu" / "echo.tar.xz"
    assert pack_mod.pack(tmp_path / "data", out) == 3
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert names == {"data/echo/README.md", "data/echo/camus_edes224/index.json",
                         "data/echo/camus_fullres/patient0001/p_2CH_ED.nii"}
        assert tar.extractfile("data/echo/camus_fullres/patient0001/p_2CH_ED.nii").read() == raw
    with pytest.raises(SystemExit, match="no CAMUS data"):
        pack_mod.pack(tmp_path / "nothing", tmp_path / "x.tar.xz")


def test_pack_echo_train_only_at_a_coarser_step(tmp_path):
    """--train-only leaves the validation patients' images behind (index.json travels whole, so the split is
    the same); --fullres-step 2 halves the full-resolution grid, and the loader still sees the same view at
    the model's pixel size."""
    import importlib.util
    import tarfile

    spec = importlib.util.spec_from_file_location(
        "pack_echo_data", Path(__file__).resolve().parents[1] / "scripts" / "pack_echo_data.py")
    pack_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack_mod)
    root = _camus_like(tmp_path / "data" / "echo")
    (root / "README.md").write_text("readme")
    out = tmp_path / "gpu" / "echo.tar.xz"
    pack_mod.pack(tmp_path / "data", out, train_only=True, fullres_step=2)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
    val = set(echo_split(root)["val"])
    names = {p.name for p in unpacked.rglob("*.nii")}
    assert "patient0015_4CH_seq.nii" not in names and "patient0001_2CH_seq.nii" in names  # 0015 is validation
    assert not any(n.split("_")[0] in val for n in names)
    assert (unpacked / "data/echo/camus_edes224/index.json").read_text() == (root / "camus_edes224/index.json").read_text()
    for p in unpacked.rglob("*.nii"):  # the loaders read .nii.gz
        p.with_name(p.name + ".gz").write_bytes(__import__("gzip").compress(p.read_bytes()))
    packed_root = unpacked / "data" / "echo"
    assert echo_split(packed_root)["train"] == echo_split(root)["train"]  # the same training patients
    orig = load_camus_fullres_view(root / "camus_fullres" / "patient0001", "2CH", pixel_mm=0.616)
    small = load_camus_fullres_view(packed_root / "camus_fullres" / "patient0001", "2CH", pixel_mm=0.616)
    assert small.spacing == pytest.approx((1.0, 0.616, 0.616), rel=1e-4)
    assert small.image.shape == orig.image.shape
    assert float(np.abs(small.image.astype(np.float32) - orig.image.astype(np.float32)).mean()) < 0.03
    agree = (small.codes == orig.codes).mean()
    assert agree > 0.9, agree


def test_checkpoint_metadata_names_the_echo_split_without_validation(tmp_path):
    """A run with --no-validate loads no validation view; its metadata still says which patients were held out."""
    from napari_cardiac_motion.training.datasets import data_metadata

    root = _camus_like(tmp_path)
    pairs = load_echo(root, "train")
    meta = data_metadata(pairs, [c for c in pairs if c.n_frames > 2], [])
    split = meta["validation_split"]
    assert split["used_for_scores"] == [] and "patient0008" in split["camus"] and "every 5th" in split["camus"]
    assert {d["dataset"] for d in meta["training_data"]} == {"CAMUS", "CAMUS (224x224)"}
