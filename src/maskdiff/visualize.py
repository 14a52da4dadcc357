"""Watching a sample being unmasked: a PNG strip, an animated GIF, and a live terminal view (MD4 Fig. 1).

Samplers call ``callback(x)`` with the (B, L) state after every step; :class:`FrameRecorder` keeps the
states of one sample each time it changes.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

MASK_GLYPH = "\u00b7"  # middle dot for a masked position


class FrameRecorder:
    """A sampler callback that records sample ``index`` whenever it changed."""

    def __init__(self, initial: Optional[Tensor] = None, index: int = 0):
        self.index = index
        self.frames: List[Tensor] = [] if initial is None else [initial[index].clone()]

    def __call__(self, x: Tensor) -> None:
        row = x[self.index]
        if not self.frames or not torch.equal(row, self.frames[-1]):
            self.frames.append(row.clone())


def frame_text(frame: Tensor, decode: Callable[[Sequence[int]], str], mask_id: int) -> str:
    """Decode one state, showing masks as a middle dot."""
    chars = []
    for i in frame.tolist():
        chars.append(MASK_GLYPH if i == mask_id else decode([i]))
    return "".join(chars)


def _render(text: str, width_chars: int, font, cell, masked: List[bool]):
    from PIL import Image, ImageDraw

    lines = [text[i : i + width_chars] for i in range(0, len(text), width_chars)] or [""]
    cw, ch = cell
    img = Image.new("RGB", (cw * width_chars + 16, ch * len(lines) + 12), "white")
    draw = ImageDraw.Draw(img)
    for r, line in enumerate(lines):
        for c, char in enumerate(line):
            k = r * width_chars + c
            x0, y0 = 8 + c * cw, 6 + r * ch
            if masked[k]:
                draw.rectangle([x0 + 1, y0 + 2, x0 + cw - 2, y0 + ch - 3], fill=(200, 200, 215))
            else:
                draw.text((x0, y0), char, fill="black", font=font)
    return img


def _font_and_cell():
    from PIL import ImageFont

    font = ImageFont.load_default()
    box = font.getbbox("M")
    return font, (max(7, box[2] - box[0] + 2), max(12, box[3] - box[1] + 6))


def _frames_as_images(frames: List[Tensor], decode, mask_id: int, width_chars: int):
    font, cell = _font_and_cell()
    images = []
    for f in frames:
        masked = [i == mask_id for i in f.tolist()]
        images.append(_render(frame_text(f, decode, mask_id), width_chars, font, cell, masked))
    return images


def save_strip(frames: List[Tensor], decode, mask_id: int, path: Path, rows: int = 8, width_chars: int = 64) -> Path:
    """A PNG of ``rows`` evenly spaced states, from all masks (top) to the finished sample (bottom)."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames recorded")
    pick = sorted({round(i * (len(frames) - 1) / max(rows - 1, 1)) for i in range(rows)})
    images = _frames_as_images([frames[i] for i in pick], decode, mask_id, width_chars)
    w = max(im.width for im in images)
    h = sum(im.height for im in images) + 2 * len(images)
    strip = Image.new("RGB", (w, h), (90, 90, 90))
    y = 0
    for im in images:
        strip.paste(im, (0, y))
        y += im.height + 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path


def save_gif(frames: List[Tensor], decode, mask_id: int, path: Path, width_chars: int = 64, max_frames: int = 120, ms: int = 80) -> Path:
    """An animated GIF of the unmasking (at most ``max_frames`` frames; the last one is held)."""
    if not frames:
        raise ValueError("no frames recorded")
    step = max(1, len(frames) // max_frames)
    chosen = frames[::step]
    if not torch.equal(chosen[-1], frames[-1]):
        chosen.append(frames[-1])
    images = _frames_as_images(chosen, decode, mask_id, width_chars)
    durations = [ms] * (len(images) - 1) + [2000]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


class TerminalView:
    """A sampler callback that redraws sample ``index`` in place in a terminal (newly unmasked in bold)."""

    def __init__(self, decode, mask_id: int, index: int = 0, width_chars: int = 80, stream=None):
        self.decode, self.mask_id, self.index, self.width = decode, mask_id, index, width_chars
        self.stream = stream or sys.stdout
        self.previous: Optional[Tensor] = None
        self.lines = 0

    def __call__(self, x: Tensor) -> None:
        row = x[self.index]
        if self.previous is not None and torch.equal(row, self.previous):
            return
        out = []
        for k, i in enumerate(row.tolist()):
            if i == self.mask_id:
                out.append(f"\033[2m{MASK_GLYPH}\033[0m")
            elif self.previous is not None and int(self.previous[k]) == self.mask_id:
                out.append(f"\033[1;32m{self.decode([i])}\033[0m")
            else:
                out.append(self.decode([i]))
        lines = ["".join(out[j : j + self.width]) for j in range(0, len(out), self.width)]
        if self.lines:
            self.stream.write(f"\033[{self.lines}F")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.lines = len(lines)
        self.previous = row.clone()


def save_bar_chart(labels: Sequence[str], values: Sequence[float], path: Path, *, title: str = "",
                   reference: Optional[float] = None) -> Path:
    """A horizontal bar chart PNG (one bar per label, values >= 0), with an optional reference line."""
    from PIL import Image, ImageDraw

    from maskdiff.errors import MaskdiffError

    if not values:
        raise MaskdiffError("nothing to plot")
    font, (cw, ch) = _font_and_cell()
    row, label_w, bar_w, pad = ch + 6, cw * 8, 480, 10
    top = row * 2 if title else pad
    img = Image.new("RGB", (label_w + bar_w + 3 * pad + cw * 8, top + row * len(values) + pad), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    hi = max(max(values), reference or 0.0) or 1.0
    for k, (label, v) in enumerate(zip(labels, values)):
        y = top + k * row
        draw.text((pad, y + 3), str(label)[:8], fill="black", font=font)
        x0 = label_w + pad
        draw.rectangle([x0, y + 2, x0 + int(bar_w * max(v, 0.0) / hi), y + row - 3], fill=(70, 110, 180))
        draw.text((x0 + bar_w + pad, y + 3), f"{v:.3f}", fill="black", font=font)
    if reference is not None:
        x = label_w + pad + int(bar_w * reference / hi)
        draw.line([x, top, x, top + row * len(values)], fill=(200, 40, 40), width=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_line_chart(series, path: Path, *, title: str = "", xlabel: str = "", ylabel: str = "",
                    hlines=None, size=(720, 420), bands=None) -> Path:
    """A line chart PNG: ``series`` maps a legend label to [(x, y), ...] (a single point is drawn as a
    dot); ``hlines`` maps a label to a y value drawn as a dashed horizontal line; ``bands`` maps a label
    of ``series`` to [(x, low, high), ...], shaded in a pale version of its colour (an interval)."""
    from PIL import Image, ImageChops, ImageDraw

    from maskdiff.errors import MaskdiffError

    hlines, bands = hlines or {}, bands or {}
    points = [p for pts in series.values() for p in pts] + [(x, y) for b in bands.values() for x, lo, hi in b for y in (lo, hi)]
    if not points:
        raise MaskdiffError("nothing to plot")
    font, (cw, ch) = _font_and_cell()
    W, H = size
    legend_h = (ch + 4) * len(series) + 6  # the legend goes under the axis label, off the curves
    H += legend_h
    left, right, top, bottom = cw * 8, 20, ch * 3, ch * 3 + legend_h
    xs = [x for x, _ in points]
    ys = [y for _, y in points] + list(hlines.values())
    x0, x1 = min(xs + [0]), max(xs) or 1
    y0, y1 = min(ys), max(ys)
    pad = 0.05 * (y1 - y0 or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    px = lambda x: left + (W - left - right) * (x - x0) / ((x1 - x0) or 1)  # noqa: E731
    py = lambda y: top + (H - top - bottom) * (y1 - y) / ((y1 - y0) or 1)  # noqa: E731
    colours = [(40, 90, 180), (200, 60, 30), (30, 140, 60), (140, 60, 160), (200, 150, 0), (0, 150, 160), (120, 80, 40), (0, 0, 0)]
    img = Image.new("RGB", (W, H), "white")
    for k, label in enumerate(series):  # bands first, each multiplied in: where two overlap both show
        band = sorted(bands.get(label, []))
        if len(band) > 1:
            layer = Image.new("RGB", (W, H), "white")
            pale = tuple(int(255 - 0.25 * (255 - c)) for c in colours[k % len(colours)])
            ImageDraw.Draw(layer).polygon([(px(x), py(hi)) for x, _, hi in band] + [(px(x), py(lo)) for x, lo, _ in reversed(band)], fill=pale)
            img = ImageChops.multiply(img, layer)
    draw = ImageDraw.Draw(img)
    draw.rectangle([left, top, W - right, H - bottom], outline="black")
    for k in range(5):  # y ticks
        y = y0 + (y1 - y0) * k / 4
        draw.line([left - 4, py(y), left, py(y)], fill="black")
        draw.text((4, py(y) - ch // 2), f"{y:.2f}", fill="black", font=font)
    for k in range(5):  # x ticks
        x = x0 + (x1 - x0) * k / 4
        draw.line([px(x), H - bottom, px(x), H - bottom + 4], fill="black")
        draw.text((px(x) - cw * 2, H - bottom + 6), f"{x:.0f}" if x1 - x0 >= 8 else f"{x:.2f}", fill="black", font=font)
    draw.text((W // 2 - cw * len(xlabel) // 2, H - bottom + ch + 6), xlabel, fill="black", font=font)
    draw.text((4, top - ch - 4), ylabel, fill="black", font=font)
    if title:
        draw.text((left, 4), title, fill="black", font=font)
    legend_y = H - legend_h + 4
    for k, (label, pts) in enumerate(series.items()):
        colour = colours[k % len(colours)]
        pts = sorted(pts)
        if len(pts) > 1:
            draw.line([(px(x), py(y)) for x, y in pts], fill=colour, width=2)
        for x, y in pts[-1:] if len(pts) > 1 else pts:
            draw.ellipse([px(x) - 4, py(y) - 4, px(x) + 4, py(y) + 4], fill=colour)
        draw.line([left, legend_y + ch // 2, left + 24, legend_y + ch // 2], fill=colour, width=3)
        draw.text((left + 32, legend_y), label, fill=colour, font=font)
        legend_y += ch + 4
    for label, y in hlines.items():
        for xa in range(int(left), int(W - right), 12):
            draw.line([xa, py(y), min(xa + 6, W - right), py(y)], fill=(120, 120, 120))
        draw.text((left + 6, py(y) - ch - 2), label, fill=(100, 100, 100), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
