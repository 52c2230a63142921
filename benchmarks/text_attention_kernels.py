"""MiniLM training steps (built-in BERT and transformers) at 50 random lengths, batch 32, bf16, under each
scaled-dot-product-attention kernel order, and which attention kernels run by default.

Reading the result (results/text_attention_kernels_h200.txt): 'default' is PyTorch's own choice, cuDNN attention
on Hopper, which builds a plan per new (batch, length): 154 ms/step. The forced-cuDNN run comes after it with the
same lengths, so it reuses those plans (15 ms/step): the cost is the planning, not the kernel. Found while
profiling the fortunes fine-tune; learnkit now puts the memory-efficient kernel first (text/transformer.py).

    python benchmarks/text_attention_kernels.py <all-MiniLM-L6-v2 folder>
"""
import contextlib
import sys, time, json, random
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
folder = sys.argv[1]
from learnkit.text.transformer import transformer_classifier_from_dir
from learnkit.text.hf import hf_classifier_from_dir
res = {}
random.seed(0)
lens = [random.randint(20, 128) for _ in range(60)]
def run(model, backend):
    opt = torch.optim.AdamW(model.parameters(), 1e-4, fused=True)
    def step(L):
        ids = torch.randint(1000, 20000, (32, L), device="cuda"); ids[:16, L - 7:] = 0
        y = torch.randint(0, 6, (32,), device="cuda")
        with torch.autocast("cuda", torch.bfloat16):
            loss = F.cross_entropy(model(ids), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    ctx = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
    with ctx:
        for L in lens[:10]: step(L)
        torch.cuda.synchronize(); t = time.perf_counter()
        for L in lens[10:]: step(L)
        torch.cuda.synchronize()
    return round((time.perf_counter() - t) / 50 * 1000, 2)
for name, build in (("bert", transformer_classifier_from_dir), ("hf", hf_classifier_from_dir)):
    model = build(folder, n_out=6)[0].cuda()
    for bname, b in (("default", None), ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("math", SDPBackend.MATH)):
        try:
            res[f"{name} {bname} ms/step varlen"] = run(model, b)
        except Exception as e:
            res[f"{name} {bname} ms/step varlen"] = f"{type(e).__name__}: {str(e)[:200]}"
        print(json.dumps(res), flush=True)
    from torch.profiler import profile, ProfilerActivity
    ids = torch.randint(1000, 20000, (32, 77), device="cuda"); ids[:16, 70:] = 0
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        with torch.autocast("cuda", torch.bfloat16):
            model(ids).float().sum().backward()
        torch.cuda.synchronize()
    names = sorted({e.key for e in p.key_averages() if any(s in e.key.lower() for s in ("fmha", "flash", "attn", "attention", "cudnn", "softmax", "mask"))})
    res[f"{name} kernels"] = names[:12]
print(json.dumps(res, indent=1))
