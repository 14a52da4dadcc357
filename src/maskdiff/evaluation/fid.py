"""A Frechet distance between generated and held-out images on the features of a classifier trained
here: **not comparable with the papers' Inception FID** (different network, features and image size).

    FD = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)

The classifier (networks/classifier.py) is trained on the training images of the run's data with a
fixed seed and kept in the run directory (``fid_classifier.safetensors``), so every evaluation of a
run uses the same feature map. Its held-out accuracy is reported beside the distance, and so is the
distance between real training and held-out images of the same number: the floor a perfect model
would reach at this sample size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from maskdiff.data.images import dequantize
from maskdiff.errors import MaskdiffError

CLASSIFIER_FILE = "fid_classifier.safetensors"
LABEL = "FID-by-our-classifier (not comparable with the papers' Inception FID)"


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature rows a (N, D) and b (M, D), in float64."""
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise MaskdiffError("a Frechet distance needs at least 2 images on each side")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    w, v = torch.linalg.eigh(cov_a)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T  # S_a^1/2
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()  # Tr (S_a^1/2 S_b S_a^1/2)^1/2
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * middle)


def _pixels(tokens: Tensor, levels: int, side: int) -> Tensor:
    return dequantize(tokens, levels).float().reshape(-1, 1, side, side)


def train_classifier(tokens: Tensor, labels: Tensor, levels: int, side: int, *, classes: int = 10, epochs: int = 20,
                     batch_size: int = 128, seed: int = 0):
    """Train SmallCNN on (N, side*side) level images; returns the network in eval mode."""
    from maskdiff.networks.classifier import SmallCNN

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(classes)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    x = _pixels(tokens, levels, side)
    n = x.shape[0]
    steps = max(1, epochs * n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def classifier_outputs(net, tokens: Tensor, levels: int, side: int, batch_size: int = 512):
    """(features (N, D) float64, predicted classes (N,))."""
    feats, preds = [], []
    for lo in range(0, tokens.shape[0], batch_size):
        f = net.features(_pixels(tokens[lo : lo + batch_size], levels, side))
        feats.append(f.double())
        preds.append(net.head(f).argmax(-1))
    return torch.cat(feats), torch.cat(preds)


@dataclass
class FeatureMap:
    net: torch.nn.Module
    accuracy: float
    """Held-out accuracy of the classifier (it should be high for its features to mean anything)."""


def fid_classifier(run_dir: Path, train_tokens: Tensor, train_labels: Tensor, held_tokens: Tensor, held_labels: Tensor,
                   levels: int, side: int, *, epochs: int = 20, log=print) -> FeatureMap:
    """Load the run's FID classifier, or train it (seed 0) on the training images and save it."""
    from safetensors.torch import load_file, save_file

    from maskdiff.checkpoint import atomic_write_text
    from maskdiff.networks.classifier import SmallCNN

    path, meta_path = Path(run_dir) / CLASSIFIER_FILE, Path(run_dir) / (CLASSIFIER_FILE + ".json")
    if path.exists() and meta_path.exists():
        net = SmallCNN(10)
        net.load_state_dict(load_file(str(path)))
        return FeatureMap(net.eval(), json.loads(meta_path.read_text())["held_out_accuracy"])
    log(f"training the FID classifier on {train_tokens.shape[0]} training images ({epochs} epochs)")
    net = train_classifier(train_tokens, train_labels, levels, side, epochs=epochs)
    _, pred = classifier_outputs(net, held_tokens, levels, side)
    acc = float((pred == held_labels).double().mean())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    atomic_write_text(meta_path, json.dumps({"held_out_accuracy": acc, "epochs": epochs, "seed": 0}))
    return FeatureMap(net, acc)
