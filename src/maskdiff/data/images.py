"""Images as token sequences: grey levels quantized to K values, one token per pixel, raster order.

Corpora (each with 10 classes):

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 17 grey levels 0-16),
  split by a fixed permutation into 1,437 train / 180 validation / 180 test images;
* ``fashion-mnist``: 28x28 Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (MIT);
  train = the first 55,000 training images, validation = the last 5,000, test = the 10,000 test images.

Quantization: an intensity v of an ``in_levels``-level image becomes level floor(v K / in_levels), so
K = in_levels is the identity and each level covers an equal range; a level dequantizes to the centre
of its range. Downsampling (``size`` < native side, an integer factor) averages blocks of pixels
before quantizing.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_HINT = "install it with: sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu)"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IMAGE_CORPORA = ("digits", "fashion-mnist")
ASCII_RAMP = " .:-=+*#%@"


def quantize(values: Tensor, in_levels: int, levels: int) -> Tensor:
    """Intensities in [0, in_levels) (integers or averages) -> levels 0..K-1: floor(v K / in_levels)."""
    return (values.double() * levels / in_levels).floor().long().clamp_(0, levels - 1)


def dequantize(tokens: Tensor, levels: int) -> Tensor:
    """Levels 0..K-1 -> intensities in [0, 1], the centre of each level's range: (k + 1/2) / K."""
    return (tokens.double() + 0.5) / levels


class PixelTokenizer:
    """Grey level k of a pixel is token k (0..K-1); the mask is id K. Images are ``height`` x ``width``,
    flattened row by row. ``decode`` draws an image as ASCII art (masked pixels as '_')."""

    def __init__(self, levels: int, height: int, width: int):
        if levels < 2 or height < 1 or width < 1:
            raise MaskdiffError(f"an image tokenizer needs at least 2 levels and a positive size, got {levels} levels, {height}x{width}")
        self.levels, self.height, self.width = levels, height, width

    @property
    def vocab_size(self) -> int:
        return self.levels

    @property
    def mask_id(self) -> int:
        return self.levels

    def encode(self, image: Tensor) -> Tensor:
        """An image of levels (H, W) or a flat (H*W,) tensor -> token ids, checked."""
        flat = image.reshape(-1).long()
        if flat.numel() != self.height * self.width:
            raise MaskdiffError(f"an image of this model has {self.height}x{self.width} pixels, got {flat.numel()}")
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.levels):
            raise MaskdiffError(f"pixel levels must be in 0..{self.levels - 1}")
        return flat

    def decode(self, ids) -> str:
        ids = torch.as_tensor(ids).reshape(-1).tolist()
        chars = []
        for i in ids:
            if i == self.mask_id:
                chars.append("_")
            elif 0 <= i < self.levels:
                chars.append(ASCII_RAMP[i * len(ASCII_RAMP) // self.levels])
            else:
                raise MaskdiffError(f"token id {i} is out of range 0..{self.mask_id} (mask = {self.mask_id})")
        w = self.width
        return "\n".join("".join(chars[r : r + w]) for r in range(0, len(chars), w))

    def decode_batch(self, rows) -> List[str]:
        return [self.decode(r) for r in rows]

    def config(self) -> dict:
        return {"kind": "pixels", "levels": self.levels, "height": self.height, "width": self.width}

    @classmethod
    def from_config(cls, cfg: dict) -> "PixelTokenizer":
        if cfg.get("kind") != "pixels":
            raise MaskdiffError(f"not an image tokenizer: kind {cfg.get('kind')!r}")
        return cls(int(cfg["levels"]), int(cfg["height"]), int(cfg["width"]))


@dataclass
class ImageSplit:
    tokens: Tensor
    """(N, H*W) levels in raster order."""
    labels: Tensor
    """(N,) class ids."""
    classes: List[str]
    height: int
    width: int


def native_size(corpus: str) -> int:
    if corpus not in IMAGE_CORPORA:
        raise MaskdiffError(f"unknown image corpus {corpus!r}; choose one of: {', '.join(IMAGE_CORPORA)}")
    return 8 if corpus == "digits" else 28


def corpus_levels(corpus: str) -> int:
    """The grey levels a corpus is stored with."""
    native_size(corpus)
    return 17 if corpus == "digits" else 256


def _digits(split: str):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MaskdiffError("the 'digits' images come with scikit-learn; install it with: pip install scikit-learn") from None
    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float64)  # (1797, 8, 8), values 0..16
    labels = torch.as_tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    parts = {"train": order[:1437], "validation": order[1437:1617], "test": order[1617:]}
    idx = parts[split]
    return images[idx], labels[idx], 17, [str(i) for i in range(10)]


def _read_idx(path: Path, magic: int) -> Tensor:
    if not path.exists():
        raise MaskdiffError(f"Fashion-MNIST file {path} is missing; {FASHION_HINT}")
    data = gzip.open(path, "rb").read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise MaskdiffError(f"{path} is not an IDX file of the expected kind (magic {found}, expected {magic})")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    body = torch.frombuffer(bytearray(data[4 + 4 * dims :]), dtype=torch.uint8)
    if body.numel() != torch.Size(shape).numel():
        raise MaskdiffError(f"{path} is truncated ({body.numel()} values for shape {shape})")
    return body.view(*shape)


def _fashion(split: str):
    if not FASHION_ROOT.is_dir():
        raise MaskdiffError(f"the image corpus 'fashion-mnist' is not installed (no {FASHION_ROOT}); {FASHION_HINT}")
    prefix = "t10k" if split == "test" else "train"
    images = _read_idx(FASHION_ROOT / f"{prefix}-images-idx3-ubyte.gz", 2051).double()
    labels = _read_idx(FASHION_ROOT / f"{prefix}-labels-idx1-ubyte.gz", 2049).long()
    if split != "test":
        sl = slice(0, 55000) if split == "train" else slice(55000, None)
        images, labels = images[sl], labels[sl]
    return images, labels, 256, list(FASHION_CLASSES)


def load_images(corpus: str, split: str, *, size: int = 0, levels: int = 0) -> ImageSplit:
    """One split of an image corpus as tokens. size: side after downsampling (0: native);
    levels: grey levels K (0: the corpus's own, 17 for digits, 256 for Fashion-MNIST)."""
    native = native_size(corpus)
    if split not in ("train", "validation", "test"):
        raise MaskdiffError(f"unknown split {split!r}; choose one of: train, validation, test")
    size = size or native
    if native % size:
        raise MaskdiffError(f"image size {size} does not divide the native size {native} of {corpus}; choose a divisor of {native}")
    images, labels, in_levels, classes = _digits(split) if corpus == "digits" else _fashion(split)
    levels = levels or in_levels
    if not 2 <= levels <= in_levels:
        raise MaskdiffError(f"{corpus} has {in_levels} grey levels; levels must be in 2..{in_levels}, got {levels}")
    f = native // size
    if f > 1:
        images = images.view(-1, size, f, size, f).mean(dim=(2, 4))
    tokens = quantize(images, in_levels, levels).reshape(len(images), size * size)
    return ImageSplit(tokens, labels, classes, size, size)


def image_batch(tokens: Tensor, labels: Tensor, batch: int, generator: torch.Generator, *, class_dropout: float = 0.0,
                null_class: Optional[int] = None):
    """``batch`` images drawn uniformly with replacement, and their labels, each replaced by
    ``null_class`` with probability ``class_dropout`` (classifier-free guidance training)."""
    idx = torch.randint(0, tokens.shape[0], (batch,), generator=generator)
    x0, y = tokens[idx], labels[idx].clone()
    if null_class is not None:
        drop = torch.rand(batch, generator=generator, dtype=torch.float64) < class_dropout
        y[drop] = null_class
    return x0, y


def save_grid(tokens: Tensor, levels: int, height: int, width: int, path, *, columns: int = 8, scale: int = 0) -> Path:
    """A PNG of the images (N, H*W) in a grid, ``columns`` per row, each pixel ``scale`` times enlarged
    (default: to about 64 pixels per image); masked pixels are drawn red."""
    from PIL import Image

    n = tokens.shape[0]
    scale = scale or max(1, 64 // max(height, width))
    columns = min(columns, n)
    rows = -(-n // columns)
    pad = 2
    grid = torch.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, dtype=torch.uint8)
    for i in range(n):
        img = tokens[i].reshape(height, width)
        grey = (dequantize(img.clamp(max=levels - 1), levels) * 255).round().to(torch.uint8)
        rgb = grey[..., None].repeat(1, 1, 3)
        rgb[img == levels] = torch.tensor([220, 40, 40], dtype=torch.uint8)
        r, c = divmod(i, columns)
        y0, x0 = pad + r * (height + pad), pad + c * (width + pad)
        grid[y0 : y0 + height, x0 : x0 + width] = rgb
    picture = Image.fromarray(grid.numpy(), "RGB").resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
