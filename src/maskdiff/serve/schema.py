"""The JSON API's request and answer types (pydantic): they are the schema that ``GET /openapi.json``
publishes, and they refuse wrong types and unknown fields before anything runs."""
from __future__ import annotations

from typing import Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field


class SampleRequest(BaseModel):
    """What to generate. Give a ``template`` (text with ``[N]`` spans of N tokens to fill) or a ``prompt``
    (a fixed prefix, then ``length`` minus its tokens generated), or neither (``length`` tokens from all
    masks). Limits (length, steps, samples) are the server's, listed by ``GET /model``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    template: Optional[str] = Field(None, description="text with [N] spans of N masked tokens, e.g. 'to be or [12] to be'")
    prompt: Optional[str] = Field(None, description="a fixed prefix; the sampler fills what follows")
    length: Optional[int] = Field(None, ge=1, description="tokens per sample with a prompt or none (default: the server's maximum)")
    sampler: Optional[str] = Field(None, description="one of the samplers GET /model lists (default: the model's default_sampler)")
    steps: int = Field(64, ge=1, description="reverse steps T (first-hitting has no grid and ignores it)")
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False, description="divide log mu by this before each draw (biased unless 1)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus truncation of mu (biased unless 1)")
    num: int = Field(1, ge=1, description="number of samples")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the sampler's generator: the same request gives the same samples")


class RowSpec(BaseModel):
    """One row of a GenerateRequest: a ``prompt`` or a ``template`` (not both), its length and its own seed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Optional[str] = Field(None, description="a fixed prefix; the sampler fills what follows")
    template: Optional[str] = Field(None, description="text with [N] spans of N masked tokens")
    length: Optional[int] = Field(None, ge=1, description="tokens of a prompted row (default: the server's maximum)")
    seed: Optional[int] = Field(None, ge=0, lt=2**63, description="this row's seed (default: derived from the request's seed and the row's index)")


class GenerateRequest(BaseModel):
    """Many prompts per call: ``rows``, each a prompt or a template with its own length, drawn ``batch_size``
    at a time; a row's output depends on its own seed only, never on the other rows or the batch size."""

    model_config = ConfigDict(extra="forbid", strict=True)

    rows: List[RowSpec] = Field(min_length=1, description="the rows, answered in this order (at most the server's max_samples)")
    sampler: Optional[str] = Field(None, description="one of the samplers GET /model lists (default: the model's default_sampler)")
    steps: int = Field(64, ge=1, description="reverse steps T")
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False, description="divide log mu by this before each draw (biased unless 1)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus truncation of mu (biased unless 1)")
    seed: int = Field(0, ge=0, lt=2**63, description="the seed every row's own seed is derived from")
    batch_size: int = Field(8, ge=1, description="rows drawn together (speed only)")
    stop_at_eos: Optional[bool] = Field(None, description="cut each text before its first generated end-of-text token "
                                        "(default: when the tokenizer has one)")


class RowAnswer(BaseModel):
    """One finished row."""

    index: int
    text: str = Field(description="prompt or template and generated tokens, cut before the first generated end-of-text token")
    tokens: List[int] = Field(description="every token id as drawn, past the cut too")
    network_calls: int
    seconds: float
    eos: bool = Field(description="whether the text was cut at an end-of-text token")
    seed: int


class GenerateAnswer(BaseModel):
    """Every row of a GenerateRequest, in its order."""

    rows: List[RowAnswer]
    sampler: str
    steps: int
    seconds: float


class SampleAnswer(BaseModel):
    """The finished samples: texts and token ids, the network calls each sample cost (NFE), the wall-clock
    of the sampler, and the step at which every position was revealed (0: a fixed token)."""

    texts: List[str]
    tokens: List[List[int]]
    nfe: List[int]
    seconds: float
    sampler: str
    steps: int
    steps_taken: int = Field(description="how many times the sampler reported a state (its steps, or its network calls for first-hitting)")
    revealed_at: List[List[int]]


class ErrorAnswer(BaseModel):
    """Every refusal: a message that says what was wrong and what is allowed (4xx), or "busy" (503)."""

    error: str


class ModelAnswer(BaseModel):
    """The loaded model, the samplers it can use and the server's limits."""

    description: str
    run: str
    objective: str
    modality: str
    vocab_size: int
    length: int
    schedule: str
    parameters: int
    checkpoint_step: Optional[int]
    weights: str
    device: str
    samplers: List[str]
    default_sampler: str
    limits: Dict[str, int]
    mask_glyph: str
