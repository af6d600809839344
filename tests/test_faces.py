"""Face generators and the faces API: shapes, determinism, interpolation, variety, sliders, morphs, CLI."""
from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from animegan.errors import AnimeGANError
from animegan.faces import FaceGenerator, latent_for_seed, load_sliders, make_grid, path_latent, slerp
from animegan.models import ARCHITECTURES, architecture_kind, build_model
from animegan.models.dcgan import DCGANDiscriminator, DCGANGenerator, variant_configs


@pytest.mark.parametrize("variant", ["dcgan", "dcgan_improved"])
def test_generator_and_discriminator_shapes(variant: str) -> None:
    for size, latent in ((64, 300), (128, 256)):  # the seeds' latent sizes
        g_cfg, d_cfg = variant_configs(variant, size, g_width=8, d_width=8)
        assert g_cfg.latent_dim == latent
        G, D = DCGANGenerator(g_cfg).eval(), DCGANDiscriminator(d_cfg)
        assert (G.latent_dim, G.image_size) == (latent, size)
        x = G(torch.randn(2, latent))
        assert x.shape == (2, 3, size, size)
        assert x.min() >= -1 and x.max() <= 1
        assert D(x).shape == (2,)
    improved = variant == "dcgan_improved"
    upsampling = [*G.blocks.modules(), *G.to_rgb.modules()]  # the stem maps 1x1 -> 4x4 in both
    assert any(isinstance(m, torch.nn.Upsample) for m in upsampling) == improved
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in upsampling) != improved
    assert any(hasattr(m, "parametrizations") for m in D.modules()) == improved
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules()) != improved


def test_registered_architectures() -> None:
    assert architecture_kind("dcgan") == "faces"
    assert architecture_kind("dcgan_discriminator") == "discriminator"
    assert ARCHITECTURES["dcgan"][1] is DCGANGenerator
    assert build_model("dcgan", {"image_size": 32, "latent_dim": 16, "width": 4}).image_size == 32
    with pytest.raises(ValueError):
        build_model("dcgan", {"image_size": 48})


def _save_tiny(folder: Path, name: str = "tiny", seed: int = 0, upsample: str = "resize") -> Path:
    from animegan.weights import save_weights

    torch.manual_seed(seed)
    G = build_model("dcgan", {"image_size": 32, "latent_dim": 24, "width": 8, "upsample": upsample})
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return save_weights(folder / f"{name}.safetensors", G.state_dict(),
                        {"architecture": "dcgan", "kind": "faces", "config": G.config.__dict__}, dtype=None)


@pytest.fixture
def faces_file(weights_dir: Path) -> Path:
    return _save_tiny(weights_dir)


def test_same_seed_same_face_and_seeds_differ(faces_file: Path) -> None:
    a = FaceGenerator("tiny", device="cpu")
    b = FaceGenerator(faces_file, device="cpu")  # by path, a second instance
    assert (a.latent_dim, a.image_size) == (24, 32)
    f1 = np.asarray(a.face(7))
    assert f1.shape == (32, 32, 3) and f1.dtype == np.uint8
    assert np.array_equal(f1, np.asarray(b.face(7)))
    assert np.array_equal(f1, np.asarray(a.face(7)))
    assert not np.array_equal(f1, np.asarray(a.face(8)))
    assert torch.equal(latent_for_seed(7, 24), latent_for_seed(7, 24))
    # A batch gives the same faces as one at a time (eval-mode batch norm is per sample).
    batch = [np.asarray(im).astype(int) for im in a.faces([7, 8])]
    assert np.abs(batch[0] - f1).max() <= 1


def test_interpolation_endpoints_and_path(faces_file: Path) -> None:
    fg = FaceGenerator("tiny", device="cpu")
    za, zb = fg.latent(3), fg.latent(9)
    assert torch.equal(slerp(za, zb, 0.0), za) and torch.equal(slerp(za, zb, 1.0), zb)
    ua, ub = za / za.norm(), zb / zb.norm()
    mid = slerp(ua, ub, 0.5)  # on the unit sphere, halfway along the great circle
    assert abs(mid.norm() - 1) < 1e-5 and abs(torch.dot(mid, ua) - torch.dot(mid, ub)) < 1e-5
    assert np.array_equal(np.asarray(fg.interpolate([3, 9], 0.0)), np.asarray(fg.face(3)))
    assert np.array_equal(np.asarray(fg.interpolate([3, 9], 1.0)), np.asarray(fg.face(9)))
    # Through three seeds, t=0.5 is the middle seed.
    assert np.array_equal(np.asarray(fg.interpolate([3, 5, 9], 0.5)), np.asarray(fg.face(5)))
    between = np.asarray(fg.interpolate([3, 9], 0.5))
    assert not np.array_equal(between, np.asarray(fg.face(3))) and not np.array_equal(between, np.asarray(fg.face(9)))
    with pytest.raises(AnimeGANError):
        path_latent([za], 0.5)


def test_variety_is_truncation(faces_file: Path) -> None:
    fg = FaceGenerator("tiny", device="cpu")
    assert np.array_equal(np.asarray(fg.face(4, variety=1.0)), np.asarray(fg.face(4)))
    # variety 0 puts every seed on the mean latent: the same 'average' face
    assert np.array_equal(np.asarray(fg.face(1, variety=0.0)), np.asarray(fg.face(2, variety=0.0)))
    d_half = np.abs(np.asarray(fg.face(1, variety=0.5)).astype(int) - np.asarray(fg.face(1, variety=0.0))).mean()
    d_full = np.abs(np.asarray(fg.face(1, variety=1.0)).astype(int) - np.asarray(fg.face(1, variety=0.0))).mean()
    assert 0 < d_half < d_full


def test_sliders_computed_once_cached_and_move_the_face(faces_file: Path, tmp_path: Path) -> None:
    fg = FaceGenerator("tiny", device="cpu")
    s = fg.sliders
    assert s.directions.shape == (5, 24)
    assert torch.allclose(s.directions.norm(dim=1), torch.ones(5), atol=1e-5)
    cached = list((tmp_path / "cache" / "sliders").glob("*.safetensors"))
    assert len(cached) == 1
    again = load_sliders(cached[0], 24)
    assert again is not None and torch.equal(again.directions, s.directions)
    # The first direction is the strongest principal component of the first layer's activations:
    # moving along it changes those activations more than a random unit direction does.
    z = fg.latent(0)[None]
    rand = torch.randn(1, 24, generator=torch.Generator().manual_seed(1))
    rand = rand / rand.norm()
    with torch.no_grad():
        base = fg.net.early_features(z)
        along = (fg.net.early_features(z + 2 * s.directions[:1]) - base).norm()
        random_move = (fg.net.early_features(z + 2 * rand) - base).norm()
    assert along > random_move
    moved = np.asarray(fg.face(0, sliders=[2.0, 0, 0, 0, 0]))
    assert not np.array_equal(moved, np.asarray(fg.face(0)))
    assert np.array_equal(np.asarray(fg.face(0, sliders=[0, 0, 0, 0, 0])), np.asarray(fg.face(0)))
    # Sliders shipped beside the weights win over the cache.
    from animegan.faces import Sliders, save_sliders

    shipped = Sliders(torch.eye(24)[:3], scale=1.0)
    save_sliders(faces_file.with_name("tiny.sliders.safetensors"), shipped)
    assert torch.equal(FaceGenerator("tiny", device="cpu").sliders.directions, shipped.directions)


def test_grid_and_morph_files(faces_file: Path, tmp_path: Path) -> None:
    fg = FaceGenerator("tiny", device="cpu")
    grid = fg.grid(range(6), cols=3)
    assert grid.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2)
    assert make_grid([Image.new("RGB", (8, 8))] * 5).size == (3 * 8 + 8, 2 * 8 + 6)
    gif = fg.save_morph([1, 2, 3], tmp_path / "m.gif", frames=10, size=None, loop=False)
    frames = imageio.mimread(gif)
    assert len(frames) == 10 and frames[0].shape[:2] == (32, 32)
    assert np.abs(frames[0][..., :3].astype(int) - np.asarray(fg.face(1))).max() <= 1
    mp4 = fg.save_morph([1, 2], tmp_path / "m.mp4", frames=12, size=64)
    reader = imageio.get_reader(mp4)
    assert reader.get_data(0).shape == (64, 64, 3)
    reader.close()
    assert not list(tmp_path.glob(".*part*"))  # atomic: no temporary files left
    with pytest.raises(AnimeGANError):
        fg.save_morph([1, 2], tmp_path / "m.avi")
    # A typed list of thousands of seeds, or a huge frame count, is refused before any work
    with pytest.raises(AnimeGANError, match="at most 64 seeds"):
        fg.save_morph(list(range(65)), tmp_path / "big.gif")
    with pytest.raises(AnimeGANError, match="at most 64 seeds"):
        fg.morph_frames([1, 2], frames=100_000)
    assert not (tmp_path / "big.gif").exists()


def test_style_weights_are_not_a_face_generator(style: str) -> None:
    with pytest.raises(AnimeGANError, match="not a face generator"):
        FaceGenerator(style, device="cpu")


def test_faces_cli_writes_same_faces_for_same_seeds(faces_file: Path, tmp_path: Path) -> None:
    from animegan.cli import main

    assert main(["faces", "--weights", "tiny", "--count", "3", "--out", str(tmp_path / "a"),
                 "--grid", str(tmp_path / "g.png"), "--morph", "1,2", "--morph-out", str(tmp_path / "m.gif"),
                 "--frames", "4"]) == 0
    assert len(imageio.mimread(tmp_path / "m.gif")) == 4
    assert main(["faces", "--weights", str(faces_file), "--count", "2", "--seed-start", "1",
                 "--out", str(tmp_path / "b")]) == 0
    a = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert a == ["seed_00000000.png", "seed_00000001.png", "seed_00000002.png"]
    for name in ("seed_00000001.png", "seed_00000002.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / name)), np.asarray(Image.open(tmp_path / "b" / name)))
    assert Image.open(tmp_path / "g.png").size[0] > 64
    assert main(["faces", "--weights", "nope", "--count", "1", "--out", str(tmp_path / "c")]) == 2


def test_faces_tab_builds_with_and_without_weights(weights_dir: Path) -> None:
    import gradio as gr

    from animegan.ui import faces as tab

    with gr.Blocks():
        tab.build_tab()  # no weights: builds and explains
    with pytest.raises(gr.Error):
        tab.face_image(None, 1, 1.0)
    _save_tiny(weights_dir)
    with gr.Blocks():
        tab.build_tab()
    img = tab.interpolation_image("tiny", 1, 2, 0.0, 1.0, 0, 0, 0, 0, 0)
    assert np.array_equal(np.asarray(Image.open(img)), np.asarray(FaceGenerator("tiny", device="cpu").face(1)))
    with pytest.raises(gr.Error):
        tab.face_image("tiny", -3, 1.0)


def test_faces_tab_takes_listed_weights_or_hub_ids_never_paths(weights_dir: Path) -> None:
    """The weights box accepts typed values (for hub ids), so a client must not be able to name server files."""
    import gradio as gr

    from animegan.ui import faces as tab

    _save_tiny(weights_dir)
    assert np.asarray(Image.open(tab.face_image("tiny", 1, 1.0))).shape[-1] == 3
    with pytest.raises(gr.Error, match="unknown face weights"):
        tab.face_image(str(weights_dir / "tiny.safetensors"), 1, 1.0)
    with pytest.raises(gr.Error, match="hub:alice/faces"):  # goes to the Hub loader: offline, not cached
        tab.face_image("hub:alice/faces", 1, 1.0)
    # On each page load the menu is read again, so weights exported while the app runs show up.
    assert "tiny" in tab.refresh_weights()["choices"]


def test_the_same_face_for_two_sessions_is_two_files(weights_dir: Path) -> None:
    """Gradio rewrites a PIL result in place at a path named by its content, which cut off a download
    when two sessions made the same picture at once; each result is its own file instead."""
    from animegan.ui import faces as tab

    _save_tiny(weights_dir)
    first, second = tab.face_image("tiny", 7, 1.0), tab.face_image("tiny", 7, 1.0)
    assert first != second and Path(first).read_bytes() == Path(second).read_bytes()


def test_faces_tab_opens_with_a_face(weights_dir: Path) -> None:
    """The page-load hook fills the menu and shows the default seed's face and the A-B midpoint."""
    from animegan.ui import faces as tab

    menu, (face, between) = tab.refresh_weights(), tab.first_faces()
    assert menu["value"] is None and face is None and between is None  # no weights: nothing to show, no error
    _save_tiny(weights_dir)
    menu, (face, between) = tab.refresh_weights(), tab.first_faces()
    gen = FaceGenerator("tiny", device="cpu")
    assert menu["value"] == "tiny"
    assert np.array_equal(np.asarray(Image.open(face)), np.asarray(gen.face(tab.SEED)))
    assert np.array_equal(np.asarray(Image.open(between)), np.asarray(gen.interpolate([tab.SEED_A, tab.SEED_B], tab.T)))


def test_the_best_fid_is_the_default_face_model(weights_dir: Path) -> None:
    from animegan.cli import main
    from animegan.faces import face_weights
    from animegan.weights import update_metadata

    for name, fid in (("a-unmeasured", None), ("b-worse", 80.0), ("c-better", 30.5)):
        path = _save_tiny(weights_dir, name, seed=len(name))
        if fid is not None:
            update_metadata(path, {"metrics": {"fid": fid}})
    assert face_weights() == ["c-better", "b-worse", "a-unmeasured"]
    out = weights_dir.parent / "faces"
    assert main(["faces", "--count", "1", "--out", str(out), "--device", "cpu"]) == 0
    expected = np.asarray(FaceGenerator("c-better", device="cpu").face(0))
    with Image.open(next(out.glob("*.png"))) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), expected)


def test_the_first_faces_of_a_page_load_take_the_model_slot() -> None:
    """They run the network, so they queue for the one model slot like every other face event."""
    from animegan.ui import build_app
    from animegan.ui.common import MODEL_SLOT

    (load,) = [fn for fn in build_app().fns.values() if fn.name == "first_faces"]
    assert load.targets[0][1] == "load" and load.queue and load.concurrency_id == MODEL_SLOT
