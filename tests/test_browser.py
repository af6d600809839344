"""The whole app in a real browser: Playwright drives Debian's chromium against ``python app.py``.

Photo tab: drop a photo, get the result and its download. Faces tab: drag the interpolation
slider, see the face change. Training tab: check a tiny dataset, start a run, see the loss
plot grow and a sample grid appear, stop it. Screenshots land in ``test-artifacts/browser/``.
Skips when chromium or the playwright package is missing (see README: apt-get install
chromium; pip install playwright).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, free_port, make_v2_generator

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "browser"
TIMEOUT_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
if not CHROMIUM.is_file():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


def _write_weights(folder: Path) -> None:
    """A random style and a random face generator: real networks, made here, nothing downloaded."""
    from animegan.models.dcgan import DCGANConfig, DCGANGenerator
    from animegan.weights import save_weights

    folder.mkdir(parents=True)
    save_weights(folder / "test-style.safetensors", make_v2_generator().state_dict(),
                 {"architecture": "animeganv2", "kind": "style", "description": "random test weights"}, dtype=None)
    # First by name, but listed after the general style and only portrait mode's default.
    save_weights(folder / "test-portrait.safetensors", make_v2_generator(seed=1).state_dict(),
                 {"architecture": "animeganv2", "kind": "style", "preset": "portrait",
                  "description": "random portrait weights"})
    torch.manual_seed(0)
    config = DCGANConfig(image_size=32, latent_dim=64, width=16, upsample="resize")
    faces = DCGANGenerator(config).eval()
    with torch.no_grad():  # DCGAN's N(0, 0.02) init draws the same flat grey for every latent
        for m in faces.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    save_weights(folder / "test-faces.safetensors", faces.state_dict(),
                 {"architecture": "dcgan", "kind": "faces", "config": asdict(config),
                  "description": "random test face generator"}, dtype=None)


def _faces_dataset(folder: Path, count: int = 24) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"face_{i:02d}.png")
    return folder


def _kill_trainers(runs: Path) -> None:
    """Safety net: a trainer the app started lives in its own session; never leave one running."""
    for status in runs.glob("*/status.json"):
        try:
            pid = int(json.loads(status.read_text()).get("pid", 0))
            if pid > 0 and json.loads(status.read_text()).get("state") == "running":
                os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("browser")
    _write_weights(tmp / "weights")
    runs = tmp / "runs"
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               ANIMEGAN_WEIGHTS_DIR=str(tmp / "weights"), ANIMEGAN_RUNS_DIR=str(runs), ANIMEGAN_OFFLINE="1",
               ANIMEGAN_CACHE=str(tmp / "cache"), GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    log = open(ARTIFACTS / "app-log.txt", "wb")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}: {(ARTIFACTS / 'app-log.txt').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("app.py did not answer within 120 s")
            time.sleep(0.3)
        yield {"url": url, "tmp": tmp, "runs": runs}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Gradio closes, the training manager stops its trainer
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _kill_trainers(runs)
        log.close()


@pytest.fixture(scope="module")
def page(app: dict) -> Iterator:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 1000})
            pg.set_default_timeout(TIMEOUT_MS)
            sync_api.expect.set_options(timeout=TIMEOUT_MS)
            pg.goto(app["url"])
            yield pg
        finally:
            browser.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _open_tab(page, label: str) -> None:
    page.get_by_role("tab", name=label).click()


def _drag(page, slider, start: float, end: float) -> None:
    """Press on the range track at ``start`` (fraction of its width), drag to ``end``, release."""
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(box["x"] + box["width"] * (start + (end - start) * k / 8), y)
    page.mouse.up()


def _src(page, selector: str) -> str:
    return page.locator(selector).first.get_attribute("src") or ""


def test_photo_tab(page) -> None:
    expect = sync_api.expect
    menu = page.locator("#photo-style input")
    expect(menu).to_have_value(re.compile("^test-style"))
    page.locator("#photo-options button").first.click()
    portrait = page.locator("#photo-portrait input[type=checkbox]")
    portrait.check()
    expect(menu).to_have_value(re.compile("^test-portrait"))  # portrait mode brings its own style ...
    portrait.uncheck()
    expect(menu).to_have_value(re.compile("^test-style"))  # ... and takes it away again
    page.locator("#photo-input input[type=file]").set_input_files(str(REPO / "examples" / "astronaut.jpg"))
    expect(page.locator("#photo-input img").first).to_be_visible()
    page.locator("#photo-run").click()
    expect(page.locator("#photo-result img").first).to_be_visible()
    expect(page.locator("#photo-download a").first).to_be_visible()
    assert "astronaut" in page.locator("#photo-download").inner_text()
    _shot(page, "01-photo")


def test_faces_slider(page) -> None:
    expect = sync_api.expect
    _open_tab(page, "Faces")
    slider = page.locator("#faces-t input[type=range]")
    expect(slider).to_be_visible()
    _drag(page, slider, 0.5, 0.1)
    image = page.locator("#faces-between img").first
    expect(image).to_be_visible()
    page.wait_for_function("() => Number(document.querySelector('#faces-t input[type=range]').value) < 0.2")
    first = _src(page, "#faces-between img")
    assert first
    _shot(page, "02-faces-before")
    _drag(page, slider, 0.1, 0.9)
    page.wait_for_function("(old) => { const i = document.querySelector('#faces-between img');"
                           " return i && i.getAttribute('src') && i.getAttribute('src') !== old; }", arg=first)
    after = _src(page, "#faces-between img")
    assert after != first
    assert float(slider.input_value()) > 0.8
    # The 32 px test face is scaled up to its box on screen, not shown as a speck
    # (Gradio's own 'scale-down' would show it at 32 px inside a wide box.)
    # Read in one go once loaded: a late slider event can swap in a new <img> between two separate calls.
    natural, box, fit = page.wait_for_function(
        "() => { const i = document.querySelector('#faces-between img');"
        " return i && i.complete && i.naturalWidth > 0"
        " ? [i.naturalWidth, i.getBoundingClientRect().width, getComputedStyle(i).objectFit] : null; }").json_value()
    assert natural == 32 and box >= 4 * natural and fit == "contain"
    _shot(page, "03-faces-after")


def _coloured_pixels(png: bytes) -> int:
    """Saturated pixels in a screenshot: the plot's curves (its axes and grid are grey)."""
    import io

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum())


def _status_step(page) -> int:
    match = re.search(r"step (\d+)/", page.locator("#train-status").inner_text())
    return int(match.group(1)) if match else -1


def test_training_tab(page, app: dict) -> None:
    expect = sync_api.expect
    data = _faces_dataset(app["tmp"] / "faces")
    _open_tab(page, "Training")
    page.locator("#train-data textarea, #train-data input").first.fill(str(data))
    page.locator("#train-check").click()
    expect(page.locator("#train-check-result")).to_contain_text("24 readable of 24")
    page.locator("#train-name textarea, #train-name input").first.fill("browser-run")
    for elem, value in (("train-steps", "1000"), ("train-size", "16"), ("train-batch", "4")):
        page.locator(f"#{elem} input").fill(value)
    page.locator("#train-more").get_by_text("More settings").click()
    page.locator("#train-sample-every input").fill("5")
    _shot(page, "04-training-settings")
    page.locator("#train-start").click()

    expect(page.locator("#train-status")).to_contain_text("running", timeout=90_000)
    expect(page.locator("#train-sample img").first).to_be_visible()
    plot = page.locator("#train-plot")
    expect(plot.locator("canvas, svg").first).to_be_visible()
    page.wait_for_function("() => /step [1-9]\\d+\\//.test(document.querySelector('#train-status').innerText)")
    step_a = _status_step(page)
    plot_a = plot.screenshot()
    assert _coloured_pixels(plot_a) > 100, "no loss curves drawn"
    _shot(page, "05-training-running")
    # A second browser tab sees the same live run.
    other = page.context.browser.new_page(viewport={"width": 1280, "height": 1000})
    other.goto(app["url"])
    _open_tab(other, "Training")
    expect(other.locator("#train-status")).to_contain_text("browser-run")
    expect(other.locator("#train-status")).to_contain_text("running")
    other.close()
    page.wait_for_function("(s) => { const m = /step (\\d+)\\//.exec(document.querySelector('#train-status').innerText);"
                           " return m && Number(m[1]) >= s + 10; }", arg=step_a)
    assert plot.screenshot() != plot_a, "the loss plot did not change as steps were logged"

    page.locator("#train-stop").click()
    expect(page.locator("#train-status")).to_contain_text("stopped", timeout=90_000)
    status = json.loads((app["runs"] / "browser-run" / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] >= step_a
    assert list((app["runs"] / "browser-run" / "checkpoints").glob("step_*.pt"))
    _shot(page, "06-training-stopped")

    page.locator("#train-export-name textarea, #train-export-name input").first.fill("browser-faces")
    page.locator("#train-export").click()
    expect(page.locator("#train-export-result")).to_contain_text("browser-faces")
    assert (app["tmp"] / "weights" / "browser-faces.safetensors").is_file()
    _shot(page, "07-training-exported")
    # A fresh page load lists the exported weights in the Faces tab without restarting the app.
    page.reload()
    _open_tab(page, "Faces")
    page.locator("#faces-weights input").first.click()
    expect(page.get_by_role("option", name="browser-faces")).to_be_visible()
    _shot(page, "08-faces-lists-exported")
