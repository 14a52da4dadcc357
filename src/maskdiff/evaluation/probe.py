"""A downstream probe for DNA models, in the spirit of MDLM's genomics benchmarks: which species does a
window of a genome the model never saw come from?

Windows of L bases are cut at evenly spaced offsets, the same number per species, from the training
genomes (probe training set) and from the held-out genomes, validation and test (probe test set); the
label is the genome's species. Two feature sets are fed to the same L2-regularized multinomial logistic
regression: the trained model's final hidden states mean-pooled over the window (the model's input is
the clean window, nothing masked), and k-mer frequencies (k = 1..4, 340 features), the classic
alignment-free baseline. Both are reported as held-out accuracy beside chance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError


def kmer_frequencies(windows: Tensor, ks=(1, 2, 3, 4)) -> Tensor:
    """Frequencies of every k-mer over A, C, G, T (ids 0-3) in each window, k-mers with N left out:
    (N, sum 4^k) float64, each k's block summing to 1 (or 0 if the window has no clean k-mer)."""
    blocks = []
    for k in ks:
        n = windows.shape[1] - k + 1
        code = torch.zeros(windows.shape[0], n, dtype=torch.long)
        clean = torch.ones(windows.shape[0], n, dtype=torch.bool)
        for j in range(k):
            part = windows[:, j : j + n]
            clean &= part < 4
            code = code * 4 + part.clamp(max=3)
        counts = torch.zeros(windows.shape[0], 4**k, dtype=torch.float64)
        counts.scatter_add_(1, code, clean.double())
        blocks.append(counts / counts.sum(1, keepdim=True).clamp(min=1))
    return torch.cat(blocks, 1)


def logistic_regression_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, l2: float = 1e-3,
                                 iterations: int = 200) -> float:
    """Fit multinomial logistic regression (features standardized on the training set, L-BFGS) and
    return the accuracy on the test set."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-8)
    xs, xt = ((train_x - mean) / std).double(), ((test_x - mean) / std).double()
    classes = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(xs.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, train_y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xt @ w + b).argmax(-1) == test_y).double().mean())


def even_windows(stream: Tensor, length: int, count: int) -> Tensor:
    """``count`` windows of ``length`` at evenly spaced offsets over the stream: (count, length)."""
    if stream.numel() < length:
        raise MaskdiffError(f"a genome of {stream.numel()} bases is shorter than one window of {length}")
    starts = torch.linspace(0, stream.numel() - length, count).long()
    return stream[starts[:, None] + torch.arange(length)[None]]


def species_windows(genomes, streams: List[Tensor], species: List[str], length: int, per_species: int):
    """Windows and species labels, ``per_species`` windows per species spread over its genomes."""
    xs, ys = [], []
    for label, name in enumerate(species):
        mine = [s for g, s in zip(genomes, streams) if g.species == name]
        for i, s in enumerate(mine):
            share = per_species // len(mine) + (i < per_species % len(mine))
            xs.append(even_windows(s, length, share))
            ys.append(torch.full((share,), label, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def model_features(network, windows: Tensor, batch_size: int = 64) -> Tensor:
    """Mean over positions of the network's final hidden states on clean windows: (N, W) float64."""
    out = []
    device = next(network.parameters()).device
    for lo in range(0, windows.shape[0], batch_size):
        out.append(network.features(windows[lo : lo + batch_size].to(device)).mean(1).double().cpu())
    return torch.cat(out)


@dataclass
class ProbeResult:
    species: List[str]
    train_windows: int
    test_windows: int
    model_accuracy: float
    kmer_accuracy: float

    @property
    def chance(self) -> float:
        return 1.0 / len(self.species)

    def summary(self) -> str:
        return (f"species probe on held-out genomes ({len(self.species)} species, {self.test_windows} windows): "
                f"model features {100 * self.model_accuracy:.1f}% vs k-mer baseline {100 * self.kmer_accuracy:.1f}% "
                f"(chance {100 * self.chance:.1f}%)")

    def to_dict(self) -> Dict:
        return {"probe_species": self.species, "probe_train_windows": self.train_windows, "probe_test_windows": self.test_windows,
                "probe_model_accuracy": self.model_accuracy, "probe_kmer_accuracy": self.kmer_accuracy, "probe_chance": self.chance}


def species_probe(pipe, corpus: str, *, per_species: int = 400) -> ProbeResult:
    """Run the probe on a trained DNA run (``maskdiff.load``) over the genomes of ``corpus``."""
    from maskdiff.data.dna import genome_splits, genome_tokens

    splits = genome_splits(corpus)
    train_g = splits["train"]
    held_g = splits["validation"] + splits["test"]
    species = sorted({g.species for g in held_g})
    if len(species) < 2:
        raise MaskdiffError(f"the probe needs held-out genomes of at least 2 species; {corpus} has {species}")
    unseen = sorted(set(species) - {g.species for g in train_g})
    if unseen:
        raise MaskdiffError(f"species {unseen} have held-out genomes but no training genome, so the probe cannot learn them")
    train_g = [g for g in train_g if g.species in species]
    L = pipe.config.data.length
    tok = pipe.tokenizer
    x_tr, y_tr = species_windows(train_g, [genome_tokens(g, tok) for g in train_g], species, L, per_species)
    x_te, y_te = species_windows(held_g, [genome_tokens(g, tok) for g in held_g], species, L, per_species)
    net = pipe.denoiser.network
    model_acc = logistic_regression_accuracy(model_features(net, x_tr), y_tr, model_features(net, x_te), y_te)
    kmer_acc = logistic_regression_accuracy(kmer_frequencies(x_tr), y_tr, kmer_frequencies(x_te), y_te)
    return ProbeResult(species, len(y_tr), len(y_te), model_acc, kmer_acc)
