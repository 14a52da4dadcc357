"""Fixtures of the evaluation tests: a judge folder (a tiny random GPT-2 with GPT-2's real BPE)."""
import pytest
import torch


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory):
    """A random 2-layer GPT-2 (width 32) with GPT-2's tokenizer, saved with save_pretrained."""
    import transformers  # make test installs it: a missing one fails
    from maskdiff.data.subword import gpt2_tokenizer

    eot = "<|endoftext|>"
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=gpt2_tokenizer().backend, bos_token=eot, eos_token=eot)
    assert len(tokenizer) == 50257 and tokenizer.bos_token_id == 50256
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=128, vocab_size=len(tokenizer))
    model = transformers.GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("judge") / "tiny-gpt2"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
