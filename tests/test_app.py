"""The app builds, serves, and its stylize endpoint answers through gradio_client."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from conftest import free_port, gradient_image


@pytest.fixture
def server(style: str) -> Iterator[str]:
    from animegan.ui import build_app

    demo = build_app()
    demo.queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_stylize_endpoint_answers(server: str, style: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    photo = tmp_path / "photo.png"
    Image.fromarray(gradient_image(72, 56)).save(photo)
    client = Client(server, verbose=False)
    pair, download = client.predict(handle_file(str(photo)), style, None, False, False, 0, api_name="/stylize")
    before, after = (Image.open(p) for p in pair)
    assert before.size == after.size == (72, 56)
    full = Image.open(download)
    assert full.size == (72, 56)
    import numpy as np

    assert np.abs(np.asarray(full, np.float32) - np.asarray(Image.open(photo), np.float32)).mean() > 5


def test_bad_upload_gets_a_message_not_a_traceback(server: str, style: str, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    client = Client(server, verbose=False)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(bad)), style, None, False, False, 0, api_name="/stylize")
    assert "truncated or damaged image" in str(info.value) or "not an image" in str(info.value)


def _elem_ids(demo) -> set[str]:
    return {c.elem_id for c in demo.blocks.values() if getattr(c, "elem_id", None)}


def test_training_is_off_on_a_public_space_unless_its_owner_turns_it_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Space every visitor would share the owner's disk, processes and token: no trainer, no writes."""
    from animegan.errors import AnimeGANError
    from animegan.training import TrainingManager
    from animegan.ui import build_app

    monkeypatch.delenv("ANIMEGAN_TRAINING", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    local = _elem_ids(build_app())
    assert "train-start" in local  # a local app trains
    assert {"train-plot", "train-quality", "train-eval-every", "train-eval-photos"} <= local
    monkeypatch.setenv("SPACE_ID", "alice/anime-studio")
    ids = _elem_ids(build_app())
    assert "train-off" in ids and not {"train-start", "train-data", "train-check"} & ids
    manager = TrainingManager(tmp_path / "runs")
    for attempt in (lambda: manager.start("faces", tmp_path, "r"), lambda: manager.resume("r"),
                    lambda: manager.export("r", "w")):
        with pytest.raises(AnimeGANError, match="switched off"):
            attempt()
    monkeypatch.setenv("ANIMEGAN_TRAINING", "1")  # the owner of a duplicated Space turns it on
    assert "train-start" in _elem_ids(build_app())
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("ANIMEGAN_TRAINING", "0")
    assert "train-off" in _elem_ids(build_app())


def test_old_results_are_pruned_from_disk(tmp_path: Path) -> None:
    import os
    import time

    from animegan.ui import build_app
    from animegan.ui.common import OUTPUT_MAX_AGE_S, output_dir, prune_older_than

    old, new = tmp_path / "old.png", tmp_path / "new.png"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert prune_older_than(tmp_path, 3600) == 1 and not old.exists() and new.exists()
    stale = output_dir() / "stale-result-from-yesterday.png"
    stale.write_bytes(b"z")
    os.utime(stale, (time.time() - OUTPUT_MAX_AGE_S - 60,) * 2)
    output_dir()  # each new result's folder lookup sweeps out the stale ones
    assert not stale.exists()
    assert build_app().delete_cache == (3600, int(OUTPUT_MAX_AGE_S))  # and Gradio's copies too
