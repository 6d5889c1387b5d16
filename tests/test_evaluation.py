"""Evaluation metrics, the demons baseline, the evaluate command and the shipped checkpoint's card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from napari_cardiac_motion.evaluation.demons import warp_labels
from napari_cardiac_motion.evaluation.metrics import dice, ejection_fraction, hd95, volume

CARD = Path(__file__).resolve().parents[1] / "napari_cardiac_motion" / "checkpoints" / "MODEL_CARD.md"


def test_dice_toy_case_matches_hand_computation():
    a = np.zeros((1, 4, 4), np.uint8)
    b = np.zeros((1, 4, 4), np.uint8)
    a[0, :2, :2] = 1  # 4 voxels
    b[0, :2, :3] = 1  # 6 voxels, 4 shared
    assert dice(a, b, 1) == pytest.approx(2 * 4 / (4 + 6))
    assert dice(a, b, 3) == 1.0  # both empty
    assert dice(a, np.zeros_like(a), 1) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(2):
        x, y = rng.integers(0, 4, (2, 3, 8, 8))
        for c in (1, 2, 3):
            assert 0.0 <= dice(x, y, c) <= 1.0


def test_hd95_toy_cases():
    a = np.zeros((1, 20, 20), bool)
    a[0, 5:10, 5:10] = True
    b = np.roll(a, 2, axis=2)  # shifted 2 px in x
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(2.0)
    assert hd95(a, b, spacing=(10.0, 1.5, 1.5)) == pytest.approx(3.0)
    assert np.isnan(hd95(a, np.zeros_like(a)))


def test_ejection_fraction_and_volume():
    assert ejection_fraction(100.0, 40.0) == pytest.approx(0.6)
    assert np.isnan(ejection_fraction(0.0, 1.0))
    lab = np.ones((2, 3, 4), np.uint8)
    assert volume(lab, 1) == 24 and volume(lab, 1, (2.0, 1.0, 0.5)) == 24.0


def test_warp_labels_follows_the_motion_convention():
    lab = np.zeros((1, 10, 10), np.uint8)
    lab[0, 4, 4] = 1
    flow = np.zeros((1, 10, 10, 2), np.float32)
    flow[..., 1] = 2.0  # out(p) = lab(p + (0, 2))
    out = warp_labels(lab, flow)
    assert out[0, 4, 2] == 1 and out.sum() == 1


def _write_pair(folder: Path, shift: int, rng) -> None:
    import nibabel as nib

    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:48, :48]
    for name, r in (("ED", 10), ("ES", 7)):
        lab = np.zeros((2, 48, 48), np.uint8)  # (Z, Y, X)
        rr = np.hypot(yy - 24, xx - 24 - (shift if name == "ES" else 0))
        lab[:, rr < r + 3] = 2
        lab[:, rr < r] = 1
        img = np.choose(lab, [0.1, 0.9, 0.4]).astype(np.float32) + rng.normal(0, 0.02, lab.shape)
        aff = np.diag([1.5, 1.5, 8.0, 1.0])
        nib.save(nib.Nifti1Image(img.transpose(2, 1, 0).astype(np.float32), aff), folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(lab.transpose(2, 1, 0), aff), folder / f"{name}_gt.nii.gz")


@pytest.fixture
def two_pairs(tmp_path):
    rng = np.random.default_rng(0)
    for i, shift in enumerate((0, 2)):
        _write_pair(tmp_path / "data" / f"patient{i:03d}", shift, rng)
    return tmp_path / "data"


@pytest.fixture
def tiny_checkpoint(tmp_path):
    import torch

    from napari_cardiac_motion.model import JointConfig, JointMotionSegNet, save_checkpoint

    torch.manual_seed(0)
    m = JointMotionSegNet(JointConfig(channels=(4, 8, 8, 8, 8), head=8, gru_hidden=4))
    return save_checkpoint(m, tmp_path / "tiny.pt", {"name": "tiny", "version": "0"})


def test_evaluate_two_cases_dice_in_range(two_pairs, tiny_checkpoint, tmp_path):
    from napari_cardiac_motion.evaluation.evaluate import evaluate, format_table, write_json

    res = evaluate(two_pairs, str(tiny_checkpoint), device="cpu")
    assert len(res["cases"]) == 2
    for case in res["cases"]:
        for k in ("LV", "Myo", "RV"):
            for key in (f"dice_ED_{k}", f"dice_ES_{k}", f"prop_{k}"):
                assert 0.0 <= case[key] <= 1.0
        assert case["spacing_mm"] == [8.0, 1.5, 1.5] and "hd95_ED_LV" in case
        assert case["ef_gt"] == pytest.approx(1 - 49 / 100, abs=0.1)
    table = format_table(res)
    assert "| LV |" in table and "seconds per ED/ES pair" in table
    out = write_json(res, tmp_path / "r.json")
    assert json.loads(out.read_text())["summary"]["dice_LV"]["n"] == 2


def test_evaluate_cli_with_demons(two_pairs, tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("SimpleITK")
    from napari_cardiac_motion.cli import main

    rc = main(["evaluate", "--data", str(two_pairs), "--model", str(tiny_checkpoint), "--baseline", "demons",
               "--patients", "001", "--json", str(tmp_path / "e.json"), "--device", "cpu"])
    assert rc == 0
    res = json.loads((tmp_path / "e.json").read_text())
    case = res["cases"][0]
    assert case["patient"] == "patient001"
    assert case["demons_prop_LV"] > 0.8  # demons follows a 2-pixel shift of a disc
    assert "demons/model time ratio" in capsys.readouterr().out


def test_evaluate_reports_missing_pairs(tmp_path):
    from napari_cardiac_motion.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--data", str(tmp_path / "empty")]) == 2


def test_shipped_checkpoint_matches_its_card():
    from napari_cardiac_motion.model import default_checkpoint_path, load_checkpoint

    path = default_checkpoint_path()
    assert path.exists() and path.stat().st_size <= 25 * 1024 * 1024
    model, meta = load_checkpoint()
    card = CARD.read_text()
    assert meta["name"] in card
    assert f"Version: {meta['version']}" in card or f"version {meta['version']}" in card.lower() \
        or re.search(rf"\b{re.escape(meta['version'])}\b", card)
    assert str(meta["seed"]) in card
    for p in meta["validation_split"]["acdc"]:
        assert p.removeprefix("patient") in card
    assert "research" in card.lower()  # ACDC licence
