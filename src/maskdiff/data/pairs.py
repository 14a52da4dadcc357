"""Prompt/response pairs for conditional training (fine-tuning; docs/conditional.md).

A pairs file is JSONL (one object per line) or Parquet. Each row has string fields ``prompt`` and
``response``, or a ``messages`` list of ``{"role", "content"}`` turns: the prompt is then every turn before
the last assistant turn, rendered with the tokenizer's chat template and its generation prompt, and the
response is the content of that last assistant turn. Every pair becomes one row of ``length`` tokens:

    prompt | response EOS EOS ... EOS

The prompt's tokens are exactly those ``maskdiff sample --prompt`` fixes (no BOS is added: a chat template
writes its own, and a prompt may start with the tokenizer's BOS text). They are the condition: never masked
and never scored (``cond`` True). The response and the end-of-text padding after it are
masked and scored, so that the model learns where to stop (LLaDA's recipe). End-of-text is the
tokenizer's EOS; a tokenizer without one (the character tokenizers) uses id 0, as padding does
(:func:`maskdiff.data.packing.pad_id_for`; text8: the space). Every row has the one length ``length``
(``data.length``): a batch is one tensor and a step costs what an unconditional step of that length costs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from maskdiff.data.packing import pad_id_for
from maskdiff.errors import MaskdiffError

FORMATS = (".jsonl", ".parquet")
HOLDOUT_SEED = 0  # the shuffle that picks the held-out rows: fixed, so every seed of a run sees the same split
EXPECTED = "string fields 'prompt' and 'response', or a 'messages' list of {\"role\", \"content\"}"


@dataclass
class PairRows:
    """Encoded pairs, one per row."""

    tokens: Tensor
    """(N, L) long: prompt, response, end-of-text padding."""
    cond: Tensor
    """(N, L) bool: True on the prompt (the condition: never masked, never scored)."""

    def __len__(self) -> int:
        return self.tokens.shape[0]


def read_records(path) -> List[dict]:
    """The rows of a .jsonl or .parquet file as dicts, with a one-line error naming a bad line."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise MaskdiffError(f"pairs file {path} is not a {' or '.join(FORMATS)} file")
    if not path.is_file():
        raise MaskdiffError(f"pairs file {path} does not exist")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MaskdiffError("reading a Parquet pairs file needs pyarrow; pip install 'maskdiff[text]'") from None
        try:
            records = pq.read_table(str(path)).to_pylist()
        except Exception as err:  # pyarrow's own exception types
            raise MaskdiffError(f"pairs file {path} is not a readable Parquet file ({str(err).splitlines()[0]})") from None
        if not records:
            raise MaskdiffError(f"pairs file {path} has no rows")
        return records
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise MaskdiffError(f"line {i} of {path} is not valid JSON ({err.msg}); a pairs file holds one JSON object per line") from None
        if not isinstance(row, dict):
            raise MaskdiffError(f"line {i} of {path} is not a JSON object; each line needs {EXPECTED}")
        records.append(row)
    if not records:
        raise MaskdiffError(f"pairs file {path} has no rows")
    return records


def chat_renderer(tokenizer) -> Callable[[List[dict]], str]:
    """``render(turns) -> prompt text``: the turns through the tokenizer's chat template with its generation
    prompt. Only a tokenizer folder (data.tokenizer a directory) can carry a template."""
    name = getattr(tokenizer, "name", None)
    folder = Path(name) if isinstance(name, str) and Path(name).is_dir() else None
    hf = None
    if folder is not None:
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (ImportError, OSError, ValueError):
            hf = None
    if hf is None or not getattr(hf, "chat_template", None):
        which = f"the tokenizer in {folder}" if folder is not None else f"the {name or tokenizer.config().get('kind')} tokenizer"
        raise MaskdiffError(f"'messages' rows need a chat template and {which} has none; give 'prompt' and 'response' "
                            "fields, or a tokenizer folder (data.tokenizer) whose tokenizer_config.json has a chat_template")

    def render(turns: List[dict]) -> str:
        return hf.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    return render


def _split_messages(messages, where: str) -> Tuple[List[dict], str]:
    """(the turns before the last assistant turn, that turn's content)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                  and isinstance(m.get("content"), str) for m in messages):
        raise MaskdiffError(f"{where}: 'messages' must be a list of {{\"role\": str, \"content\": str}} turns")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last != len(messages) - 1:
        raise MaskdiffError(f"{where}: the last turn of 'messages' must be the assistant's (the response)")
    if last == 0:
        raise MaskdiffError(f"{where}: the prompt is empty (no turn before the assistant's); every pair needs a prompt")
    return [{"role": m["role"], "content": m["content"]} for m in messages[:last]], messages[last]["content"]


def to_pairs(records: Sequence[dict], tokenizer, path) -> List[Tuple[str, str]]:
    """(prompt text, response text) of every record, a 'messages' prompt rendered by the chat template."""
    render: Optional[Callable] = None
    out = []
    for i, row in enumerate(records, 1):
        where = f"row {i} of {path}"
        if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
            out.append((row["prompt"], row["response"]))
        elif "messages" in row and row["messages"] is not None:
            turns, response = _split_messages(row["messages"], where)
            render = render or chat_renderer(tokenizer)
            out.append((render(turns), response))
        else:
            raise MaskdiffError(f"{where} has fields {sorted(row)}; each row needs {EXPECTED}")
    return out


def end_of_text_id(tokenizer) -> int:
    """The id that ends a response and pads it to the row length: EOS, else 0 (text8: the space)."""
    return pad_id_for(tokenizer)


def encode_pairs(pairs: Sequence[Tuple[str, str]], tokenizer, length: int, path) -> PairRows:
    """Rows prompt | response EOS ... EOS of ``length`` tokens; the prompt part is the condition."""
    eot = end_of_text_id(tokenizer)
    tokens = torch.full((len(pairs), length), eot, dtype=torch.long)
    cond = torch.zeros((len(pairs), length), dtype=torch.bool)
    for i, (prompt, response) in enumerate(pairs):
        p = tokenizer.encode(prompt)
        if p.numel() == 0:
            raise MaskdiffError(f"row {i + 1} of {path}: the prompt is empty; every pair needs a prompt of at least one token")
        r = tokenizer.encode(response)
        need = p.numel() + r.numel() + 1
        if need > length:
            raise MaskdiffError(f"row {i + 1} of {path}: prompt ({p.numel()} tokens) + response ({r.numel()}) + end-of-text (1) "
                                f"= {need} tokens, more than the row length {length}; raise data.length (--length) or shorten the pair")
        tokens[i, : p.numel()] = p
        tokens[i, p.numel() : p.numel() + r.numel()] = r
        cond[i, : p.numel()] = True
    return PairRows(tokens, cond)


def holdout_indices(n: int, fraction: float) -> Tuple[Tensor, Tensor]:
    """(train rows, validation rows) of n rows: a fixed shuffle, the first max(1, round(n * fraction))
    held out when fraction > 0."""
    if fraction <= 0:
        return torch.arange(n), torch.arange(0)
    held = max(1, round(n * fraction))
    if held >= n:
        raise MaskdiffError(f"holding out {fraction} of {n} pairs leaves none to train on; give more pairs, a smaller "
                            "pairs_holdout or a separate validation file (pairs_validation)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return order[held:].sort().values, order[:held].sort().values


SPLITS = ("train", "validation")


def pair_rows(tokenizer, length: int, pairs: str, split: str, *, validation: str = "", holdout: float = 0.05) -> PairRows:
    """The encoded rows of one split: ``train`` (the rows of ``pairs`` not held out) or ``validation`` (the
    file ``validation``, else the held-out rows of ``pairs``)."""
    if split not in SPLITS:
        raise MaskdiffError(f"pairs have the splits {', '.join(SPLITS)}, not {split!r}")
    if split == "validation" and validation:
        return file_rows(tokenizer, length, validation)
    records = read_records(pairs)
    train_idx, val_idx = holdout_indices(len(records), 0.0 if validation else holdout)
    idx = train_idx if split == "train" else val_idx
    if idx.numel() == 0:
        raise MaskdiffError("no validation pairs: set pairs_holdout above 0 or give a validation file (pairs_validation)")
    chosen = [records[i] for i in idx.tolist()]
    return encode_pairs(to_pairs(chosen, tokenizer, pairs), tokenizer, length, pairs)


def file_rows(tokenizer, length: int, path) -> PairRows:
    """Every pair of one file, encoded (evaluation on a file of pairs)."""
    return encode_pairs(to_pairs(read_records(path), tokenizer, path), tokenizer, length, path)


class PairSource:
    """Training batches of pairs: rows drawn uniformly with replacement; ``draw`` also returns the
    condition mask (the trainer passes it to the objective)."""

    def __init__(self, rows: PairRows):
        self.rows = rows

    def draw(self, batch: int, generator: torch.Generator) -> Tuple[Tensor, None, None, Tensor]:
        """(x0 (B, L), valid: None, labels: None, cond (B, L))."""
        idx = torch.randint(0, len(self.rows), (batch,), generator=generator)
        return self.rows.tokens[idx], None, None, self.rows.cond[idx]

    def describe(self) -> str:
        return "random_pairs(seed, step)"


def describe_rows(rows: PairRows) -> Dict[str, float]:
    """Counts for reports: rows, prompt and response tokens (the end-of-text padding included)."""
    prompt = int(rows.cond.sum())
    return {"rows": len(rows), "prompt_tokens": prompt, "response_tokens": int(rows.cond.numel()) - prompt}
