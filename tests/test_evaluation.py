"""Evaluation metrics, the demons baseline, the evaluate command and the shipped checkpoint's card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from napari_cardiac_motion.evaluation.demons import warp_labels
from napari_cardiac_motion.metrics import dice, ejection_fraction, hd95, volume

CARD = Path(__file__).resolve().parents[1] / "napari_cardiac_motion" / "checkpoints" / "MODEL_CARD.md"


def test_dice_toy_case_matches_hand_computation():
    a = np.zeros((1, 4, 4), np.uint8)
    b = np.zeros((1, 4, 4), np.uint8)
    a[0, :2, :2] = 1  # 4 voxels
    b[0, :2, :3] = 1  # 6 voxels, 4 shared
    assert dice(a, b, 1) == pytest.approx(2 * 4 / (4 + 6))
    assert dice(a, b, 3) == 1.0  # both empty
    assert dice(a, np.zeros_like(a), 1) == 0.0
    # random label maps against an independent count over voxel index sets
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.integers(0, 4, (2, 3, 8, 8))
        for c in (1, 2, 3):
            sa, sb = set(np.flatnonzero(x == c)), set(np.flatnonzero(y == c))
            expected = 2 * len(sa & sb) / (len(sa) + len(sb))
            assert dice(x, y, c) == pytest.approx(expected)
            assert dice(y, x, c) == pytest.approx(expected)  # symmetric
            assert 0.0 < expected < 1.0  # a case a wrong formula (e.g. Jaccard) would fail
    # label=None: any non-zero voxel counts
    assert dice(np.array([0, 2, 3, 0]), np.array([1, 1, 0, 0])) == pytest.approx(2 * 1 / (2 + 2))


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

    from conftest import tiny_net
    from napari_cardiac_motion.model import save_checkpoint

    torch.manual_seed(0)
    m = tiny_net(head=8)
    return save_checkpoint(m, tmp_path / "tiny.pt", {"name": "tiny", "version": "0"})


def test_evaluate_two_cases_dice_in_range(two_pairs, tiny_checkpoint, tmp_path):
    from napari_cardiac_motion.evaluation.evaluate import evaluate, format_table, write_json

    import nibabel as nib

    from napari_cardiac_motion.inference import predict_cine
    from napari_cardiac_motion.model import load_checkpoint

    res = evaluate(two_pairs, str(tiny_checkpoint), device="cpu")
    assert [c["patient"] for c in res["cases"]] == ["patient000", "patient001"]
    model, _ = load_checkpoint(str(tiny_checkpoint), device="cpu")

    def zyx(folder, name):
        return np.asanyarray(nib.load(str(folder / f"{name}.nii.gz")).dataobj).transpose(2, 1, 0)

    for case in res["cases"]:
        # recompute every Dice independently: the same model on the same frames, our own overlap count
        folder = two_pairs / case["patient"]
        cine = np.stack([zyx(folder, "ED"), zyx(folder, "ES")]).astype(np.float32)
        pred = predict_cine(cine, model, device="cpu", ed_frame=0)
        gts = {"ED": zyx(folder, "ED_gt"), "ES": zyx(folder, "ES_gt")}
        for c, k in ((1, "LV"), (2, "Myo"), (3, "RV")):
            for t, frame in enumerate(("ED", "ES")):
                a, b = pred.labels[t] == c, gts[frame] == c
                expected = 1.0 if a.sum() + b.sum() == 0 else 2 * (a & b).sum() / (a.sum() + b.sum())
                assert case[f"dice_{frame}_{k}"] == pytest.approx(expected), (case["patient"], frame, k)
            assert case[f"dice_{k}"] == pytest.approx(0.5 * (case[f"dice_ED_{k}"] + case[f"dice_ES_{k}"]))
        assert case["spacing_mm"] == [8.0, 1.5, 1.5] and "hd95_ED_LV" in case
        assert case["ef_gt"] == pytest.approx(1 - 49 / 100, abs=0.1)
    table = format_table(res)
    assert "| LV |" in table and "seconds per ED/ES pair" in table
    out = write_json(res, tmp_path / "r.json")
    assert json.loads(out.read_text())["summary"]["dice_LV"]["n"] == 2


def test_evaluate_scores_a_known_prediction_exactly(two_pairs, tiny_checkpoint, monkeypatch):
    """An oracle 'model' (labels recovered from the synthetic intensities, motion = the true shift)
    must score Dice 1, HD95 0, and the propagated Dice of the shifted ED labels against ES."""
    from types import SimpleNamespace

    import nibabel as nib

    from napari_cardiac_motion import inference
    from napari_cardiac_motion.evaluation.evaluate import evaluate

    shifts = {}

    def oracle(cine, model, device="auto", ed_frame=None, **kw):
        img = np.asarray(getattr(cine, "data", cine))  # evaluate passes a Cine with the true spacing
        labels = np.where(img > 0.65, 1, np.where(img > 0.25, 2, 0)).astype(np.uint8)
        motion = np.zeros(img.shape + (2,), np.float32)
        # ES disc centre is at x = 24 + shift: label_ES(p) = label_ED(p + (0, -shift))
        cx = [np.argwhere(labels[t] == 1)[:, 2].mean() for t in range(2)]
        motion[1, ..., 1] = cx[0] - cx[1]
        shifts[len(shifts)] = cx[1] - cx[0]
        return SimpleNamespace(labels=labels, motion=motion, seconds=0.01, metadata={})

    monkeypatch.setattr(inference, "predict_cine", oracle)
    res = evaluate(two_pairs, str(tiny_checkpoint), device="cpu")
    assert shifts == {0: pytest.approx(0.0), 1: pytest.approx(2.0)}
    for case, shift in zip(res["cases"], (0, 2)):
        for k in ("LV", "Myo", "RV"):
            assert case[f"dice_ED_{k}"] == 1.0 and case[f"dice_ES_{k}"] == 1.0
        assert case["hd95_ED_LV"] == 0.0 and case["hd95_ES_Myo"] == 0.0
        folder = two_pairs / case["patient"]
        ed_gt = np.asanyarray(nib.load(str(folder / "ED_gt.nii.gz")).dataobj).transpose(2, 1, 0)
        es_gt = np.asanyarray(nib.load(str(folder / "ES_gt.nii.gz")).dataobj).transpose(2, 1, 0)
        prop = np.roll(ed_gt, shift, axis=2)  # the ED rings moved by the true shift (no wrap at 24±13)
        for c, k in ((1, "LV"), (2, "Myo")):
            a, b = prop == c, es_gt == c
            assert case[f"prop_{k}"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
        assert case["prop_LV"] < 1.0  # radius 10 at ED vs 7 at ES: not a trivially perfect overlap
        assert case["ef_pred"] == pytest.approx(case["ef_gt"])


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
    # each fact is read from its own field of the card, not found anywhere in the text
    assert re.search(r"^# Model card: `?([\w.-]+)`?\s*$", card, re.M).group(1) == meta["name"]
    assert re.search(r"\*\*Name:\*\* `([^`]+)`", card).group(1) == meta["name"]
    assert re.search(r"\*\*Version:\*\* ([\w.+-]+)", card).group(1) == meta["version"]
    assert int(re.search(r"\*\*seed:\*\* (\d+)", card).group(1)) == int(meta["seed"])
    split = card.split("## Validation split", 1)[1].split("\n## ", 1)[0]
    bullets = [b.strip() for b in re.split(r"\n(?=- )", split)]  # a bullet may wrap over lines
    acdc_line = next(b for b in bullets if b.lstrip("- ").startswith("ACDC"))
    acdc = {f"patient{n}" for group in re.findall(r"\*\*([^*]+)\*\*", acdc_line) for n in re.findall(r"\d{3}", group)}
    assert acdc == set(meta["validation_split"]["acdc"])
    sb_line = next(b for b in bullets if b.lstrip("- ").startswith("Sunnybrook"))
    assert set(re.findall(r"SC-HF-I-\d+", sb_line)) == set(meta["validation_split"]["sunnybrook"])
    assert "research" in card.lower()  # ACDC licence
