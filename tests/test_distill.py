"""Distilling a style into a slim '-fast' student, on photos the tests draw themselves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from animegan.runs import RunFolder
from animegan.weights import available_styles, save_weights
from conftest import gradient_image, make_v2_generator
from train.distill import DistillConfig, Distiller, evaluate, export, main

SMALL = dict(size=32, batch=2, log_every=1, sample_every=3, checkpoint_every=2, val_photos=2, lr=3e-3)


@pytest.fixture
def teacher(weights_dir: Path) -> str:
    save_weights(weights_dir / "teach.safetensors", make_v2_generator(seed=4).state_dict(),
                 {"architecture": "animeganv2", "kind": "style", "name": "teach", "licence": "test only"}, dtype=None)
    return "teach"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(gradient_image(44 + i, 40, seed=i)).save(folder / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder.parent


def _cfg(teacher: str, photos: Path, **kw) -> DistillConfig:
    return DistillConfig.from_dict({"teacher": teacher, "photos": str(photos), **SMALL, **kw})


def test_student_moves_toward_the_teacher(teacher: str, photos: Path, tmp_path: Path) -> None:
    # 40 steps: at 25 the perceptual distance had barely begun to fall, and on some CPUs (bf16 teacher) not yet
    d = Distiller(_cfg(teacher, photos, steps=40, perceptual_weight=0.1), tmp_path / "run", quiet=True)
    held = d.data.validation_batch()
    before = evaluate(d.student, d.teacher, held, d.perceptual)
    assert d.run() == "finished"
    after = evaluate(d.student, d.teacher, held, d.perceptual)
    assert after["mean_abs_diff_255"] < 0.9 * before["mean_abs_diff_255"]
    assert after["perceptual_distance"] < before["perceptual_distance"]
    assert after["psnr_db"] > before["psnr_db"]
    rf = RunFolder(tmp_path / "run")
    records = rf.metrics()
    assert [r["step"] for r in records] == list(range(1, 41))
    assert {"loss", "loss_pixel", "loss_perceptual", "images_per_s"} <= set(records[-1])
    with Image.open(rf.samples()[-1]) as grid:  # photo, teacher, student rows of the held-out photos
        assert grid.size == (2 * 32, 3 * 32)
    assert rf.read_config()["trainer"] == "distill" and len(d.data.photos) == 4


def test_resume_gives_the_uninterrupted_student(teacher: str, photos: Path, tmp_path: Path) -> None:
    straight = Distiller(_cfg(teacher, photos, steps=4), tmp_path / "a", quiet=True)
    straight.run()
    first = Distiller(_cfg(teacher, photos, steps=2), tmp_path / "b", quiet=True)
    first.run()
    resumed = Distiller(_cfg(teacher, photos, steps=4), tmp_path / "b", resume=True, quiet=True)
    assert resumed.run() == "finished"
    for k, v in straight.student.state_dict().items():
        assert torch.equal(v, resumed.student.state_dict()[k]), k


def test_cli_exports_a_fast_style_with_its_figures(teacher: str, photos: Path, tmp_path: Path,
                                                   weights_dir: Path) -> None:
    from animegan.stylize import Stylizer

    held = tmp_path / "held"
    held.mkdir()
    for i in range(3):
        Image.fromarray(gradient_image(36, 36, seed=50 + i)).save(held / f"h{i}.png")
    code = main(["--teacher", teacher, "--photos", str(photos), "--out", str(tmp_path / "run"), "--steps", "3",
                 "--config", json.dumps(SMALL), "--export", "--eval-photos", str(held), "--quiet"])
    assert code == 0
    assert "teach-fast" in available_styles()
    meta = json.loads((weights_dir / "teach-fast.json").read_text())
    assert meta["teacher"] == "teach" and meta["config"]["width"] == 0.45 and meta["licence"] == "test only"
    assert meta["metrics"]["flops_ratio"] >= 4
    distance = meta["metrics"]["distance_to_teacher"]
    assert distance["photos"] == 2 and distance["psnr_db"] > 0 and distance["perceptual_distance"] > 0
    out = Stylizer("teach-fast", device="cpu").run_arrays([gradient_image(50, 30)])[0]
    assert out.shape == (30, 50, 3)
    # A second export under an explicit name: the same student.
    path = export(tmp_path / "run", "my-fast")
    assert path.name == "my-fast.safetensors"


@pytest.mark.parametrize("args, message", [
    (["--photos", "PHOTOS"], "teacher style is required"),
    (["--teacher", "teach", "--photos", "PHOTOS", "--width", "1.5"], "width must be between 0 and 1"),
    (["--teacher", "teach", "--photos", "MISSING"], "photo folder not found"),
    (["--teacher", "nope-not-a-style", "--photos", "PHOTOS"], "nope-not-a-style"),
    (["--teacher", "teach", "--photos", "PHOTOS", "--export", "../escape"], "style name"),
])
def test_cli_errors_are_one_clear_line(args: list[str], message: str, teacher: str, photos: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("PHOTOS", str(photos)).replace("MISSING", str(tmp_path / "missing")) for a in args]
    assert main([*args, "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
