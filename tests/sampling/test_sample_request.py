"""One way to sample a trained model: the sampler registry's declarations, the check of a SampleRequest
against a model (every bad input one line naming what is valid), and Objective.sample through the
registry (the same draws as the sampler function called directly)."""
import inspect

import pytest
import torch

from helpers import micro_config
from maskdiff.errors import MaskdiffError
from maskdiff.objectives import build_objective
from maskdiff.modalities import build_tokenizer
from maskdiff.pipeline import Pipeline
from maskdiff.sampling import SAMPLERS, ancestral_sample, prompt_state, semi_autoregressive_sample
from maskdiff.sampling.registry import MASKED_SAMPLERS, REGISTRY, RUNTIME_ARGUMENTS, check_options, cli_options, sampler_kwargs
from maskdiff.sampling.request import SampleRequest


def _pipe(objective="masked", **model):
    cfg = micro_config()
    cfg.diffusion.objective = objective
    if objective == "block":
        cfg.diffusion.block_size = 4
    for k, v in model.items():
        setattr(cfg.model, k, v)
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    return Pipeline(cfg, tok, build_objective(cfg, tok.vocab_size))


@pytest.fixture(scope="module")
def pipe():
    return _pipe()


# --- the registry ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_declared_option_is_a_keyword_of_the_function_with_the_declared_default(name):
    entry = REGISTRY[name]
    params = inspect.signature(entry.function).parameters
    for option in entry.options:
        assert option.name in params, f"{name} declares {option.name}, which {entry.function.__name__} does not take"
        default = params[option.name].default
        if default is not None:
            assert option.default == default, (name, option.name)
    for key in (*entry.bound, *entry.unused):
        assert key in params, (name, key)
        assert entry.option(key) is None, (name, key)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_keyword_of_the_function_is_declared_bound_or_given_by_the_caller(name):
    entry = REGISTRY[name]
    declared = {o.name for o in entry.options} | set(entry.bound) | set(entry.unused) | RUNTIME_ARGUMENTS
    undeclared = [p for p in inspect.signature(entry.function).parameters if p not in declared]
    assert not undeclared, f"{name}: {undeclared} are neither options nor bound nor given by the caller"
    if "grid" in {o.name for o in entry.options}:
        assert entry.time_grid, name
    if not entry.time_grid:
        assert entry.option("grid") is None, name


def test_samplers_are_the_registry_entries_of_masked_diffusion():
    assert list(SAMPLERS) == list(MASKED_SAMPLERS) == [n for n, e in REGISTRY.items() if e.objective is None]
    assert {e.objective for e in REGISTRY.values()} - {None} == {"genmd4", "ar", "block"}
    assert REGISTRY["cached"].time_independent and not REGISTRY["ancestral"].time_independent
    assert not REGISTRY["first-hitting"].time_grid and not REGISTRY["threshold"].time_grid


def test_one_flag_stands_for_options_of_one_kind():
    for flag, (first, owners) in cli_options().items():
        for name in owners:
            option = next(o for o in REGISTRY[name].options if o.cli_flag == flag)
            assert (option.kind, option.choices, option.dest) == (first.kind, first.choices, first.dest), (flag, name)
    assert cli_options()["--decode-block"][0].name == "block_size"
    assert cli_options()["--no-kv-cache"][0].argparse_kwargs("h")["const"] is False


def test_command_line_values_become_sampler_keywords_or_a_refusal_naming_the_flag():
    values = {"eta": 0.1, "t_on": None, "decode_block": None, "kv_cache": None, "threshold": None}
    assert sampler_kwargs("remdm-cap", values) == {"eta": 0.1}
    assert sampler_kwargs("threshold", {"decode_block": 8, "kv_cache": "prefix"}) == {"block_size": 8, "cache": "prefix"}
    assert sampler_kwargs("block", {"no_kv_cache": False}) == {"kv_cache": False}
    with pytest.raises(MaskdiffError, match=r"--eta applies to remdm-cap, remdm-rescale, remdm-conf, remdm-loop \(masked-diffusion models\), not to ancestral"):
        sampler_kwargs("ancestral", values)
    with pytest.raises(MaskdiffError, match=r"--t-on applies to remdm-loop \(masked-diffusion models\), not to remdm-cap"):
        sampler_kwargs("remdm-cap", {"t_on": 0.5})
    with pytest.raises(MaskdiffError, match=r"eta must be in \[0, 1\], got 3"):
        sampler_kwargs("remdm-cap", {"eta": 3.0})


@pytest.mark.parametrize("sampler, options, needle", [
    ("first-hitting", {"grid": "cosine"}, "the first-hitting sampler has no time grid"),
    ("ancestral", {"kv_cache": False}, "option kv_cache applies to the block sampler (block diffusion models), not to ancestral; "
                                       "ancestral takes: grid, temperature, top_p"),
    ("ancestral", {"beam": 4}, "unknown sampler option 'beam'; the ancestral sampler takes: grid, temperature, top_p"),
    ("ancestral", {"temperature": 0}, "temperature must be in (0, inf), got 0"),
    ("ancestral", {"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
    ("ancestral", {"grid": "log"}, "unknown grid 'log' for the ancestral sampler; choose one of: uniform, cosine"),
    ("threshold", {"block_size": 2.5}, "block_size of the threshold sampler must be an integer in [1, inf), got 2.5"),
    ("remdm-cap", {"cache": "yes"}, "option cache of the remdm-cap sampler is true or false, got 'yes'"),
])
def test_bad_options_are_refused_naming_what_is_valid(sampler, options, needle):
    with pytest.raises(MaskdiffError) as err:
        check_options(sampler, options)
    assert str(err.value) == needle or needle in str(err.value)
    assert "\n" not in str(err.value)


# --- the check of a request --------------------------------------------------------------------------

@pytest.mark.parametrize("fields, needle", [
    (dict(sampler="anchestral"), "unknown sampler 'anchestral'; choose one of: " + ", ".join(MASKED_SAMPLERS)),
    (dict(num=0), "num must be a positive integer, got 0"),
    (dict(steps=-1), "steps must be a positive integer, got -1"),
    (dict(length=0), "length must be a positive integer, got 0"),
    (dict(prompt="to be", template="to [3] be"), "give either a prompt or a template, not both"),
    (dict(template="to be [40]"), "the template's [N] spans ask for 40 tokens, more than the model's maximum length 32"),
    (dict(template="to be or not to be [20] to be or not"), "the template is 52 tokens long, more than the model's maximum length 32"),
    (dict(template="to [0] be"), "a template span [0] fills nothing; write [N] with N >= 1"),
    (dict(template=""), "the template is empty"),
    (dict(template="no spans"), "the template has no [N] span to fill"),
    (dict(template="to [3] be", length=12), "the template fixes the length at 9 tokens (its text plus its [N] spans); leave out length"),
    (dict(num=2, template=["to [3] be", "to [4] be"]), "the templates are [9, 10] tokens long; every row of a request has one length"),
    (dict(num=3, prompt=["a", "b"]), "give one prompt for every row or one prompt per row: 3 texts, got 2"),
    (dict(prompt="to be or not", length=10), "the prompt has 12 tokens; the sample length 10 leaves nothing to generate"),
    (dict(length=40, block=33), "block must be in 1..32 (the model length), got 33"),
    (dict(num=2, prompt=["to", "to be"], length=40), "beyond the model's length every row's prompt must have the same number of tokens"),
    (dict(labels=torch.zeros(4, dtype=torch.long)), "this run is not class-conditional"),
    (dict(guidance=-2.0), "the guidance weight must be >= -1"),
])
def test_every_bad_request_is_one_line_naming_what_is_valid(pipe, fields, needle):
    with pytest.raises(MaskdiffError) as err:
        SampleRequest(**fields).check(pipe.target())
    assert needle in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_good_request_becomes_tensors(pipe):
    checked = SampleRequest(num=2, prompt=["to", "to be"], length=12, sampler="ancestral", options={"temperature": 0.5}).check(pipe.target())
    mask = pipe.tokenizer.mask_id
    assert checked.x_init.shape == (2, 12) and checked.options == {"temperature": 0.5} and checked.block is None
    assert checked.x_init[0, :2].tolist() == pipe.tokenizer.encode("to").tolist() and bool((checked.x_init[0, 2:] == mask).all())
    assert checked.x_init[1, :5].tolist() == pipe.tokenizer.encode("to be").tolist() and bool((checked.x_init[1, 5:] == mask).all())
    longer = SampleRequest(num=2, prompt="to", length=40).check(pipe.target())
    assert (longer.x_init, longer.block, longer.prefix.shape, longer.length) == (None, 8, (2, 2), 40)
    filled = SampleRequest(num=3, template="to [3] be").check(pipe.target())
    assert filled.length == 9 and filled.x_init.shape == (3, 9) and int((filled.x_init == mask).sum()) == 9
    assert SampleRequest().check(pipe.target()).sampler == "cached"  # time-independent: cached by default


def test_a_server_target_refuses_what_the_model_would_generate_window_by_window(pipe):
    server = pipe.target(max_length=16, semi_autoregressive=False, who="this server's")
    with pytest.raises(MaskdiffError, match="length 20 is above this server's maximum length 16"):
        SampleRequest(length=20).check(server)
    with pytest.raises(MaskdiffError, match="the template is 31 tokens long, more than this server's maximum length 16"):
        SampleRequest(template="to be or not [5] to be or not").check(server)


def test_the_cached_sampler_needs_a_time_independent_network():
    conditioned = _pipe(time_conditioned=True)
    with pytest.raises(MaskdiffError, match="needs a time-independent network; this model is time-conditioned: choose another of: ancestral"):
        SampleRequest(sampler="cached").check(conditioned.target())
    assert SampleRequest().check(conditioned.target()).sampler == "ancestral"


@pytest.mark.parametrize("objective, own", [("ar", "autoregressive"), ("genmd4", "genmd4"), ("block", "block")])
def test_a_model_with_its_own_sampler_refuses_every_other(objective, own):
    model = _pipe(objective, time_conditioned=objective == "genmd4")
    for other in ("cached", "ancestral", "first-hitting"):
        with pytest.raises(MaskdiffError, match=rf"a {objective} model samples with its own sampler \({own}\); leave out the sampler"):
            model.sample(1, steps=2, sampler=other)
    with pytest.raises(MaskdiffError, match=f"templates and blocks apply to masked diffusion models, not to a {objective} model"):
        model.sample(1, steps=2, template="to [3] be")
    out = model.sample(2, steps=2, length=8)
    assert out.sampler == own and out.tokens.shape[0] == 2


# --- one path from a request to the sampler ----------------------------------------------------------

def test_pipeline_sample_draws_what_the_sampler_draws_directly(pipe):
    """The request path adds no draw of its own: the same seed gives the sampler function's tokens."""
    mask, L = pipe.tokenizer.mask_id, pipe.config.data.length
    prefix = pipe.tokenizer.encode("to be")
    got = pipe.sample(3, length=20, steps=8, sampler="ancestral", seed=4, prompt="to be", temperature=0.9)
    want = ancestral_sample(pipe.denoiser, pipe.schedule, (3, 20), steps=8, generator=torch.Generator().manual_seed(4),
                            x_init=prompt_state(prefix, 20, mask, 3), temperature=0.9)
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.nfe, want.nfe)
    longer = pipe.sample(2, length=L + 8, steps=4, sampler="cached", seed=1)
    direct = semi_autoregressive_sample(SAMPLERS["cached"], pipe.denoiser, pipe.schedule, batch=2, total_length=L + 8, window=L,
                                        block=L // 4, generator=torch.Generator().manual_seed(1), steps=4)
    assert torch.equal(longer.tokens, direct.tokens)
