"""Images as tokens: quantization, the digits and Fashion-MNIST readers, BPD, the class-conditional
network, classifier-free guidance, the Frechet distance and the PNG grid."""
import gzip
import math

import pytest
import torch
from PIL import Image

from maskdiff.data import images
from maskdiff.data.images import PixelTokenizer, dequantize, load_images, quantize, save_grid
from maskdiff.denoiser import BoundCondition, SUBSDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.evaluation.nelbo import EvalResult
from maskdiff.evaluation.fid import frechet_distance
from maskdiff.networks.transformer import DiT
from maskdiff.sampling.guidance import GuidedDenoiser


@pytest.mark.parametrize("in_levels, levels", [(256, 256), (256, 16), (17, 17), (256, 2)])
def test_quantization_round_trip(in_levels, levels):
    k = torch.arange(levels)
    centre = dequantize(k, levels) * in_levels  # the centre of each level, on the input scale
    assert torch.equal(quantize(centre, in_levels, levels), k)
    v = torch.arange(in_levels)
    q = quantize(v, in_levels, levels)
    assert q.min() == 0 and q.max() == levels - 1
    assert bool((q[1:] >= q[:-1]).all())  # monotone
    assert torch.bincount(q, minlength=levels).tolist() == [in_levels // levels] * levels  # equal ranges
    assert float((dequantize(q, levels) * in_levels - v).abs().max()) <= in_levels / levels / 2 + 1e-9


def test_digits_tokens_are_the_pixels_in_raster_order():
    from sklearn.datasets import load_digits

    d = load_digits()
    splits = {s: load_images("digits", s) for s in ("train", "validation", "test")}
    assert [v.tokens.shape[0] for v in splits.values()] == [1437, 180, 180]
    first = splits["train"]
    img = torch.as_tensor(d.images, dtype=torch.long)
    match = (img.reshape(1797, 64)[:, None] == first.tokens[:3][None]).all(-1).nonzero()
    assert match.shape[0] == 3  # each token row is exactly one digit image, raster order, 17 levels untouched
    assert torch.equal(torch.as_tensor(d.target)[match[:, 0]], first.labels[:3][match[:, 1]])
    tok = PixelTokenizer(17, 8, 8)
    assert torch.equal(tok.encode(first.tokens[0].reshape(8, 8)), first.tokens[0])
    assert PixelTokenizer.from_config(tok.config()).config() == tok.config()
    assert tok.decode(torch.full((64,), 17)).count("_") == 64


def write_idx(path, array, magic):
    dims = array.dim()
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(array.to(torch.uint8).flatten().tolist()))
    assert header[3] == dims


def test_fashion_mnist_reader_downsamples_and_quantizes(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    pics = torch.randint(0, 256, (4, 28, 28), generator=g)
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", pics, 2051)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", torch.tensor([3, 1, 4, 1]), 2049)
    monkeypatch.setattr(images, "FASHION_ROOT", tmp_path)
    full = load_images("fashion-mnist", "test")
    assert torch.equal(full.tokens, pics.reshape(4, 784)) and full.labels.tolist() == [3, 1, 4, 1]
    small = load_images("fashion-mnist", "test", size=14, levels=16)
    block = pics[0, :2, :2].double().mean()  # the first pixel averages a 2x2 block, then 256 -> 16 levels
    assert small.tokens.shape == (4, 196) and int(small.tokens[0, 0]) == int(block // 16)
    with pytest.raises(MaskdiffError, match="does not divide"):
        load_images("fashion-mnist", "test", size=10)
    monkeypatch.setattr(images, "FASHION_ROOT", tmp_path / "absent")
    with pytest.raises(MaskdiffError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", "train")


def test_bits_per_dimension_by_hand():
    # two 8x8 images, NELBO 100 and 200 nats: 300 / (128 ln 2) = 300 / 88.7228391 = 3.3813165 bits per dimension
    r = EvalResult(torch.tensor([100.0, 200.0], dtype=torch.float64), torch.tensor([64.0, 64.0], dtype=torch.float64))
    assert r.bits_per_token()[0] == pytest.approx(3.3813165, abs=1e-6)
    assert r.summary("BPD").startswith("BPD <= 3.3813")


def class_conditional_denoiser(seed=0):
    torch.manual_seed(seed)
    net = DiT(5, 6, width=16, depth=1, heads=2, num_classes=3)
    torch.nn.init.normal_(net.head.weight, std=1.0)  # the zero-initialized output layer would make mu uniform
    return SUBSDenoiser(net, 5, max_length=6).eval()


def test_class_token_changes_the_output_and_none_is_the_null_class():
    d = class_conditional_denoiser()
    x = torch.tensor([[5, 1, 5, 2, 5, 5]] * 4)
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        by_label = d(x, t, cond=torch.tensor([0, 1, 2, 3]))
        assert not torch.allclose(by_label[0], by_label[1])
        assert torch.allclose(d(x, t), d(x, t, cond=torch.full((4,), 3)))
        assert torch.allclose(BoundCondition(d, torch.tensor([0, 1, 2, 3]))(x, t), by_label)
    with pytest.raises(ValueError, match="not class-conditional"):
        DiT(5, 6, width=16, depth=1, heads=2)(x, None, labels=torch.zeros(4, dtype=torch.long))


def test_guidance_weight_zero_is_conditional_and_minus_one_unconditional():
    d = class_conditional_denoiser()
    x = torch.tensor([[5, 1, 5, 2, 5, 5], [0, 5, 5, 5, 4, 5]])
    t = torch.full((2,), 0.3)
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        cond, uncond = d(x, t, cond=labels), d(x, t, cond=torch.full((2,), 3))
        assert torch.allclose(GuidedDenoiser(d, 0.0, null_class=3)(x, t, cond=labels), cond, atol=1e-6)
        assert torch.allclose(GuidedDenoiser(d, -1.0, null_class=3)(x, t, cond=labels), uncond, atol=1e-5)
        guided = GuidedDenoiser(d, 2.0, null_class=3)(x, t, cond=labels)
        expected = torch.log_softmax(3 * cond - 2 * uncond, -1)  # (1 + w) log mu(.|c) - w log mu(.|none), renormalized
        masked = x == 5
        assert torch.allclose(guided[masked], expected[masked], atol=1e-5)
        assert torch.allclose(guided.exp().sum(-1), torch.ones(2, 6))


def test_frechet_distance_matches_scipy():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    b = 0.5 * torch.randn(200, 5, generator=g, dtype=torch.float64) + 1.0
    ma, mb, ca, cb = a.mean(0).numpy(), b.mean(0).numpy(), torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    expected = ((ma - mb) ** 2).sum() + (ca + cb - 2 * linalg.sqrtm(ca @ cb).real).trace()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-8


def test_grid_png_has_one_cell_per_image(tmp_path):
    toks = torch.arange(3 * 16).reshape(3, 16) % 5
    toks[2, 0] = 5  # a masked pixel is drawn red
    path = save_grid(toks, 5, 4, 4, tmp_path / "g.png", columns=2, scale=3)
    img = Image.open(path)
    assert img.size == ((2 * 6 + 2) * 3, (2 * 6 + 2) * 3)
    assert img.getpixel((2 * 3, 2 * 3)) == (26, 26, 26)  # level 0 of 5: centre 0.1 of 255 = 25.5, rounded to even 26
    assert img.getpixel(((2 + 6) * 3, 2 * 3)) == (76, 76, 76)  # image 1 (row 0, column 1) starts at level 16 % 5 = 1: 76.5 -> 76
    assert img.getpixel(((2 + 6) * 3, (2 + 6) * 3)) == (255, 255, 255)  # no fourth image
    assert img.getpixel((2 * 3, (2 + 6) * 3)) == (220, 40, 40)
