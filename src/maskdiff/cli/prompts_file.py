"""``maskdiff sample RUN --prompts-file in.jsonl``: many prompts per call, JSON lines in and out.

Each input line is a JSON object with a string ``prompt`` or ``template`` (not both), and optionally
``length`` (tokens of a prompted row) and ``seed`` (the row's own seed); other fields are carried to the
output untouched. Each output line is its input object plus ``text``, ``tokens``, ``network_calls``,
``seconds`` (and ``eos``: whether the text was cut at an end-of-text token). Every line is read and
every row checked against the model before anything is drawn; the output is written to a temporary
file beside ``--out`` and renamed at the end, so a failed or interrupted run leaves no partial file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Tuple

from maskdiff.errors import MaskdiffError

INPUT_FIELDS = {"prompt": str, "template": str, "length": int, "seed": int}
"""The fields a line may give for its row, and their JSON types."""
OUTPUT_FIELDS = ("text", "tokens", "network_calls", "seconds", "eos")
"""The fields each output line adds."""


def read_prompts(path: Path) -> Tuple[List[dict], list]:
    """The JSON objects of a prompts file and their rows (:class:`~maskdiff.sampling.rows.Row`); a bad line
    is a MaskdiffError naming the file, the line number and what is valid."""
    from maskdiff.sampling.rows import Row

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise MaskdiffError(f"cannot read the prompts file {path} ({getattr(err, 'strerror', None) or err})") from None
    records, rows = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise MaskdiffError(f"{where}: not valid JSON ({err.msg}); each line is one object such as "
                                '{"prompt": "to be", "length": 64}') from None
        if not isinstance(record, dict):
            raise MaskdiffError(f"{where}: a line is a JSON object with a \"prompt\" or a \"template\", got {type(record).__name__}")
        taken = [f for f in OUTPUT_FIELDS if f in record]
        if taken:
            raise MaskdiffError(f"{where}: field {taken[0]!r} is written by maskdiff to the output; rename it")
        if ("prompt" in record) == ("template" in record):
            got = ", ".join(record) or "none"
            raise MaskdiffError(f"{where}: give exactly one of \"prompt\" (a prefix) or \"template\" (text with [N] spans); "
                                f"fields given: {got}")
        for name, kind in INPUT_FIELDS.items():
            value = record.get(name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise MaskdiffError(f"{where}: \"{name}\" must be {'a string' if kind is str else 'an integer'}, got {value!r}")
        records.append(record)
        rows.append(Row(prompt=record.get("prompt"), template=record.get("template"), length=record.get("length"),
                        seed=record.get("seed")))
    if not rows:
        raise MaskdiffError(f"the prompts file {path} has no lines; write one JSON object per line, e.g. {{\"prompt\": \"to be\"}}")
    return records, rows


def run_prompts_file(args, pipe, options: dict) -> int:
    """Read, check, draw every row (a progress bar over rows), then write the JSON lines: the command's work."""
    from maskdiff.modalities import get_modality
    from maskdiff.runs import sample_file
    from maskdiff.sampling.rows import RowsRequest

    if get_modality(pipe.config).renders_images:
        raise MaskdiffError("--prompts-file takes text prompts; an image run samples without it (maskdiff sample RUN --num N)")
    records, rows = read_prompts(args.prompts_file)
    request = RowsRequest(rows, sampler=args.sampler, steps=args.steps, seed=args.seed, length=args.length, block=args.block,
                          options=options, batch_size=args.batch_size, stop_at_eos=args.stop_at_eos)
    try:
        checked = request.check(pipe.target())
    except MaskdiffError as err:  # name the line, not the row index
        message = str(err)
        if message.startswith("row "):
            index, rest = message[4:].split(":", 1)
            message = f"{args.prompts_file}, line {_line_of(args.prompts_file, int(index))}:{rest}"
        raise MaskdiffError(message) from None
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="rows", unit="row", dynamic_ncols=True)
    try:
        results = pipe.run_rows(checked, on_row=(lambda r: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    path = args.out or sample_file(args.run_dir, checked.rows[0].sampler, args.steps, ".jsonl")
    lines = [json.dumps(dict(rec, text=r.text, tokens=r.tokens, network_calls=r.network_calls, seconds=round(r.seconds, 4),
                             eos=r.eos), ensure_ascii=False) for rec, r in zip(records, results)]
    write_atomically(path, "\n".join(lines) + "\n")
    calls = sum(r.network_calls for r in results) / len(results)
    cut = sum(r.eos for r in results)
    print(f"{len(results)} rows, {checked.rows[0].sampler} sampler, {args.steps} steps, batch size {args.batch_size}, "
          f"mean NFE {calls:.1f}, {cut} cut at end-of-text")
    print(f"saved to {path}")
    return 0


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it there: the file is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _line_of(path: Path, index: int) -> int:
    """The line number of the ``index``-th non-blank line."""
    seen = -1
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            seen += 1
            if seen == index:
                return number
    return index + 1
