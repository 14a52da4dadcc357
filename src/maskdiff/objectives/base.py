"""The base of every objective: a module holding the denoiser it trains (and any learned schedule), its
weights in one flat checkpoint namespace, the two loss entry points, :meth:`Objective.sample`, and the
class attributes that tell the trainer, the evaluator, the samplers and the command line what a run of
this objective supports."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.loss import NELBOTerms
from maskdiff.networks.transformer import DiT
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.request import CheckedRequest, draw
from maskdiff.schedules import Schedule

CONDITIONAL_OBJECTIVES = ("masked", "block", "ar")  # the objectives with ``conditional`` (a test checks it)


def network_arguments(config: RunConfig, vocab_size: int, objective: Type["Objective"]) -> Tuple[str, Dict[str, Any]]:
    """(backbone, the keyword arguments of its network class) of a run (model.backbone), shaped by what the
    objective needs (causal attention, a mask logit): what :func:`build_network` builds and what a model
    folder records for Hugging Face's Auto classes (maskdiff.hf). Backbone 'hf': its hf_config."""
    m = config.model
    time_conditioned = m.time_conditioned and objective.time_conditioning_allowed
    if m.backbone == "mdlm-dit":
        return "mdlm-dit", dict(vocab_size=vocab_size, max_length=config.data.length, width=m.width, depth=m.depth, heads=m.heads,
                                cond_dim=m.cond_dim, mlp_ratio=int(m.mlp_ratio), dropout=m.dropout, time_conditioned=time_conditioned,
                                causal=objective.causal, **({"block_size": config.diffusion.block_size} if objective.block_network else {}))
    if m.backbone == "md4-transformer":
        return "md4-transformer", dict(vocab_size=vocab_size, max_length=config.data.length, width=m.width, depth=m.depth,
                                       heads=m.heads, time_conditioned=time_conditioned)
    if m.backbone == "hf":
        return "hf", dict(m.hf_config)
    return "dit", dict(
        vocab_size=vocab_size,
        max_length=config.data.length,
        width=m.width,
        depth=m.depth,
        heads=m.heads,
        mlp_ratio=m.mlp_ratio,
        cond_dim=m.cond_dim,
        time_conditioned=time_conditioned,
        causal=objective.causal,
        dropout=m.dropout,
        output_mask_logit=objective.predicts_mask(config),
        num_classes=m.num_classes,
        init=m.init,
        # a block-diffusion network has no local mixing: it would mix the two streams and the blocks
        local_mixing=0 if objective.block_network else m.local_mixing,
        block_size=config.diffusion.block_size if objective.block_network else 0,
        **({"absolute_positions": True} if m.absolute_positions else {}),
    )


def build_network(config: RunConfig, vocab_size: int, objective: Type["Objective"]) -> nn.Module:
    """The network of a run (:func:`network_arguments`). MDLM's DiT always outputs the mask column; a Hugging
    Face masked LM never does (its own mask token's column is -inf)."""
    backbone, arguments = network_arguments(config, vocab_size, objective)
    if backbone == "mdlm-dit":
        from maskdiff.networks.mdlm_dit import MDLMDiT

        return MDLMDiT(**arguments)
    if backbone == "md4-transformer":
        from maskdiff.networks.md4_transformer import MD4Transformer

        if config.model.dropout or objective.causal or objective.predicts_mask(config):
            raise MaskdiffError("backbone md4-transformer has no dropout, no causal attention and no mask logit (MD4's network); "
                                "use backbone dit or mdlm-dit for those")
        return MD4Transformer(**arguments)
    if backbone == "hf":
        from maskdiff.networks.masked_lm import HFMaskedLM

        network = HFMaskedLM.from_config(arguments, pretrained=config.model.pretrained, trust_remote_code=config.model.trust_remote_code)
        if config.model.lora_rank:
            network.add_lora(config.model.lora_rank)
        if network.vocab_size != vocab_size:
            raise MaskdiffError(f"the Hugging Face backbone has {network.vocab_size} tokens but the tokenizer has {vocab_size}; "
                                "use the tokenizer the backbone was trained with (e.g. --tokenizer bert for MiniLM)")
        return network
    return DiT(**arguments)


def backbone_config(name: str) -> Tuple[Dict[str, Any], str]:
    """(hf_config, tokenizer) of a Hugging Face masked LM to use as backbone 'hf': a named backbone
    ('minilm') or a model folder. The tokenizer is 'bert' for a BERT vocabulary of 30,522 tokens,
    otherwise the folder itself (its tokenizer files). The mask token id is recorded in hf_config."""
    from maskdiff.networks.masked_lm import pretrained_folder, read_hf_config

    try:
        folder = pretrained_folder(name)
        cfg = read_hf_config(folder)
    except ValueError as err:
        raise MaskdiffError(str(err)) from None
    bert = cfg.get("model_type") == "bert" and cfg.get("vocab_size") == 30522
    if "mask_token_id" not in cfg:
        ids = _mask_token_in(folder)
        if ids is None and not bert:
            raise MaskdiffError(f"{folder} names no mask token (mask_token_id in config.json, or [MASK] / <mask> in tokenizer.json)")
        cfg["mask_token_id"] = 103 if ids is None else ids
    return cfg, "bert" if bert else str(folder)


def _mask_token_in(folder: Path) -> Optional[int]:
    import json

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens", [])
    return next((int(a["id"]) for a in added if a.get("content") in ("[MASK]", "<mask>")), None)


class Objective(nn.Module):
    """Base: the denoiser (the network wrapped as what the losses and samplers call), an optional learned
    schedule, the two loss entry points and :meth:`sample`.

    The class attributes say what the rest of the library may do with a run of this objective; nothing
    outside this package compares an objective's name."""

    name = "?"
    """The name in config.diffusion.objective (and in the registry OBJECTIVES)."""
    noise_draws = 1
    """How many (B, L) sets of mask uniforms one training step needs."""
    uses_time = True
    """Whether the trainer's t matters."""
    causal = False
    """The network attends left to right (the autoregressive baseline)."""
    time_conditioning_allowed = True
    """Whether model.time_conditioned may switch on adaLN time conditioning."""
    exact_likelihood = False
    """Evaluation gives an exact NLL, not an upper bound (NELBO)."""
    continuous_time_only = False
    """Trains in continuous time only: config.diffusion.discrete_steps must be 0."""
    discrete_time_eval = False
    """Evaluation can also compute the discrete-time NELBO with T steps (eval --discrete-steps)."""
    subs_switches = False
    """carry_over and zero_mask may be switched off (MDLM's SUBS ablation)."""
    class_conditional = False
    """Class-conditional training (model.num_classes) is supported."""
    conditional = False
    """Conditional training on prompt/response pairs (data.pairs): the losses keep a per-position condition
    (the prompt) out of the forward process and the score (``cond`` of :meth:`train_loss`, :meth:`eval_terms`)."""
    learns_schedule = False
    """The masking schedule is trained with the network (GenMD4's per-token exponents)."""
    block_network = False
    """The network runs in block diffusion's two-stream mode (diffusion.block_size, BD3-LM)."""
    streams = 1
    """Copies of the sequence the network reads per training example (block diffusion's x_t and x_0: 2),
    for the FLOPs of a run."""
    any_length = False
    """Samples of any length, stopping at the tokenizer's end-of-text token where it has one."""
    samples_with: Optional[str] = None
    """None: every masked-diffusion sampler of the registry applies; otherwise the registry name of the
    objective's own sampler (run by :meth:`own_sample`)."""
    schedule: Optional[Schedule] = None
    """The masking schedule the losses and samplers read (GenMD4: the learned one); None for the
    autoregressive baseline, which has none."""
    checkpoint_names: Tuple[Tuple[str, str], ...] = (("exponents.", "genmd4."), ("denoiser.network.", ""))
    """How this module's state-dict keys are written in checkpoints and model folders, (module prefix,
    checkpoint prefix), the first match wins: the network's own names (so checkpoints of masked runs keep
    their layout) and ``genmd4.*`` for GenMD4's exponents."""

    denoiser: nn.Module
    """The network wrapped as the losses and samplers call it: a SUBS denoiser, a block denoiser, or the
    next-token model of the autoregressive baseline (built by :meth:`make_denoiser`)."""
    exponents: Optional[nn.Module]
    """GenMD4's learned per-token exponents (loss/genmd4.py); None for every other objective."""

    def __init__(self, config: RunConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.denoiser = self.make_denoiser(build_network(config, vocab_size, type(self)))
        self.exponents = None
        self.register_state_dict_post_hook(_to_checkpoint_names)
        self.register_load_state_dict_pre_hook(_from_checkpoint_names)

    def make_denoiser(self, network: nn.Module) -> nn.Module:
        """The network wrapped as this objective's denoiser."""
        raise NotImplementedError

    @property
    def network(self) -> nn.Module:
        """The network (model.backbone) inside the denoiser."""
        return self.denoiser.network

    @property
    def kind(self) -> str:
        return self.name

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- what a config of this objective may hold ---------------------------------------------
    @classmethod
    def predicts_mask(cls, config: RunConfig) -> bool:
        """Whether the network has an output logit for the mask token (MDLM's zero-masking ablation)."""
        return False

    @classmethod
    def validate(cls, config: RunConfig) -> None:
        """The objective's own rules on a config; raise MaskdiffError."""
        dc, m = config.diffusion, config.model
        ablated = not (dc.carry_over and dc.zero_mask)
        if ablated:
            if not cls.subs_switches:
                raise MaskdiffError("carry_over and zero_mask are switches of the masked objective only")
            if not dc.discrete_steps:
                raise MaskdiffError("the SUBS ablation (carry_over or zero_mask off) is defined in discrete time: "
                                    "set discrete_steps, e.g. --discrete-steps 1000 as MDLM")
        if m.num_classes and (not cls.class_conditional or ablated):
            raise MaskdiffError("class-conditional training (num_classes) works with the masked objective and SUBS only")
        if not cls.block_network and (dc.block_size or (dc.mask_rate_min, dc.mask_rate_max) != (0.0, 1.0)):
            raise MaskdiffError("block_size and the clipped mask rates are settings of the block objective (--objective block)")
        if m.backbone == "hf" and (cls.causal or cls.predicts_mask(config)):
            raise MaskdiffError(f"a Hugging Face masked LM attends both ways and never predicts its mask token: it cannot train the "
                                f"{cls.name} objective{' with zero_mask off' if not cls.causal else ''}; use backbone dit or mdlm-dit")
        if m.backbone == "hf":
            limit = int(m.hf_config.get("max_position_embeddings", 512))
            if config.data.length > limit:
                raise MaskdiffError(f"sequence length {config.data.length} exceeds the backbone's {limit} positions")
        if cls.continuous_time_only and dc.discrete_steps:
            raise MaskdiffError(f"{cls.name} trains in continuous time; set discrete_steps to 0")
        if config.data.pairs and not cls.conditional:
            raise MaskdiffError(_not_conditional(cls.name))
        if config.data.pairs and ablated:
            raise MaskdiffError("conditional training (data.pairs) needs SUBS: leave carry_over and zero_mask on")

    def describe_estimate(self, discrete_steps: Optional[int] = None) -> str:
        """What :meth:`eval_terms` computes, in words."""
        return "continuous NELBO"

    @torch.no_grad()
    def sample(self, request: CheckedRequest, *, progress: bool = False, callback=None) -> SampleOutput:
        """Draw a request checked against this model (:meth:`SampleRequest.check
        <maskdiff.sampling.request.SampleRequest.check>`): a masked-diffusion sampler of the registry on
        the denoiser, or the objective's own sampler. The generator is seeded with the request's seed on
        the device of the weights."""
        device = self.device
        generator = torch.Generator(device=device).manual_seed(request.seed)
        if self.samples_with is None:
            return draw(self.denoiser, self.schedule, request, generator=generator, device=device, progress=progress, callback=callback)
        if request.sampler != self.samples_with:
            raise MaskdiffError(f"a {self.kind} model samples with its own sampler ({self.samples_with}), not {request.sampler}")
        kwargs = dict(request.options, device=device)
        if callback is not None:
            kwargs["callback"] = callback
        return self.own_sample((request.num, request.length), steps=request.steps, generator=generator, x_init=request.x_init,
                               progress=progress, **kwargs)

    def own_sample(self, shape: Tuple[int, int], *, steps: int, generator: torch.Generator, x_init: Optional[Tensor] = None,
                   progress: bool = False, **kwargs) -> SampleOutput:
        """Sample with the objective's own sampler (when ``samples_with`` is set)."""
        raise NotImplementedError

    # --- weights, one flat checkpoint namespace -------------------------------------------------
    def checkpoint_name(self, name: str) -> str:
        """The checkpoint key of a parameter or state-dict entry called ``name`` in this module."""
        for module_prefix, saved in self.checkpoint_names:
            if name.startswith(module_prefix):
                return saved + name[len(module_prefix):]
        raise MaskdiffError(f"{name} has no checkpoint name (an objective's weights live in its denoiser's network and its exponents)")

    def load_weights(self, weights: Dict[str, Tensor], source) -> None:
        """Load a flat dict of checkpoint names, with a clear error on any missing, unexpected or wrongly shaped entry."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
        if missing or unexpected or wrong:
            detail = (missing and f"missing {missing[:3]}") or (unexpected and f"unexpected {unexpected[:3]}") or f"shape of {wrong[:3]}"
            raise MaskdiffError(f"{source} does not fit this model's architecture ({detail})")
        self.load_state_dict(weights)

    def init_from_pretrained(self, log=None) -> None:
        """Copy the weights named by model.pretrained into the network (training calls this when it starts a
        run, not when it resumes one). Backbone 'hf': a Hugging Face model folder or a named backbone;
        weights it lacks (an encoder saved without its masked-LM head) keep their fresh initialisation and
        are listed through ``log``. Other backbones: a folder written by save_pretrained, whole."""
        name = self.config.model.pretrained
        if self.config.model.backbone == "hf":
            from maskdiff.networks.masked_lm import pretrained_folder

            try:
                folder = pretrained_folder(name)
                info = self.network.load_pretrained(folder, trust_remote_code=self.config.model.trust_remote_code)
            except ValueError as err:
                raise MaskdiffError(str(err)) from None
            if log is not None:
                fresh = f"; freshly initialised: {', '.join(info['missing'])}" if info["missing"] else ""
                log(f"network initialised from {folder}{fresh}")
            return
        from safetensors.torch import load_file

        path = Path(name) / "model.safetensors"
        if not path.is_file():
            raise MaskdiffError(f"pretrained {name!r} is not a folder written by save_pretrained / maskdiff export (no {path.name})")
        self.load_weights(load_file(str(path)), path)
        if log is not None:
            log(f"network initialised from {path}")

    def set_check_inputs(self, on: bool) -> None:
        self.denoiser.check_inputs = on

    # --- losses ---------------------------------------------------------------------------------
    def train_loss(self, x0: Tensor, t: Tensor, noise: Tensor, valid: Optional[Tensor] = None,
                   labels: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(what to backpropagate (B,), the NELBO estimate to log (B,)), in nats per sequence.

        t: (B,) on [t_min, 1]; noise: (noise_draws, B, L) float64 uniforms for the masks; labels: (B,)
        class labels of a class-conditional masked model (the null class included). Objectives with
        ``conditional`` also take ``cond`` (B, L) bool, the prompt: never masked, never scored."""
        raise NotImplementedError

    def eval_terms(self, x0: Tensor, t: Tensor, generator: torch.Generator, valid: Optional[Tensor] = None,
                   discrete_steps: Optional[int] = None) -> NELBOTerms:
        """Per-sequence NELBO terms; objectives with ``conditional`` also take ``cond`` (B, L), and their terms
        are then those of the rest of the row given the condition."""
        raise NotImplementedError

    def check_conditional(self, cond: Optional[Tensor]) -> dict:
        """The keyword that passes a condition mask to :meth:`train_loss` / :meth:`eval_terms` ({} without one);
        refuses one where this objective cannot honour it."""
        if cond is None:
            return {}
        if not self.conditional:
            raise MaskdiffError(_not_conditional(self.name))
        return {"cond": cond}

    def forward(self, x0: Tensor, t: Tensor, noise: Tensor, valid: Optional[Tensor] = None, labels: Optional[Tensor] = None,
                cond: Optional[Tensor] = None) -> Tensor:
        """One training step's losses as (2, B): what to backpropagate and the NELBO to log (:meth:`train_loss`),
        the call DDP and FSDP2 wrap (distributed.py). cond: (B, L) the prompt of conditional training, or None."""
        loss, nelbo = self.train_loss(x0, t, noise, valid=valid, labels=labels, **self.check_conditional(cond))
        return torch.stack([loss, nelbo.to(loss.dtype)])


def _not_conditional(name: str) -> str:
    return (f"the {name} objective cannot keep a prompt out of its forward process; conditional training on pairs "
            f"(data.pairs) works with the objectives: {', '.join(CONDITIONAL_OBJECTIVES)}")


def _to_checkpoint_names(module: Objective, state_dict, prefix: str, local_metadata) -> None:
    """State-dict post hook: this module's keys renamed to their checkpoint names, in order, in place."""
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        own = key.startswith(prefix)
        state_dict[prefix + module.checkpoint_name(key[len(prefix):]) if own else key] = value


def _from_checkpoint_names(module: Objective, state_dict, prefix: str, *args) -> None:
    """Load pre hook: checkpoint names back to this module's keys, in place (unknown keys stay, and are
    then reported as unexpected)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for module_prefix, saved in module.checkpoint_names:
            if rest.startswith(saved):
                state_dict[prefix + module_prefix + rest[len(saved):]] = state_dict.pop(key)
                break
