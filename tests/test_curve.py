"""The quality curve against training hours: the best step, hours since it, and the flat rule."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from animegan.cli import main
from animegan.curve import MAX_GAP_S, read_curve, training_hours
from animegan.runs import RunFolder
from animegan.training import run_curve


def _records(*rows: tuple[int, float, dict]) -> list[dict]:
    return [{"step": step, "time": t, **extra} for step, t, extra in rows]


def test_hours_come_from_the_trainers_count_when_logged() -> None:
    # train_hours is the trainer's own count: a stop between sessions (a week here) adds nothing
    records = _records((100, 0.0, {"train_hours": 0.5}), (200, 1800.0, {"train_hours": 1.0, "fid": 90.0}),
                       (300, 7 * 86400.0, {"train_hours": 1.25}), (400, 7 * 86400.0 + 3600, {"train_hours": 2.25}))
    assert training_hours(records) == [0.5, 1.0, 1.25, 2.25]


def test_without_it_the_time_between_records_counts_except_stops() -> None:
    # Records every 15 minutes count; a longer silence is a stop, not training
    t = [1000.0, 1000.0 + MAX_GAP_S, 1000.0 + 2 * MAX_GAP_S + 1, 1000.0 + 3 * MAX_GAP_S + 1]
    records = _records(*((i + 1, ti, {}) for i, ti in enumerate(t)))
    assert training_hours(records) == pytest.approx([0.0, 0.25, 0.25, 0.5])
    # An old run resumed by a trainer that logs train_hours (its count restarting at the resume): the
    # first new record counts as a stop, the next ones by their own count
    mixed = records + _records((5, 90000.0, {"train_hours": 0.1}), (6, 90001.0, {"train_hours": 0.6}))
    assert training_hours(mixed) == pytest.approx([0.0, 0.25, 0.25, 0.5, 0.5, 1.0])


def test_best_step_hours_since_and_the_flat_rule() -> None:
    records = _records((1000, 0, {"train_hours": 1.0, "kid": 0.08}), (1500, 0, {"train_hours": 1.5}),
                       (2000, 0, {"train_hours": 2.0, "kid": 0.06}), (3000, 0, {"train_hours": 3.0, "kid": 0.06}),
                       (4000, 0, {"train_hours": 4.0, "kid": math.nan}), (4500, 0, {"train_hours": 4.5, "kid": 0.07}))
    curve = read_curve(records, "kid")
    assert [p.step for p in curve.points] == [1000, 2000, 3000, 4500]  # NaN is no evaluation
    assert (curve.best.step, curve.best.hours, curve.best.value) == (2000, 2.0, 0.06)  # a tie keeps the earliest
    assert curve.hours == 4.5 and curve.hours_since_best == 2.5
    assert curve.flat(2.0) and not curve.flat(3.0) and not curve.flat(2.0, min_hours=8.0)
    assert curve.summary() == "best kid 0.06 at step 2,000 (2.00 h); 4.50 h trained, 2.50 h since the best"
    empty = read_curve(records[:2], "fid")
    assert empty.best is None and not empty.flat(0.0) and empty.summary() == "1.50 h trained, no fid yet"


def test_cli_reads_a_run_folder_by_its_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    style = RunFolder(tmp_path / "style")
    style.create({"trainer": "animegan", "recipe": "v2", "steps": 10})
    style.log(5, loss_g=1.0, kid=0.09, fid=200.0, train_hours=1.0)
    style.log(10, loss_g=0.9, kid=0.07, fid=210.0, train_hours=3.5)
    assert run_curve(style.path).metric == "kid" and run_curve(style.path).best.step == 10
    assert run_curve(style.path, "fid").best.step == 5
    assert main(["curve", str(style.path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["metric"] == "kid" and got["best"]["step"] == 10 and got["hours"] == 3.5 and not got["flat"]
    assert main(["curve", str(style.path), "--metric", "fid", "--flat", "2"]) == 0
    out = capsys.readouterr().out
    assert "best fid 200 at step 5 (1.00 h); 3.50 h trained, 2.50 h since the best" in out
    assert out.strip().endswith("flat (no gain over the last 2 h): yes")
    faces = RunFolder(tmp_path / "faces")
    faces.create({"arch": "dcgan_improved", "steps": 10})
    faces.log(5, loss_G=1.0, fid=120.0, kid=0.1, train_hours=0.5)
    assert run_curve(faces.path).metric == "fid"
    assert main(["curve", str(tmp_path / "missing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
