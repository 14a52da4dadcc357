"""A bare training loop for diagnosing how fast masked diffusion learns, one variant per process.

Where benchmarks/learning_speed.py runs the real trainer on its presets, this loop exposes the parts
that were suspected, one flag each, on the tiny preset's network (4 x 128, L 128, batch 32): the time
estimator (``--variant base`` = t uniform with weight 1/t; ``kunif`` = the number of masks uniform on 1..L
with weight L/k; ``fixedT`` = every sequence at t = T, no weight: biased, for diagnosis only;
``--tpow p`` = t = s^p importance-sampled with weight w(t)/q(t)), the learning rate, clipping, Adam's
beta2, the initialisation (``--init default|STD``, ``--emb-std``, ``--qk-std``, ``--zero-resid``), time
conditioning, heads, and two architectural probes (``--abspos`` learned absolute positions, ``--shift``
a mix of each token's neighbours' embeddings). It prints and saves the validation NELBO (bits/char, raw
weights, 256 windows x 2 passes) at fixed steps. The sweep and its results:
benchmarks/results/diagnose_learning_*.json, docs/results.md ("Learning speed").

    python benchmarks/diagnose_learning.py --file corpus.txt --variant base --tpow 2 --init default --name x
"""
import json, math, time, argparse, os
import torch, numpy as np
import torch.nn as nn
from maskdiff.networks.transformer import DiT
from maskdiff.denoiser import SUBSDenoiser, CausalLM
from maskdiff.loss import continuous_diffusion_term, low_discrepancy_times
from maskdiff.loss.autoregressive import autoregressive_nll
from maskdiff.schedules import get_schedule

p = argparse.ArgumentParser()
p.add_argument("--file", default="markov2.txt"); p.add_argument("--valfile", default="")
p.add_argument("--variant", default="base"); p.add_argument("--name", default="")
p.add_argument("--steps", type=int, default=1000); p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--clip", type=float, default=1.0); p.add_argument("--B", type=int, default=32)
p.add_argument("--L", type=int, default=128); p.add_argument("--warmup", type=int, default=50)
p.add_argument("--schedule", default="linear"); p.add_argument("--beta2", type=float, default=0.999)
p.add_argument("--tc", action="store_true"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--width", type=int, default=128); p.add_argument("--depth", type=int, default=4); p.add_argument("--heads", type=int, default=4)
p.add_argument("--init", default=""); p.add_argument("--abspos", action="store_true"); p.add_argument("--shift", action="store_true")
p.add_argument("--zero-resid", action="store_true"); p.add_argument("--emb-std", type=float, default=0.0); p.add_argument("--qk-std", type=float, default=0.0)
p.add_argument("--wd", type=float, default=0.0); p.add_argument("--tpow", type=float, default=1.0)
p.add_argument("--lrsched", default="cosine"); p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--outdir", default="out"); p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
dev = torch.device(a.device)
text = open(a.file).read()
if a.valfile: tr_text, va_text = text, open(a.valfile).read()
else: n0 = int(0.9 * len(text)); tr_text, va_text = text[:n0], text[n0:]
alpha = sorted(set(tr_text) | set(va_text)); V = len(alpha); idx = {c: i for i, c in enumerate(alpha)}
lut = np.zeros(256, dtype=np.int64)
for c, i in idx.items(): lut[ord(c)] = i
enc = lambda s: torch.from_numpy(lut[np.frombuffer(s.encode("latin1"), dtype=np.uint8)])
tr, va = enc(tr_text), enc(va_text)
L, B = a.L, a.B
def windows(src, b, g):
    st = torch.randint(0, len(src) - L, (b,), generator=g); return torch.stack([src[s:s + L] for s in st.tolist()])
gv = torch.Generator().manual_seed(123); xval = windows(va, 256, gv).to(dev)
ar = a.variant == "ar"
net = DiT(V, L, width=a.width, depth=a.depth, heads=a.heads, causal=ar, time_conditioned=a.tc)
if a.init == "default":
    for m in net.modules():
        if isinstance(m, nn.Linear) and m is not net.head: m.reset_parameters()
    nn.init.kaiming_uniform_(net.embed.weight, a=math.sqrt(5))
elif a.init:
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)) and m is not net.head: nn.init.normal_(m.weight, std=float(a.init))
if a.emb_std: nn.init.normal_(net.embed.weight, std=a.emb_std)
if a.zero_resid:
    for b in net.blocks: nn.init.zeros_(b.proj.weight); nn.init.zeros_(b.mlp[2].weight)
if a.qk_std:
    for b in net.blocks: nn.init.normal_(b.qkv.weight[: 2 * a.width], std=a.qk_std)
if a.abspos or a.shift:
    class E(nn.Module):
        def __init__(s, emb):
            super().__init__(); s.emb = emb; w = emb.weight.shape[1]
            s.pos = nn.Parameter(torch.randn(L, w) * 0.02) if a.abspos else None
            s.mix = nn.Linear(3 * w, w, bias=False) if a.shift else None
            s.weight = emb.weight
        def forward(s, x):
            h = s.emb(x)
            if s.mix is not None:
                z = torch.zeros_like(h[:, :1]); h = h + s.mix(torch.cat([torch.cat([z, h[:, :-1]], 1), h, torch.cat([h[:, 1:], z], 1)], -1))
            return h + (s.pos if s.pos is not None else 0)
    net.embed = E(net.embed)
net.to(dev)
model = CausalLM(net, V) if ar else SUBSDenoiser(net, V, time_conditioned=a.tc)
sched = get_schedule(a.schedule)
decay = [p_ for n_, p_ in net.named_parameters() if p_.dim() >= 2 and "embed" not in n_]
rest = [p_ for n_, p_ in net.named_parameters() if not (p_.dim() >= 2 and "embed" not in n_)]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": rest, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, a.beta2))
def lr_at(s):
    if s < a.warmup: return a.lr * (s + 1) / a.warmup
    if a.lrsched == "constant": return a.lr
    pr = (s - a.warmup) / max(1, a.steps - a.warmup); return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * pr)))
def loss_fn(x0, g):
    if ar: return autoregressive_nll(model, x0, V)
    u = float(torch.rand((), generator=g))
    if a.variant == "base":
        t = low_discrepancy_times(B, u).to(dev)
        if a.tpow != 1.0:  # importance-sample t = s^tpow (more mass at small t), weight by 1/q(t)
            s_ = ((u + torch.arange(B, dtype=torch.float64) / B) % 1.0).clamp(min=1e-6)
            t64 = (1e-3 + (1 - 1e-3) * s_ ** a.tpow)
            q = (1 / a.tpow) * ((t64 - 1e-3) / (1 - 1e-3)) ** (1 / a.tpow - 1) / (1 - 1e-3)
            return continuous_diffusion_term(model, x0, t64.float().to(dev), sched, None) / (q.to(dev).float() * (1 - 1e-3))
        return continuous_diffusion_term(model, x0, t, sched, None)
    if a.variant == "kunif":
        k = (torch.floor(((u + torch.arange(B) / B) % 1.0) * L) + 1).long().to(dev)
        r = torch.rand(B, L, device=dev).argsort(-1).argsort(-1)
        masked = r < k[:, None]
        xt = torch.where(masked, torch.full_like(x0, V), x0)
        lm = model(xt, k.float() / L)
        ce = -(lm.gather(-1, x0[..., None]).squeeze(-1)) * masked
        return ce.sum(-1) * (L / k.float())
    if a.variant.startswith("fixed"):
        tv = float(a.variant[5:]); t = torch.full((B,), tv, device=dev)
        return continuous_diffusion_term(model, x0, t, sched, None) * tv
    raise SystemExit("variant?")
@torch.no_grad()
def evaluate(P=2):
    model.eval(); g = torch.Generator().manual_seed(7); tot = 0.0
    for _ in range(P):
        if ar: tot += float(autoregressive_nll(model, xval, V).sum())
        else:
            t = low_discrepancy_times(len(xval), float(torch.rand((), generator=g))).to(dev)
            tot += float(continuous_diffusion_term(model, xval, t, get_schedule("linear"), None).sum())
    model.train(); return tot / P / xval.numel() / math.log(2)
marks = {50, 100, 200, 300, 400, 500, 750, 1000, 1250, 1500, 2000, 3000, 4000, 6000, 8000}
log = []; t0 = time.time(); run = []; gns = []; nclip = 0
for s in range(a.steps):
    g = torch.Generator().manual_seed(1000 + s)
    x0 = windows(tr, B, g).to(dev)
    for grp in opt.param_groups: grp["lr"] = lr_at(s)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(x0, g).sum() / (B * L); loss.backward()
    gn = float(torch.nn.utils.clip_grad_norm_(net.parameters(), a.clip if a.clip else 1e9))
    nclip += int(bool(a.clip) and gn > a.clip); gns.append(gn)
    opt.step(); run.append(float(loss.detach()) / math.log(2))
    if (s + 1) in marks or s == a.steps - 1:
        rec = dict(step=s + 1, train_bits=float(np.mean(run[-50:])), val_bits=evaluate(), gn_med=float(np.median(gns[-50:])), clipped=nclip, sec=time.time() - t0)
        log.append(rec); print(a.name, json.dumps(rec), flush=True)
        os.makedirs(a.outdir, exist_ok=True)
        json.dump(dict(args=vars(a), log=log), open(f"{a.outdir}/{a.name or a.variant}.json", "w"))
