"""Fine-tuning settings of the backbones on tiny random configurations (no downloads): activation checkpointing
gives the same loss and gradients as storing the activations, for maskdiff's DiT and a Hugging Face BERT;
bf16 autocast runs a conditional training step of the BERT backbone on the CPU."""
import torch

from helpers import TINY_BERT, micro_config
from maskdiff.objectives import build_objective
from maskdiff.step import autocast, checkpoint_blocks


def _loss_and_grads(objective, x0, cond):
    objective.zero_grad(set_to_none=True)
    t = torch.linspace(0.2, 0.9, x0.shape[0])
    noise = torch.rand((1,) + x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = objective(x0, t, noise, None, None, cond=cond)
    out[0].sum().backward()
    return out[0].detach(), {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}


def test_activation_checkpointing_same_gradients():
    """DiT (its blocks recomputed) and BERT (its own gradient checkpointing): identical loss, gradients within
    float rounding, on a conditional batch."""
    x0 = torch.randint(0, 26, (4, 32), generator=torch.Generator().manual_seed(0))
    cond = torch.arange(32)[None] < torch.tensor([2, 5, 9, 30])[:, None]
    for hf in (False, True):
        cfg = micro_config()
        cfg.model.depth = 2
        if hf:
            cfg.model.backbone, cfg.model.hf_config = "hf", dict(TINY_BERT, vocab_size=27, mask_token_id=26, max_position_embeddings=32)
        torch.manual_seed(0)
        objective = build_objective(cfg, 27).train()
        loss, grads = _loss_and_grads(objective, x0, cond)
        checkpoint_blocks(objective.network)
        loss2, grads2 = _loss_and_grads(objective, x0, cond)
        assert torch.equal(loss, loss2) and grads.keys() == grads2.keys() and len(grads) > 4
        assert all(torch.allclose(grads[k], grads2[k], rtol=1e-5, atol=1e-7) for k in grads), hf


def test_bf16_conditional_step_on_cpu_for_bert():
    """precision bf16 (autocast on the CPU) with the Hugging Face backbone: a finite conditional loss close to
    float32's, and gradients."""
    cfg = micro_config()
    cfg.model.backbone, cfg.model.hf_config = "hf", dict(TINY_BERT, vocab_size=27, mask_token_id=26, max_position_embeddings=32)
    torch.manual_seed(0)
    objective = build_objective(cfg, 27).train()
    x0 = torch.randint(0, 26, (4, 32), generator=torch.Generator().manual_seed(0))
    cond = torch.arange(32)[None] < 8
    loss32, _ = _loss_and_grads(objective, x0, cond.expand(4, 32))
    with autocast("bf16", torch.device("cpu")):
        loss16, grads = _loss_and_grads(objective, x0, cond.expand(4, 32))
    assert torch.isfinite(loss16).all() and grads and torch.allclose(loss16.float(), loss32, rtol=0.05)


def test_lora_adapters_on_a_pretrained_bert(tmp_path):
    """--lora-rank R: the backbone's pretrained weights load under the LoRA layers and stay frozen; the adapters
    and the head (not its matrix tied to the embedding) train, and a step changes nothing else."""
    import pytest

    pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    hf_config = dict(TINY_BERT, vocab_size=27, mask_token_id=26, max_position_embeddings=32)
    cfg_dict = {k: v for k, v in hf_config.items() if k != "model_type"}
    torch.manual_seed(1)
    transformers.BertForMaskedLM(transformers.BertConfig(**cfg_dict)).save_pretrained(tmp_path / "bert")
    cfg = micro_config()
    cfg.model.backbone, cfg.model.hf_config, cfg.model.lora_rank, cfg.model.pretrained = "hf", hf_config, 2, str(tmp_path / "bert")
    objective = build_objective(cfg, 27).train()
    objective.init_from_pretrained()
    saved = transformers.BertForMaskedLM.from_pretrained(tmp_path / "bert").state_dict()
    query = objective.network.model.bert.encoder.layer[0].attention.self.query
    assert torch.equal(query.base_layer.weight, saved["bert.encoder.layer.0.attention.self.query.weight"])
    trainable = {n for n, p in objective.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".cls." in n for n in trainable) and any(".cls." in n for n in trainable)
    before = {n: p.detach().clone() for n, p in objective.named_parameters()}
    from maskdiff.step import make_optimizer

    opt = make_optimizer(objective, cfg.train)
    x0 = torch.randint(0, 26, (4, 32), generator=torch.Generator().manual_seed(0))
    _loss_and_grads(objective, x0, (torch.arange(32) < 4)[None].expand(4, 32))
    opt.step()
    changed = {n for n, p in objective.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
