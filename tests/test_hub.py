"""Hugging Face Hub sharing: ids, the cache the Hub fills, metadata before weights, upload folders.

Nothing here reaches the network: downloads run the real ``hf_hub_download`` against a cache
laid out by hand (``models--USER--NAME/{blobs,snapshots/<commit>,refs/main}``) in offline mode,
and pushes stop at the prepared folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan import hub
from animegan.cli import main
from animegan.errors import AnimeGANError
from animegan.weights import build_from_weights, identity, load_weights, save_weights

from conftest import REPO, gradient_image, make_v2_generator

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------
@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache, offline, with no token anywhere."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(hfc, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"), raising=False)
    return cache


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _tiny_face_run(tmp_path: Path, out: Path, steps: int) -> None:
    """A real face training run of a few steps on pictures made here."""
    from train.faces import FaceTrainConfig, train

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(gradient_image(20, 20, seed=i)).save(data / f"{i}.png")
    cfg = FaceTrainConfig(data=str(data), arch="dcgan", image_size=16, latent_dim=8, g_width=8, d_width=8,
                          batch_size=2, steps=steps, log_every=1, sample_every=100, checkpoint_every=1, sample_count=4)
    assert train(cfg, out, device="cpu", verbose=False) == 0


def put_in_cache(cache: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main") -> Path:
    """Lay files out as huggingface_hub stores them: blobs by hash, snapshot symlinks, a ref."""
    root = cache / f"models--{repo.replace('/', '--')}"
    for rel, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(rel.split("/")) + 1)) / "blobs" / blob.name)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return root / "snapshots" / commit


def style_files(tmp_path: Path, seed: int = 0, **meta_changes) -> dict[str, bytes]:
    """model.safetensors + model.json of a small real AnimeGANv2 style (fp32)."""
    path = save_weights(tmp_path / f"src{seed}" / "model.safetensors", make_v2_generator(seed).state_dict(),
                        {"architecture": "animeganv2", "kind": "style", "description": "hub test style"}, dtype=None)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta.update(meta_changes)
    return {"model.safetensors": path.read_bytes(), "model.json": json.dumps(meta).encode()}


def face_weights(folder: Path) -> Path:
    from animegan.models import build_model

    torch.manual_seed(0)
    net = build_model("dcgan", {"image_size": 16, "latent_dim": 8, "width": 8, "max_channels": 16})
    return save_weights(folder / "tinyfaces.safetensors", net.state_dict(),
                        {"architecture": "dcgan", "kind": "faces", "config": {"image_size": 16, "latent_dim": 8,
                                                                              "width": 8, "max_channels": 16},
                         "description": "tiny test faces", "training_data": {"folder": "/data/faces", "images": 10},
                         "steps": 3, "metrics": {"fid": 123.5, "kid": 0.0812},
                         "licence": "research only", "run": "/home/someone/runs/faces"})


# ----------------------------------------------------------------------------------------
# Hub ids
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, repo, filename, revision", [
    ("hub:alice/paprika", "alice/paprika", "model.safetensors", None),
    ("  hub:alice/paprika@v1.0 ", "alice/paprika", "model.safetensors", "v1.0"),
    ("hub:org-x/my_style.2/weights/b.safetensors", "org-x/my_style.2", "weights/b.safetensors", None),
    ("hub:alice/paprika/other.safetensors@" + COMMIT, "alice/paprika", "other.safetensors", COMMIT),
    ("hub:alice/paprika@refs/pr/3", "alice/paprika", "model.safetensors", "refs/pr/3"),
])
def test_parse_hub_id(text: str, repo: str, filename: str, revision: str | None) -> None:
    hid = hub.parse_hub_id(text)
    assert (hid.repo_id, hid.filename, hid.revision) == (repo, filename, revision)
    assert hub.parse_hub_id(str(hid)) == hid  # the printed form parses back
    assert hid.metadata_filename == filename[: -len(".safetensors")] + ".json"


@pytest.mark.parametrize("text, says", [
    ("hub:", "expected hub:USER/NAME"),
    ("hub:paprika", "expected hub:USER/NAME"),
    ("hub:/paprika", "expected hub:USER/NAME"),
    ("hub:alice/paprika/model.pt", "must be a .safetensors"),
    ("hub:alice/paprika/../x.safetensors", "not a file path"),
    ("hub:alice/pap rika", "bad Hub repository"),
    ("hub:al--ice/paprika", "bad Hub repository"),
    ("hub:alice/paprika@", "not a branch, tag or commit"),
    ("hub:alice/paprika@v1/x.safetensors", "put the revision last"),
    ("alice/paprika", "expected hub:USER/NAME"),
])
def test_bad_hub_ids_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(AnimeGANError, match=says.replace("(", r"\(")):
        hub.parse_hub_id(text)


@pytest.mark.parametrize("repo", ["alice", "alice/b/c", "/x", "a/.b.", ""])
def test_bad_push_repos_are_refused(repo: str) -> None:
    with pytest.raises(AnimeGANError, match="bad Hub repository"):
        hub.parse_repo_id(repo)


# ----------------------------------------------------------------------------------------
# Pull: through the real hf_hub_download, from a cache laid out by hand
# ----------------------------------------------------------------------------------------
def test_load_style_from_the_hub_cache_offline(hf_cache: Path, tmp_path: Path, no_network: None) -> None:
    files = style_files(tmp_path)
    snapshot = put_in_cache(hf_cache, "alice/paprika", files)
    weights = load_weights("hub:alice/paprika", kind="style")
    assert Path(weights.source) == snapshot / "model.safetensors"
    assert weights.kind == "style" and weights.metadata["description"] == "hub test style"
    model = build_from_weights(weights)
    reference = make_v2_generator(0)
    x = torch.from_numpy(gradient_image(40, 32)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))  # the same network, tensor for tensor
    # The cache key follows the cached file, without any request.
    assert identity("hub:alice/paprika").startswith("hub:alice/paprika:" + str((snapshot / "model.safetensors").resolve()))


def test_stylize_accepts_a_hub_name(hf_cache: Path, tmp_path: Path, no_network: None) -> None:
    from animegan.stylize import Stylizer

    put_in_cache(hf_cache, "alice/paprika", style_files(tmp_path))
    photo = gradient_image(48, 40)
    out = Stylizer("hub:alice/paprika", device="cpu", half=False).run_arrays([photo], tile=0)[0]
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = ((make_v2_generator(0)(x) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert out.shape == photo.shape and np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_revision_and_file_name_pick_the_right_weights(hf_cache: Path, tmp_path: Path) -> None:
    old, new = "a" * 40, "b" * 40
    put_in_cache(hf_cache, "alice/paprika", style_files(tmp_path, seed=1), commit=old, ref="v1")
    put_in_cache(hf_cache, "alice/paprika", style_files(tmp_path, seed=2), commit=new, ref="main")
    pinned = load_weights("hub:alice/paprika@v1")
    latest = load_weights("hub:alice/paprika")
    assert old in pinned.source and new in latest.source
    key = next(iter(pinned.state_dict))
    assert torch.equal(pinned.state_dict[key], make_v2_generator(1).state_dict()[key])
    assert not torch.equal(pinned.state_dict[key], latest.state_dict[key])
    assert old in load_weights(f"hub:alice/paprika@{old}").source  # a commit hash directly
    other = {"extra/b.safetensors": style_files(tmp_path, seed=3)["model.safetensors"]}
    put_in_cache(hf_cache, "bob/styles", other)  # no JSON: the header's metadata is used
    assert load_weights("hub:bob/styles/extra/b.safetensors").kind == "style"


def test_not_cached_offline_is_a_clear_error(hf_cache: Path, no_network: None) -> None:
    with pytest.raises(AnimeGANError, match="not in the local Hugging Face cache.*offline|downloads are off"):
        load_weights("hub:alice/never-downloaded")


def test_metadata_is_checked_before_the_weights_are_downloaded(hf_cache: Path, tmp_path: Path) -> None:
    files = style_files(tmp_path, kind="faces", architecture="dcgan", config={})
    # Only the JSON is cached: had the weights been asked for, the error would say "not cached".
    put_in_cache(hf_cache, "alice/faces", {"model.json": files["model.json"]})
    with pytest.raises(AnimeGANError, match="holds a 'faces' model, not a photo-to-anime style"):
        load_weights("hub:alice/faces", kind="style")
    # Weights present but unreadable: the metadata refusal still comes first.
    put_in_cache(hf_cache, "alice/faces2", {"model.json": files["model.json"], "model.safetensors": b"not weights"})
    with pytest.raises(AnimeGANError, match="not a photo-to-anime style"):
        load_weights("hub:alice/faces2", kind="style")
    with pytest.raises(AnimeGANError, match="not a readable safetensors"):
        load_weights("hub:alice/faces2")  # no kind asked: metadata passes, then the file is refused


@pytest.mark.parametrize("json_bytes, says", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"format": "animegan-weights/9", "architecture": "animeganv2"}).encode(), "this version reads"),
    (json.dumps({"format": "animegan-weights/1", "architecture": "resnet9000"}).encode(), "unknown architecture"),
    (json.dumps({"format": "animegan-weights/1", "architecture": "animeganv2", "config": {"wings": 2}}).encode(),
     "bad architecture config"),
    (json.dumps({"format": "animegan-weights/1", "architecture": "dcgan_upscaled",
                 "config": {"generator": {"wings": 2}, "upscaler": {}}}).encode(), "bad architecture config"),
    (json.dumps({"format": "animegan-weights/1", "architecture": "dcgan_upscaled",
                 "config": {"generator": {}, "upscaler": [32]}}).encode(), "bad architecture config"),
    (json.dumps({"format": "animegan-weights/1", "architecture": "animeganv2", "kind": "faces"}).encode(),
     "architecture 'animeganv2' is a 'style' network"),
    (json.dumps({"format": "animegan-weights/1", "architecture": "patch_discriminator"}).encode(),
     "not a style or face model"),
    (json.dumps(["animeganv2"]).encode(), "not a JSON object"),
])
def test_bad_metadata_is_refused(hf_cache: Path, json_bytes: bytes, says: str) -> None:
    put_in_cache(hf_cache, "alice/bad", {"model.json": json_bytes, "model.safetensors": b"never read"})
    with pytest.raises(AnimeGANError, match=says):
        load_weights("hub:alice/bad")


# ----------------------------------------------------------------------------------------
# Push: the upload folder and the model card, no network
# ----------------------------------------------------------------------------------------
def test_upload_folder_for_a_style(style: str, tmp_path: Path) -> None:
    examples = sorted((REPO / "examples").glob("*.jpg"))[:2]
    if not examples:
        pytest.skip("examples/ is absent")
    folder = hub.prepare_upload(style, tmp_path / "up", "alice/test-style", sample_size=32, examples=examples)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.json", "model.safetensors", "sample.png"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["kind"] == "style" and meta["architecture"] == "animeganv2"
    # The uploaded file rebuilds the same network from its own header.
    from animegan.metadata import _header_metadata

    shutil.move(folder / "model.json", tmp_path / "moved.json")
    assert _header_metadata(folder / "model.safetensors")["architecture"] == "animeganv2"
    a, b = load_weights(str(folder / "model.safetensors")), load_weights(style)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in b.state_dict)
    # Sample grid: a row of photos over a row of their stylizations.
    grid = Image.open(folder / "sample.png")
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)
    arr = np.asarray(grid).astype(int)
    top, bottom = arr[2:34, 2:34], arr[36:68, 2:34]
    assert np.abs(top - bottom).mean() > 3  # the style changed the photo
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: anime-studio" in front and "license: other" in front and "pipeline_tag: image-to-image" in front
    for needed in ("# test-style", "animeganv2", "--style hub:alice/test-style", 'style="hub:alice/test-style"',
                   "## Training data", "## Metrics", "## Licence", "![sample](sample.png)", "HF_HUB_OFFLINE=1",
                   "measured on the sample images"):
        assert needed in body, needed
    params = sum(t.numel() for t in b.state_dict.values())
    assert f"| parameters | {params:,} |" in body


def test_upload_folder_for_faces(weights_dir: Path, tmp_path: Path) -> None:
    path = face_weights(weights_dir)
    folder = hub.prepare_upload(path, tmp_path / "up", "alice/tiny-faces")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.json", "model.safetensors", "sample.png"]
    meta = json.loads((folder / "model.json").read_text())
    assert "run" not in meta and meta["training_data"]["images"] == 10  # local run path not published
    grid = Image.open(folder / "sample.png")
    assert grid.size == (4 * 16 + 5 * 2, 4 * 16 + 5 * 2)  # seeds 0..15, 4 x 4
    from animegan.faces import FaceGenerator

    expected = FaceGenerator(path, device="cpu", half=False).face(5)
    cell = np.asarray(grid)[2 + 16 + 2: 2 + 32 + 2, 2: 2 + 16]  # seed 5: row 1, column 1
    assert np.abs(cell.astype(int) - np.asarray(expected).astype(int)).max() <= 1
    card = (folder / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "pipeline_tag: unconditional-image-generation" in front
    assert "model-index" in front and "value: 123.5" in front and "- fid" in front
    for needed in ("FID (lower is better) | 123.5", "KID (lower is better) | 0.0812", "research only",
                   "--weights hub:alice/tiny-faces", 'FaceGenerator("hub:alice/tiny-faces")', "Seeds 0 to 15"):
        assert needed in card, needed


def test_push_dry_run_writes_the_folder_without_network(style: str, tmp_path: Path, hf_cache: Path,
                                                        monkeypatch: pytest.MonkeyPatch, no_network: None,
                                                        capsys: pytest.CaptureFixture) -> None:
    import huggingface_hub

    def forbidden(*args, **kwargs):
        raise AssertionError("HfApi was called in a dry run")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", forbidden)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", forbidden)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setattr(hub, "EXAMPLES_DIR", tmp_path / "no-examples")  # keep it quick: no sample images
    out = tmp_path / "dry"
    assert main(["push", style, "--repo", "alice/test-style", "--dry-run", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"README.md", "model.json", "model.safetensors"}
    assert "No sample images" in (out / "README.md").read_text()
    assert "model.safetensors" in capsys.readouterr().out
    assert main(["push", style, "--repo", "alice/test-style", "--dry-run", str(out)]) == 2  # not empty now
    assert "not empty" in capsys.readouterr().err


def test_push_errors_are_one_line(style: str, tmp_path: Path, hf_cache: Path, no_network: None,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    assert not hub.token_available()
    assert main(["push", style, "--repo", "alice/test-style"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    assert hub.token_available()
    with pytest.raises(AnimeGANError, match="offline"):
        hub.push_weights(style, "alice/test-style")
    assert main(["push", style, "--repo", "alice/test-style", "--private"]) == 2
    assert "cannot push while offline" in capsys.readouterr().err
    for source, says in [("hub:alice/x", "already on the Hub"), (str(tmp_path), "not a training run"),
                         ("nonesuch", "no such weights file")]:
        assert main(["push", source, "--repo", "alice/x", "--dry-run", str(tmp_path / "d")]) == 2
        assert says in capsys.readouterr().err
    assert main(["push", style, "--repo", "alice", "--dry-run", str(tmp_path / "d")]) == 2
    assert "expected USER/NAME" in capsys.readouterr().err


def test_pushed_folder_loads_back_through_the_hub_cache(style: str, tmp_path: Path, hf_cache: Path) -> None:
    """What push uploads is what pull accepts: lay the prepared folder out as the Hub would serve it."""
    folder = hub.prepare_upload(style, tmp_path / "up", "alice/round-trip", examples=[])
    put_in_cache(hf_cache, "alice/round-trip", {p.name: p.read_bytes() for p in folder.iterdir()})
    again = load_weights("hub:alice/round-trip", kind="style")
    original = load_weights(style)
    assert all(torch.equal(again.state_dict[k], original.state_dict[k]) for k in original.state_dict)


def test_on_zerogpu_work_runs_under_spaces_gpu_and_video_ends_before_its_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in for Hugging Face's ``spaces`` package (installed only on Spaces)."""
    import sys
    import types

    from animegan import spaces_gpu
    from animegan.ui import common

    import importlib.util

    if "spaces" in sys.modules or importlib.util.find_spec("spaces") is not None:
        pytest.skip("the real spaces package is installed here")
    calls: list[object] = []

    def GPU(fn=None, *, duration=None):  # noqa: N802 - the package's own name
        def wrap(f):
            def run(*args, **kwargs):
                calls.append(duration)
                return f(*args, **kwargs)
            return run
        return wrap(fn) if fn is not None else wrap

    sys.modules["spaces"] = types.SimpleNamespace(GPU=GPU)  # type: ignore[assignment]
    spaces_gpu._spaces.cache_clear()
    try:
        assert spaces_gpu.on_spaces()
        assert spaces_gpu.gpu(lambda x: x + 1)(1) == 2 and spaces_gpu.gpu(duration=90)(lambda: 7)() == 7
        assert calls == [None, 90]
        seen: list[float | None] = []
        monkeypatch.setattr(common, "time_limit", lambda limit, what: (seen.append(limit), contextlib.nullcontext())[1])
        monkeypatch.setitem(common.TIME_LIMITS_S, "video", 1800)
        common.time_limited("video", gpu_duration=240)(lambda: None)()
        common.time_limited("video")(lambda: None)()
        assert seen == [230, 1800]
    finally:
        del sys.modules["spaces"]
        spaces_gpu._spaces.cache_clear()
    assert not spaces_gpu.on_spaces()


def test_gpu_decorator_is_a_no_op_without_spaces() -> None:
    from animegan.spaces_gpu import gpu, on_spaces

    if on_spaces():
        pytest.skip("the spaces package is installed here")

    def f(x: int) -> int:
        return x + 1

    assert gpu(f) is f and gpu(duration=30)(f) is f


def test_push_a_face_training_run_and_pull_it_back(tmp_path: Path, hf_cache: Path, weights_dir: Path,
                                                   no_network: None) -> None:
    """A run folder is exported by its trainer first; what is uploaded loads back by its hub id."""
    from animegan.faces import FaceGenerator

    _tiny_face_run(tmp_path, tmp_path / "run", steps=2)
    out = tmp_path / "up"
    assert main(["push", str(tmp_path / "run"), "--repo", "alice/run-faces", "--name", "runfaces",
                 "--dry-run", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "model.json", "model.safetensors", "model.sliders.safetensors", "sample.png"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["name"] == "runfaces" and meta["kind"] == "faces" and meta["steps"] == 2
    put_in_cache(hf_cache, "alice/run-faces", {p.name: p.read_bytes() for p in out.iterdir()})
    pulled = FaceGenerator("hub:alice/run-faces", device="cpu", half=False)
    assert pulled.source is not None and pulled.source.with_name("model.sliders.safetensors").is_file()
    local = FaceGenerator(out / "model.safetensors", device="cpu", half=False)
    assert np.array_equal(np.asarray(pulled.face(3)), np.asarray(local.face(3)))
    with pytest.raises(AnimeGANError, match="not a photo-to-anime style"):
        load_weights("hub:alice/run-faces", kind="style")


def test_training_tab_offers_the_push_once_a_token_is_set(tmp_path: Path, hf_cache: Path, no_network: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The Training tab's share box: it says what is missing, and refuses clearly without a token or offline."""
    import gradio as gr

    import animegan.training as training
    from animegan.ui import training as tab

    monkeypatch.setattr(training, "_MANAGER", training.TrainingManager(tmp_path / "runs"))
    _tiny_face_run(tmp_path, tmp_path / "runs" / "tiny", steps=1)

    assert "HF_TOKEN" in tab.hub_hint()
    with pytest.raises(gr.Error, match="no Hugging Face token"):
        tab.push_run("tiny", "alice/tiny-faces", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    assert "token is set" in tab.hub_hint()
    with pytest.raises(gr.Error, match="cannot push while offline"):
        tab.push_run("tiny", "alice/tiny-faces", False)
    with pytest.raises(gr.Error, match="repository"):
        tab.push_run("tiny", "not a repo", False)
    with pytest.raises(gr.Error, match="no such run|not a run|escape|run name"):
        tab.push_run("../outside", "alice/tiny-faces", False)


def test_published_metadata_names_data_folders_without_local_paths() -> None:
    meta = json.loads((Path(__file__).resolve().parents[1] / "weights" / "faces64.json").read_text())
    meta["run"] = "/home/alice/runs/faces64"
    published = hub.public_metadata(meta)
    text = json.dumps(published)
    assert "shared/data" in json.dumps(meta) and "/" not in json.dumps(published["training_data"])
    assert "run" not in published and "home/alice" not in text
    assert published["training_data"]["folder"] == "anime_faces"
    assert published["training_data"]["training_config"]["data"] == "anime_faces"
    assert published["metrics"] == meta["metrics"] and published["config"] == meta["config"]
    assert hub.public_metadata({"training_data": {"folder": "C:\\Users\\bob\\pics\\"}})["training_data"] == {
        "folder": "pics"}
    # A 128 px face model names the 64 px generator and any warm start it trained with: by file name only.
    meta = json.loads((Path(__file__).resolve().parents[1] / "weights" / "faces128.json").read_text())
    meta["training_data"]["upscaler"]["training_config"].update(generator="/home/alice/w/faces64.safetensors",
                                                                init_from="/home/alice/w/old.safetensors")
    published = hub.public_metadata(meta)
    assert "home/alice" not in json.dumps(published) and "/" not in json.dumps(published["training_data"])
    upscaler = published["training_data"]["upscaler"]["training_config"]
    assert (upscaler["generator"], upscaler["init_from"]) == ("faces64.safetensors", "old.safetensors")
    assert published["config"] == meta["config"] and published["metrics"] == meta["metrics"]
    # A style's training data and warm start are a path when a user's export wrote them (its --data and
    # --init-from as given), or a description (the shipped styles'): only the path is cut.
    meta = json.loads((Path(__file__).resolve().parents[1] / "weights" / "portrait-anime.json").read_text())
    assert hub.public_metadata(meta)["training_data"] == meta["training_data"] and " " in meta["training_data"]
    meta.update(training_data="/home/alice/my photos/set", warm_start="C:\\Users\\bob\\w\\old.safetensors")
    published = hub.public_metadata(meta)
    assert (published["training_data"], published["warm_start"]) == ("set", "old.safetensors")
    assert hub.public_metadata({"warm_start": "runs/mine/x.safetensors"})["warm_start"] == "x.safetensors"


def test_readme_front_matter_makes_a_gradio_space() -> None:
    """Spaces read the README's front matter: the SDK, a Gradio version the requirements admit, the app file."""
    import re

    repo = Path(__file__).resolve().parents[1]
    front = (repo / "README.md").read_text().split("---\n")[1]
    fields = dict(re.findall(r"^(\w+):\s*\"?([^\"\n]*)\"?$", front, re.M))
    assert fields["sdk"] == "gradio" and (repo / fields["app_file"]).is_file()
    major, minor, _ = (int(x) for x in fields["sdk_version"].split("."))
    pin = re.search(r"^gradio>=(\d+)\.(\d+),<(\d+)", (repo / "requirements.txt").read_text(), re.M)
    assert pin and (int(pin[1]), int(pin[2])) <= (major, minor) and major < int(pin[3])
    assert re.fullmatch(r"3\.\d+", fields["python_version"]) and len(fields["short_description"]) <= 60


def test_a_hub_file_too_large_for_any_model_is_never_downloaded(hf_cache: Path, tmp_path: Path, no_network: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A typed hub: id on a shared app must not make the server fetch gigabytes (sizes asked with one HEAD)."""
    import types

    import huggingface_hub

    import huggingface_hub.constants as hfc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ANIMEGAN_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)  # read once at import: the suite runs offline
    meta_file = tmp_path / "model.json"
    meta_file.write_text(json.dumps({"format": "animegan-weights/1", "kind": "style", "architecture": "animeganv2"}))
    sizes = {"model.json": meta_file.stat().st_size, "model.safetensors": 5 << 30}
    fetched: list[str] = []

    def head(url: str, **kwargs):
        return types.SimpleNamespace(size=sizes[url.rsplit("/", 1)[-1]])

    def download(repo_id: str, filename: str, **kwargs) -> str:
        fetched.append(filename)
        assert filename == "model.json", f"{filename} was downloaded"
        return str(meta_file)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", head)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(AnimeGANError, match="model.safetensors is 5,120 MiB, more than the 1,024 MiB"):
        hub.hub_weights_path("hub:alice/huge")
    assert fetched == ["model.json"]
    sizes["model.json"] = 100 << 20  # an oversized metadata file is refused too
    with pytest.raises(AnimeGANError, match="model.json is 100 MiB"):
        hub.hub_weights_path("hub:alice/huge")
