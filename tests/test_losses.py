"""Every loss of train.losses against a hand computation (explicit loops) on small tensors."""
from __future__ import annotations

import math

import pytest
import torch

from animegan.errors import AnimeGANError
from train import losses as L


def _t(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# -- adversarial ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lsgan", "hinge", "bce"])
def test_adversarial_terms_match_hand_formulas(kind: str) -> None:
    x = _t(2, 1, 3, 3, seed=1) * 2
    vals = x.flatten().tolist()
    n = len(vals)
    if kind == "lsgan":
        real = sum((v - 1) ** 2 for v in vals) / n
        fake = sum(v ** 2 for v in vals) / n
        gen = real
    elif kind == "hinge":
        real = sum(max(0.0, 1 - v) for v in vals) / n
        fake = sum(max(0.0, 1 + v) for v in vals) / n
        gen = -sum(vals) / n
    else:
        real = sum(-math.log(_sig(v)) for v in vals) / n
        fake = sum(-math.log(1 - _sig(v)) for v in vals) / n
        gen = real
    assert L.d_real_loss(x, kind).item() == pytest.approx(real, rel=1e-9)
    assert L.d_fake_loss(x, kind).item() == pytest.approx(fake, rel=1e-9)
    assert L.g_adv_loss(x, kind).item() == pytest.approx(gen, rel=1e-9)


def test_discriminator_loss_weighs_the_four_kinds() -> None:
    r, f, g, s = (_t(2, 1, 2, 2, seed=i) for i in range(4))
    expected = (1.2 * ((r - 1) ** 2).mean() + 1.2 * (f ** 2).mean() + 1.2 * (g ** 2).mean()
                + 0.8 * (s ** 2).mean())
    assert L.d_adv_loss(r, f, g, s).item() == pytest.approx(expected.item(), rel=1e-12)
    w = (1.0, 2.0, 3.0, 4.0)
    hinge = (1.0 * torch.relu(1 - r).mean() + 2 * torch.relu(1 + f).mean() + 3 * torch.relu(1 + g).mean()
             + 4 * torch.relu(1 + s).mean())
    assert L.d_adv_loss(r, f, g, s, "hinge", w).item() == pytest.approx(hinge.item(), rel=1e-12)


def test_unknown_gan_loss_is_a_clear_error() -> None:
    with pytest.raises(AnimeGANError, match="wgan"):
        L.g_adv_loss(torch.zeros(1), "wgan")


# -- content and style ----------------------------------------------------------------------
def test_content_loss_is_mean_absolute_difference() -> None:
    a, b = _t(2, 3, 2, 2, seed=1), _t(2, 3, 2, 2, seed=2)
    flat_a, flat_b = a.flatten().tolist(), b.flatten().tolist()
    hand = sum(abs(x - y) for x, y in zip(flat_a, flat_b)) / len(flat_a)
    assert L.content_loss(a, b).item() == pytest.approx(hand, rel=1e-12)


def _hand_gram(f: torch.Tensor) -> list[list[list[float]]]:
    n, c, h, w = f.shape
    out = []
    for i in range(n):
        g = [[0.0] * c for _ in range(c)]
        for c1 in range(c):
            for c2 in range(c):
                s = 0.0
                for y in range(h):
                    for x in range(w):
                        s += float(f[i, c1, y, x]) * float(f[i, c2, y, x])
                g[c1][c2] = s / (c * h * w)
        out.append(g)
    return out


def test_gram_is_per_sample_and_normalised_by_chw() -> None:
    f = _t(2, 3, 2, 3, seed=3)
    got = L.gram(f)
    assert got.shape == (2, 3, 3)
    assert torch.allclose(got.double(), torch.tensor(_hand_gram(f), dtype=torch.float64), atol=1e-6)


def test_gram_and_yuv_stay_in_full_precision_under_autocast() -> None:
    # The trainer runs its G step under bf16 autocast on GPUs; CPU autocast downcasts bmm and einsum the same way.
    f, x = _t(2, 8, 6, 6, seed=6) * 3, torch.rand(2, 3, 4, 4) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, yuv = L.gram(f), L.rgb_to_yuv(x)
    assert g.dtype == torch.float32 and yuv.dtype == torch.float32
    assert torch.allclose(g, L.gram(f), rtol=1e-6, atol=0) and torch.allclose(yuv, L.rgb_to_yuv(x), rtol=1e-6, atol=0)


def test_style_loss_matches_hand_and_never_mixes_samples() -> None:
    fa, fb = _t(3, 2, 2, 2, seed=4), _t(3, 2, 2, 2, seed=5)
    ga, gb = _hand_gram(fa), _hand_gram(fb)
    per_sample = [sum(abs(ga[i][p][q] - gb[i][p][q]) for p in range(2) for q in range(2)) / 4 for i in range(3)]
    assert L.style_loss(fa, fb).item() == pytest.approx(sum(per_sample) / 3, rel=1e-5)
    # Each sample's term depends only on that sample: changing sample 1 leaves sample 0's term alone.
    changed = fa.clone()
    changed[1] = _t(2, 2, 2, seed=9) * 5
    assert L.style_loss(changed[:1], fb[:1]).item() == pytest.approx(L.style_loss(fa[:1], fb[:1]).item(), rel=1e-12)
    batch = L.style_loss(changed, fb).item()
    alone = [L.style_loss(changed[i:i + 1], fb[i:i + 1]).item() for i in range(3)]
    assert batch == pytest.approx(sum(alone) / 3, rel=1e-5)
    assert batch != pytest.approx(L.style_loss(fa, fb).item(), rel=1e-3)


def test_gray_style_loss_compares_grayscale_output_with_gray_anime() -> None:
    fake, anime = torch.rand(2, 3, 3, 3, dtype=torch.float64) * 2 - 1, torch.rand(2, 3, 3, 3, dtype=torch.float64)
    gray = 0.299 * fake[:, 0] + 0.587 * fake[:, 1] + 0.114 * fake[:, 2]
    gray3 = torch.stack([gray] * 3, 1)
    anime_gray = torch.stack([anime[:, 0]] * 3, 1)
    ga, gb = _hand_gram(gray3), _hand_gram(anime_gray)
    hand = sum(abs(ga[i][p][q] - gb[i][p][q]) for i in range(2) for p in range(3) for q in range(3)) / 18
    identity = lambda x: x  # noqa: E731 - the features of the hand check are the pixels themselves
    assert L.gray_style_loss(identity, fake, anime_gray).item() == pytest.approx(hand, rel=1e-5)


# -- colour and smoothness ------------------------------------------------------------------
def test_yuv_matches_the_bt601_formula() -> None:
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64) * 2 - 1
    yuv = L.rgb_to_yuv(x)
    for i in range(2):
        for yy in range(2):
            for xx in range(2):
                r, g, b = ((float(x[i, c, yy, xx]) + 1) / 2 for c in range(3))
                y = 0.299 * r + 0.587 * g + 0.114 * b
                u = 0.492111 * (b - y)  # U = 0.492 (B - Y), V = 0.877 (R - Y): analogue BT.601
                v = 0.877283 * (r - y)
                assert yuv[i, :, yy, xx].tolist() == pytest.approx([y, u, v], abs=2e-6)


def test_color_loss_is_l1_on_y_plus_huber_on_u_and_v() -> None:
    # Red against cyan puts V's difference above Huber's delta of 1: both branches are used.
    photo = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
    fake = torch.rand(1, 3, 2, 2, dtype=torch.float64) * 2 - 1
    fake[0, :, 0, 0] = torch.tensor([-1.0, 1.0, 1.0])

    def yuv(r: float, g: float, b: float) -> tuple[float, float, float]:
        r, g, b = (r + 1) / 2, (g + 1) / 2, (b + 1) / 2
        y = 0.299 * r + 0.587 * g + 0.114 * b
        return y, 0.492111 * (b - y), 0.877283 * (r - y)

    def huber(d: float) -> float:
        return 0.5 * d * d if abs(d) <= 1 else abs(d) - 0.5

    terms = [0.0, 0.0, 0.0]
    for yy in range(2):
        for xx in range(2):
            a = yuv(*(float(photo[0, c, yy, xx]) for c in range(3)))
            b = yuv(*(float(fake[0, c, yy, xx]) for c in range(3)))
            terms[0] += abs(a[0] - b[0])
            terms[1] += huber(a[1] - b[1])
            terms[2] += huber(a[2] - b[2])
    hand = sum(t / 4 for t in terms)
    assert L.color_loss(photo, fake).item() == pytest.approx(hand, abs=1e-5)


def test_total_variation_matches_hand_sums() -> None:
    x = _t(2, 3, 3, 4, seed=6)
    n, c, h, w = x.shape
    dh = [float(x[i, k, y + 1, z] - x[i, k, y, z]) ** 2 for i in range(n) for k in range(c)
          for y in range(h - 1) for z in range(w)]
    dw = [float(x[i, k, y, z + 1] - x[i, k, y, z]) ** 2 for i in range(n) for k in range(c)
          for y in range(h) for z in range(w - 1)]
    hand = sum(dh) / 2 / len(dh) + sum(dw) / 2 / len(dw)
    assert L.tv_loss(x).item() == pytest.approx(hand, rel=1e-12)


# -- v3 terms -------------------------------------------------------------------------------
def test_superpixels_keep_flat_blocks_and_average_each_region() -> None:
    # Four flat 8x8 blocks: every superpixel lies inside one block, so the average is the image.
    img = torch.zeros(1, 3, 16, 16)
    colours = [(-0.8, 0.2, 0.9), (0.7, -0.5, 0.1), (0.0, 0.9, -0.9), (-0.2, -0.2, 0.6)]
    for k, (y, x) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        img[0, :, y:y + 8, x:x + 8] = torch.tensor(colours[k]).view(3, 1, 1)
    assert torch.allclose(L.superpixel_average(img, segments=16), img, atol=1e-6)

    noisy = torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = L.superpixel_labels(noisy[0], segments=9)
    avg = L.superpixel_average(noisy, segments=9)
    assert labels.shape == (12, 14) and 1 < int(labels.unique().numel()) <= 9
    for lab in labels.unique().tolist():
        mask = labels == lab
        region = noisy[0][:, mask]
        expected = region.mean(1)
        assert torch.allclose(avg[0][:, mask], expected[:, None].expand_as(region), atol=1e-5)


def _dense_slic(image: torch.Tensor, segments: int, compactness: float = 10.0, iterations: int = 5) -> torch.Tensor:
    """The SLIC rounds written out plainly: every pixel's full offset to every seed."""
    _, h, w = image.shape
    spacing = max(1.0, math.sqrt(h * w / segments))
    ny, nx = max(1, round(h / spacing)), max(1, round(w / spacing))
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    pos = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)
    col = ((image + 1) * 50).reshape(3, -1).t()
    cy, cx = (torch.arange(ny) + 0.5) * h / ny, (torch.arange(nx) + 0.5) * w / nx
    c_pos = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)
    c_col = col[c_pos[:, 0].long() * w + c_pos[:, 1].long()]
    for _ in range(iterations):
        d = pos[:, None, :] - c_pos[None]
        far = (d[..., 0].abs() > 2 * h / ny) | (d[..., 1].abs() > 2 * w / nx)
        dist = ((col[:, None] - c_col[None]) ** 2).sum(-1) + (compactness / spacing) ** 2 * (d ** 2).sum(-1)
        labels = dist.masked_fill(far, float("inf")).argmin(1)
        for k in labels.unique().tolist():
            c_pos[k], c_col[k] = pos[labels == k].mean(0), col[labels == k].mean(0)
    return labels.reshape(h, w)


@pytest.mark.parametrize("shape, segments", [((32, 48), 16), ((37, 53), 9), ((64, 64), 64)])
def test_superpixel_labels_match_the_dense_formulation(shape: tuple[int, int], segments: int) -> None:
    g = torch.Generator().manual_seed(shape[0])
    for smooth in (False, True):
        img = torch.rand(3, *shape, generator=g) * 2 - 1
        if smooth:  # regions, as in a generated picture, besides pure noise
            img = torch.nn.functional.avg_pool2d(img[None], 5, 1, 2)[0]
        labels = L.superpixel_labels(img, segments)
        reference = _dense_slic(img, segments)
        assert (labels == reference).float().mean() > 0.999  # a near-tie may round the other way
        assert labels.unique().numel() > segments // 2


def test_region_smoothing_loss_is_l1_to_a_detached_target() -> None:
    out = torch.rand(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    loss = L.region_smoothing_loss(out, target)
    hand = sum(abs(a - b) for a, b in zip(out.flatten().tolist(), target.flatten().tolist())) / 12
    assert loss.item() == pytest.approx(hand, rel=1e-12)
    loss.backward()
    assert target.grad is None and out.grad is not None


def _box(img: list[list[float]], r: int) -> list[list[float]]:
    h, w = len(img), len(img[0])
    out = [[0.0] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            vals = [img[j][i] for j in range(max(0, y - r), min(h, y + r + 1))
                    for i in range(max(0, x - r), min(w, x + r + 1))]
            out[y][x] = sum(vals) / len(vals)
    return out


def test_guided_filter_matches_the_hand_formula() -> None:
    g = torch.rand(1, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    p = torch.rand(1, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    eps, r = 0.01, 1
    G, P = g[0, 0].tolist(), p[0, 0].tolist()
    mul = lambda a, b: [[x * y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]  # noqa: E731
    mi, mp, mip, mii = _box(G, r), _box(P, r), _box(mul(G, P), r), _box(mul(G, G), r)
    a = [[(mip[y][x] - mi[y][x] * mp[y][x]) / (mii[y][x] - mi[y][x] ** 2 + eps) for x in range(5)] for y in range(4)]
    b = [[mp[y][x] - a[y][x] * mi[y][x] for x in range(5)] for y in range(4)]
    ma, mb = _box(a, r), _box(b, r)
    hand = [[ma[y][x] * G[y][x] + mb[y][x] for x in range(5)] for y in range(4)]
    got = L.guided_filter(g, p, r, eps)[0, 0]
    assert torch.allclose(got, torch.tensor(hand, dtype=torch.float64), atol=1e-12)


def test_domain_loss_ties_the_main_tail_to_the_revised_support() -> None:
    # The guided filter leaves a flat image unchanged, so the target is the support itself.
    support = torch.full((1, 3, 4, 4), 0.25, dtype=torch.float64, requires_grad=True)
    main = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    fm, ft = torch.rand(1, 2, 2, 2, dtype=torch.float64), torch.rand(1, 2, 2, 2, dtype=torch.float64)
    hand = sum(abs(v - 0.25) for v in main.flatten().tolist()) / 48
    hand += sum(abs(a - b) for a, b in zip(fm.flatten().tolist(), ft.flatten().tolist())) / 8
    loss = L.domain_loss(main, support, fm, ft)
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    assert support.grad is None  # the support output is a label here, not trained by this term


def test_presets_and_weight_overrides() -> None:
    scenery, portrait = L.preset_weights("scenery"), L.preset_weights("portrait", {"tv": 0.5})
    assert (scenery.content, scenery.style, scenery.color) == (1.5, 2.5, 10.0)
    assert (scenery.adv_g, scenery.adv_d, scenery.tv) == (300.0, 300.0, 1.0)
    assert (portrait.style, portrait.color, portrait.tv) == (3.0, 15.0, 0.5)
    with pytest.raises(AnimeGANError, match="stlye"):
        L.preset_weights("scenery", {"stlye": 1})
    with pytest.raises(AnimeGANError, match="unknown preset"):
        L.preset_weights("watercolour")
