"""``maskdiff distill``: a few-step student of a trained run (maskdiff.distill), resumable like training."""
from __future__ import annotations

from pathlib import Path

from maskdiff.cli.args import device_arg, nonneg_int, positive_float, positive_int, unit_float


def register(sub) -> None:
    from maskdiff.distill import METHODS, DistillSettings

    d = DistillSettings()
    p = sub.add_parser(
        "distill", help="distil a run into a few-step student (SDTT)",
        description="Distil a trained masked-diffusion run into a student that samples with fewer steps: each round halves "
                    "the steps, the student learning to match with one step its teacher's two steps of half the size (SDTT, "
                    "self-distillation through time, arXiv 2410.21035); it starts as the teacher, and each round's student "
                    "is the next round's teacher. OUT is an ordinary run folder (every command loads it) whose distill.json "
                    "records the steps it was distilled for, the default of maskdiff sample; OUT/rounds/T<steps>/ keeps "
                    "every round's student. Running the same command again resumes from the newest checkpoint (more "
                    "--rounds extend it). A student matches its teacher's marginals; what few steps lose by filling "
                    "dependent positions together is the sampler's to avoid: sample with --sampler dilated.")
    p.add_argument("run_dir", type=Path, help="the teacher: a run directory made by maskdiff train (objective 'masked')")
    p.add_argument("out", type=Path, help="the student's run folder (created, or resumed)")
    p.add_argument("--method", default=d.method, help=f"one of: {', '.join(METHODS)} (default: {d.method})")
    p.add_argument("--rounds", type=positive_int, default=d.rounds,
                   help=f"rounds K; the student samples with start-steps / 2^K steps (default: {d.rounds})")
    p.add_argument("--steps-per-round", type=positive_int, default=d.steps_per_round,
                   help=f"optimizer steps per round (default: {d.steps_per_round})")
    p.add_argument("--start-steps", type=positive_int, default=d.start_steps,
                   help=f"the teacher's sampling steps, halved by each round (default: {d.start_steps})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"sequences per step (default: {d.batch_size})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"AdamW learning rate, constant after warm-up (default: {d.lr})")
    p.add_argument("--warmup-steps", type=nonneg_int, default=d.warmup_steps, help=f"linear warm-up steps (default: {d.warmup_steps})")
    p.add_argument("--ema-decay", type=unit_float, default=d.ema_decay,
                   help=f"decay of the student's EMA, the weights sampled and passed on as the next teacher (default: {d.ema_decay})")
    p.add_argument("--grid", default=d.grid, help=f"the samplers' time grid the student is made for: uniform or cosine (default: {d.grid})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"fixes the data, the steps, the masks and the teacher's draws (default: {d.seed})")
    p.add_argument("--checkpoint-every", type=positive_int, default=d.checkpoint_every,
                   help=f"save a checkpoint every this many steps, and at the end of each round (default: {d.checkpoint_every})")
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads (0: leave torch's default)")
    device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import torch

    from maskdiff.distill import DistillSettings, distill
    from maskdiff.distributed import pick_device

    settings = DistillSettings(method=args.method, rounds=args.rounds, steps_per_round=args.steps_per_round, start_steps=args.start_steps,
                               batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, ema_decay=args.ema_decay,
                               seed=args.seed, grid=args.grid, checkpoint_every=args.checkpoint_every)
    settings.check()  # before anything is read
    if args.threads:
        torch.set_num_threads(args.threads)
    result = distill(args.run_dir, args.out, settings, device=str(pick_device(args.device)), progress=not args.no_progress)
    where = f"resumed from step {result.resumed_from}, " if result.resumed_from is not None else ""
    print(f"{result.out}: {result.step} steps ({where}{result.seconds:.0f} s); the student samples with "
          f"{result.recommended_steps} steps: maskdiff sample {result.out} (few steps lose least with --sampler dilated: "
          f"docs/sampling.md, 'Few steps')")
    return 0
