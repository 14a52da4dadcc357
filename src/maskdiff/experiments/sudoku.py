"""Sudoku, a task where the order of generation matters: ``maskdiff experiment sudoku``.

Masked diffusion and the autoregressive baseline are trained from scratch at each seed on the same
network (size, steps, batch, learning rate) and the same stream of grids (``maskdiff.tasks.sudoku``: a
pool of random full grids, each step's batch under random symmetries of Sudoku):

* masked diffusion learns the law of solved grids (C = n * n tokens, 81 on 9x9, every one scored) and
  solves a puzzle by infilling: the clues are fixed tokens of ``x_init``, the blank cells start masked;
* the autoregressive baseline learns p(solution | puzzle) on "puzzle then solution" sequences (2C
  tokens: the puzzle, a random blanking of the step's grid, is read but not scored, so both models score
  C tokens per grid; the baseline's network reads twice the positions) and writes the solution left to
  right, greedily.

Masked diffusion decodes the blanks in four ways, each on a grid of T = C steps: random order with
values drawn from mu (the ancestral chain through its cache) or with argmax values (the greedy chain,
which isolates the order), the most probable candidate first and the largest margin between the two
most probable values first (the confidence sampler, argmax values, ``score`` probability or margin; Kim
et al. 2025). A denoiser that knows the rules and nothing else (``maskdiff.tasks.sudoku_rules``) is
decoded in the same orders, left to right in place of the baseline: what the order alone does. Each
(model, decoder, seed) solves the same held-out puzzles (unique solutions, grids disjoint from the
training pool); the table gives the exact solve rate and the accuracy over blank cells, means over seeds
with 95% Student-t intervals, and "a beats b" judged on the paired per-seed differences of both
(``experiments.base``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import torch

from maskdiff.errors import MaskdiffError
from maskdiff.experiments.base import ModelScale, ci_text, model_config, paired_verdict, results_folder, t_interval, table, \
    write_json, write_results
from maskdiff.experiments.provenance import provenance
from maskdiff.tasks import sudoku

NOT_RESOLVED = "not resolved at this scale"


@dataclass
class SudokuScale(ModelScale):
    """The size of the Sudoku comparison (``length`` is unused: the board's cells, twice that for the baseline)."""

    lr: float
    """Peak learning rate of both models."""
    pool: int
    """Random full grids the training batches are drawn from (each under a random symmetry)."""
    clues: Tuple[int, int]
    """Clues per puzzle, low and high inclusive (training blanks and held-out puzzles alike)."""
    test: int
    """Held-out puzzles (unique solutions), the same for every model and decoder."""
    seeds: int
    """Seeds: each trains both models from its own initialisation and samples with its own draws."""
    board: str = "9x9"
    """The Sudoku board (``maskdiff.tasks.sudoku.BOARDS``): 4x4, 6x6 or 9x9."""
    absolute_positions: bool = False
    """Both networks add learned absolute position embeddings to the rotary ones (ModelConfig.absolute_positions)."""


SUDOKU_SCALES: Dict[str, SudokuScale] = {
    # seconds, for the test suite only: numbers mean nothing
    "test": SudokuScale(width=16, depth=1, heads=2, length=81, batch_size=4, steps=2, lr=1e-3, pool=8, clues=(60, 70), test=3,
                        seeds=2),
    # easy puzzles (55 to 65 clues); six models: 28 minutes on 2 CPU cores shared with other work (load average 13-19)
    "cpu": SudokuScale(width=64, depth=3, heads=4, length=81, batch_size=32, steps=400, lr=3e-3, pool=2000, clues=(55, 65),
                       test=100, seeds=3),
    # 6x6 (2x3 boxes), hard puzzles (12 to 14 clues of 36), learned absolute positions: the models learn the rules
    "cpu-6x6": SudokuScale(width=64, depth=3, heads=4, length=36, batch_size=64, steps=600, lr=5e-3, pool=2000, clues=(12, 14),
                           test=100, seeds=3, board="6x6", absolute_positions=True),
}

DECODERS: Tuple[Tuple[str, str, dict], ...] = (
    ("masked, random order, values drawn (ancestral)", "cached", {}),
    ("masked, random order, argmax values", "greedy", {}),
    ("masked, top probability first", "confidence", {"choose": "argmax", "score": "probability"}),
    ("masked, largest margin first", "confidence", {"choose": "argmax", "score": "margin"}),
    ("autoregressive, left to right, argmax values", "autoregressive", {"top_p": 1e-9}),
)
"""(label, sampler, options) of every row of the table."""

RULES_PREFIX = "rules only (no learning), "
"""The rows of :class:`~maskdiff.tasks.sudoku_rules.RulesDenoiser`, the same decoders (left to right in place
of the autoregressive model): what the order alone does when each cell's law is right but local."""


def get_sudoku_scale(name: str) -> SudokuScale:
    """The scale ``name`` of the Sudoku comparison, or a MaskdiffError naming the valid ones."""
    if name not in SUDOKU_SCALES:
        raise MaskdiffError(f"unknown scale {name!r} for the Sudoku comparison; choose one of: {', '.join(SUDOKU_SCALES)}")
    return SUDOKU_SCALES[name]


def training_batch(objective: str, pool: torch.Tensor, scale: SudokuScale, gen: torch.Generator, avoid: frozenset = frozenset()):
    """(x0, valid or None) of one step: grids for masked diffusion; puzzle then solution for the baseline,
    only the solution scored. ``avoid``: grids (tuples) never to train on (the held-out solutions)."""
    board = sudoku.get_board(scale.board)
    grids = sudoku.shuffle_grids(pool[torch.randint(0, pool.shape[0], (scale.batch_size,), generator=gen)], gen, board)
    if avoid:  # a grid of the held-out set drawn under a symmetry: drawn again (never with 9x9's odds)
        while True:
            hit = torch.tensor([tuple(g) in avoid for g in grids.tolist()])
            if not hit.any():
                break
            grids[hit] = sudoku.shuffle_grids(grids[hit], gen, board)
    if objective == "masked":
        return grids, None
    x0 = torch.cat([sudoku.blank_cells(grids, scale.clues, gen), grids], 1)
    valid = torch.cat([torch.zeros_like(grids, dtype=torch.bool), torch.ones_like(grids, dtype=torch.bool)], 1)
    return x0, valid


def train_model(objective: str, scale: SudokuScale, pool: torch.Tensor, seed: int, log=print, avoid: frozenset = frozenset()):
    """Train ``objective`` ('masked' or 'ar') from ``seed`` on batches from ``pool``; returns (the model in
    eval mode, seconds). The trainer's pieces (optimizer, learning rate, step generator), without run folders."""
    import time

    from maskdiff.loss.masked import low_discrepancy_times
    from maskdiff.objectives import build_objective
    from maskdiff.step import learning_rate, make_optimizer, step_generator

    cfg = model_config(scale, scale.lr, scale.steps, seed)
    cfg.diffusion.objective = objective
    cfg.model.absolute_positions = scale.absolute_positions
    board = sudoku.get_board(scale.board)
    cfg.data.length = board.cells * (1 if objective == "masked" else 2)
    tc = cfg.train
    torch.manual_seed(seed)
    model = build_objective(cfg, board.vocab)
    opt = make_optimizer(model, tc)
    t0 = time.perf_counter()
    for step in range(tc.steps):
        gen = step_generator(seed, step)
        x0, valid = training_batch(objective, pool, scale, gen, avoid)
        u = float(torch.rand((), generator=gen, dtype=torch.float64))
        t = low_discrepancy_times(tc.batch_size, u, cfg.diffusion.t_min)
        noise = torch.rand((1,) + tuple(x0.shape), generator=gen, dtype=torch.float64)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, tc)
        out = model(x0, t, noise, valid)
        loss = out[0].sum() / (tc.batch_size * board.cells)  # nats per scored cell
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        if (step + 1) % max(1, tc.steps // 5) == 0:
            log(f"    {objective} seed {seed} step {step + 1}: {float(loss.detach()):.4f} nats per cell")
    return model.eval(), time.perf_counter() - t0


def solve_with(denoise, schedule, sampler: str, options: dict, puzzles: torch.Tensor, seed: int) -> Tuple[torch.Tensor, float]:
    """(answers (N, C), network calls per puzzle) on ``puzzles`` with a registry sampler: a masked
    denoiser and its schedule (the clues fixed in ``x_init``), or the autoregressive model's ``denoise``
    (the puzzle as the prefix; ``schedule`` unused)."""
    from maskdiff.sampling.registry import REGISTRY

    gen = torch.Generator().manual_seed(1000 + seed)
    mask_id, cells = denoise.vocab_size, puzzles.shape[1]
    if sampler == "autoregressive":
        x_init = torch.cat([puzzles, torch.full_like(puzzles, mask_id)], 1)
        out = REGISTRY[sampler].sampler(denoise, tuple(x_init.shape), x_init=x_init, generator=gen, **options)
        return out.tokens[:, cells:], float(out.nfe.float().mean())
    x_init = torch.where(puzzles == sudoku.BLANK, torch.full_like(puzzles, mask_id), puzzles)
    out = REGISTRY[sampler].sampler(denoise, schedule, tuple(x_init.shape), steps=cells, x_init=x_init, generator=gen,
                                    **options)
    return out.tokens, float(out.nfe.float().mean())


def solve_by_rules(sampler: str, options: dict, puzzles: torch.Tensor, seed: int,
                   board: sudoku.Board = sudoku.NINE) -> Tuple[torch.Tensor, float]:
    """(answers, calls per puzzle) of the rules-only denoiser with a decoder of the table (the
    autoregressive row's: left to right, argmax)."""
    from maskdiff.schedules import get_schedule
    from maskdiff.tasks.sudoku_rules import RulesDenoiser, left_to_right

    denoise = RulesDenoiser(board)
    if sampler == "autoregressive":
        x_init = torch.where(puzzles == sudoku.BLANK, torch.full_like(puzzles, denoise.vocab_size), puzzles)
        return left_to_right(denoise, x_init), float((puzzles == sudoku.BLANK).sum(-1).float().mean())
    return solve_with(denoise, get_schedule("linear"), sampler, options, puzzles, seed)


def _rules_label(label: str) -> str:
    """The rules-only row of a decoder's row (the autoregressive row's order: left to right)."""
    return RULES_PREFIX + label.replace("autoregressive, ", "").replace("masked, ", "")


def held_out(scale: SudokuScale, pool: torch.Tensor) -> sudoku.SudokuSet:
    """The held-out puzzles (their own generator seed), checked disjoint from the training pool."""
    test = sudoku.generate(scale.test, scale.clues, seed=1_000_000, board=sudoku.get_board(scale.board))
    seen = {tuple(g) for g in pool.tolist()}
    if any(tuple(g) in seen for g in test.solutions.tolist()):
        raise MaskdiffError("a held-out grid is in the training pool; choose another generator seed")
    return test


def run_sudoku_experiment(scale_name: str = "cpu", out=None, *, seeds: Optional[int] = None, log=print,
                          device: str = "auto") -> dict:
    """Train both models per seed, solve the held-out puzzles with every decoder, write results.json/.md.
    Records are kept under OUT/records: an interrupted experiment resumes at the next (seed, model).
    Runs on the CPU (``device`` other than auto or cpu is refused: the models are small)."""
    import json

    if device not in ("auto", "cpu"):
        raise MaskdiffError(f"the Sudoku comparison runs on the CPU; got device {device!r}, choose one of: auto, cpu")
    scale = get_sudoku_scale(scale_name)
    out, n_seeds = results_folder(out, f"sudoku-{scale_name}", seeds, scale.seeds)
    (out / "records").mkdir(parents=True, exist_ok=True)
    board = sudoku.get_board(scale.board)
    pool = sudoku.random_grids(scale.pool, seed=0, board=board)
    test = held_out(scale, pool)
    avoid = frozenset(tuple(g) for g in test.solutions.tolist())
    clues = (test.puzzles != sudoku.BLANK).sum(-1).float()
    log(f"experiment sudoku at scale {scale_name}: {scale.test} held-out puzzles, {float(clues.mean()):.1f} clues on average, "
        f"{n_seeds} seeds -> {out}")
    records: List[dict] = []
    for seed in range(n_seeds):  # the rules-only denoiser: no training, the same decoders and draws
        path = out / "records" / f"rules-seed{seed}.json"
        if path.exists():
            records += json.loads(path.read_text(encoding="utf-8"))
            continue
        rows = []
        for label, sampler, options in DECODERS:
            label = _rules_label(label)
            answers, nfe = solve_by_rules(sampler, options, test.puzzles, seed, board)
            s = sudoku.scores(test.puzzles, test.solutions, answers, board)
            rows.append(dict(label=label, seed=seed, solved=float(s[:, 0].mean()), cells=float(s[:, 1].mean()), nfe=nfe))
        write_json(path, rows)
        records += rows
    for seed in range(n_seeds):
        path = out / "records" / f"seed{seed}.json"
        if path.exists():
            records += json.loads(path.read_text(encoding="utf-8"))
            continue
        models = {name: train_model(name, scale, pool, seed, log, avoid) for name in ("masked", "ar")}
        rows = []
        for label, sampler, options in DECODERS:
            model, seconds = models["ar" if sampler == "autoregressive" else "masked"]
            answers, nfe = solve_with(model.denoiser, model.schedule, sampler, options, test.puzzles, seed)
            s = sudoku.scores(test.puzzles, test.solutions, answers, board)
            rows.append(dict(label=label, seed=seed, solved=float(s[:, 0].mean()), cells=float(s[:, 1].mean()), nfe=nfe,
                             train_seconds=seconds))
            log(f"  seed {seed} {label}: solved {rows[-1]['solved']:.3f}, cells {rows[-1]['cells']:.3f}, {nfe:.1f} calls")
        write_json(path, rows)
        records += rows
    summary = summarise(records)
    summary.update(experiment="sudoku", scale=scale_name, scale_config=asdict(scale), seeds=n_seeds, **provenance("cpu"),
                   mean_clues=float(clues.mean()), one_look_cell_accuracy=sudoku.one_look_accuracy(test.puzzles, board))
    write_results(out, summary, markdown, log)
    return summary


def summarise(records: List[dict]) -> dict:
    """Per decoder: means and intervals over seeds; the claims judged on paired per-seed solve rates and
    cell accuracies."""
    present = {r["label"] for r in records}
    labels = [lab for lab in [d[0] for d in DECODERS] + [_rules_label(d[0]) for d in DECODERS] if lab in present]
    by = {lab: {r["seed"]: r for r in records if r["label"] == lab} for lab in labels}
    rows = {lab: {"solved": t_interval([r["solved"] for r in rs.values()]), "cells": t_interval([r["cells"] for r in rs.values()]),
                  "nfe": sum(r["nfe"] for r in rs.values()) / len(rs), "seeds": len(rs)} for lab, rs in by.items()}
    rand, prob, margin, ar = (d[0] for d in DECODERS[1:])
    rules = {lab: _rules_label(lab) for lab in (rand, prob, margin, ar)}
    claims = []
    pairs = ((margin, rand), (margin, prob), (margin, ar), (prob, ar), (rules[margin], rules[rand]), (rules[margin], rules[ar]))
    for better, worse in (p for p in pairs if p[0] in by and p[1] in by):
        for metric in ("solved", "cells"):
            # "better scores higher": the paired difference worse - better lies below 0
            p = paired_verdict({s: r[metric] for s, r in by[worse].items()}, {s: r[metric] for s, r in by[better].items()},
                               NOT_RESOLVED)
            claims.append({"claim": f"{better} beats {worse}", "metric": metric,
                           "difference": [0.0 - p.mean, 0.0 - p.high, 0.0 - p.low], "verdict": p.verdict, "seeds": p.seeds})
    return {"rows": rows, "claims": claims}


def markdown(summary: dict) -> str:
    """The table and the claims as Markdown."""
    body = [f"{lab} | {r['solved'][0]:.3f} | {ci_text(r['solved'][1:], '.3f')} | {r['cells'][0]:.3f} | "
            f"{ci_text(r['cells'][1:], '.3f')} | {r['nfe']:.1f}".split(" | ") for lab, r in summary["rows"].items()]
    lines = [f"{summary['mean_clues']:.1f} clues per held-out puzzle on average; a solver that knows the rules and guesses "
             f"uniformly among each blank's open digits gets {summary['one_look_cell_accuracy']:.3f} of the cells.", ""]
    lines += table(["decoder", "solved", "95% CI", "cell accuracy", "95% CI", "network calls"], body) + [""]
    what = {"solved": "solve rate", "cells": "cell accuracy"}
    lines += table(["claim", "on", "difference", "95% CI", "verdict"],
                   [[c["claim"], what[c["metric"]], f"{c['difference'][0]:+.3f}", ci_text(c["difference"][1:], "+.3f"), c["verdict"]]
                    for c in summary["claims"]])
    return "\n".join(lines) + "\n"
