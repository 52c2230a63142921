"""U-Net (resnet34, 128 px, batch 64, bf16, channels_last, CE + Dice) training step time for decoder variants:
'base' (fastai's widths: 99 channels at full resolution), 'pad' (zero channels to 104: the stand-in this script
used for what is now `unet_model(channel_multiple=8)`, unet_learner's default), 'shuffle' (a pixel shuffle written
to keep channels_last), both; then a profile of the base step by input shape (results/segmentation_step_variants_h200.txt).

    python benchmarks/segmentation_step_variants.py
"""
import sys, time, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from torch import nn
from learnkit.vision import unet as U
from learnkit.vision.losses import CrossEntropyDiceLoss

def timeit(fn, n=30, warm=5):
    for _ in range(warm): fn()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n * 1000

def shuffle_cl(x, s=2):
    """pixel shuffle that keeps channels_last: (N, C*s*s, H, W) → (N, C, sH, sW)."""
    n, c4, h, w = x.shape
    c = c4 // (s * s)
    t = x.permute(0, 2, 3, 1).reshape(n, h, w, c, s, s)      # NHWC view (free for channels_last)
    t = t.permute(0, 1, 4, 2, 5, 3).reshape(n, h * s, w * s, c)  # one copy
    return t.permute(0, 3, 1, 2)                               # NCHW logical, channels_last memory

class ShuffleCL(nn.Module):
    def forward(self, x): return shuffle_cl(x)

class PadUnet(nn.Module):
    def __init__(self, base, pad):
        super().__init__(); self.base, self.pad = base, pad
        c = base.res.convs[0][0].in_channels
        self.base.res = U._ResBlock(c + pad, c + pad); self.base.head = nn.Conv2d(c + pad, base.n_out, 1)
    def forward(self, x):
        b = self.base
        feats = b.features(x); y = b.middle(feats[-1])
        for block, skip in zip(b.blocks, reversed(feats[:-1])): y = block(y, skip)
        y = b.up(y)
        z = torch.zeros(y.shape[0], self.pad, *y.shape[2:], dtype=y.dtype, device=y.device).contiguous(memory_format=torch.channels_last)
        return b.head(b.res(torch.cat([y, x.to(y.dtype), z], 1)))

x = torch.randn(64, 3, 128, 128, device="cuda").contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 11, (64, 128, 128), device="cuda")
loss_fn = CrossEntropyDiceLoss()
res = {}
def build(variant):
    torch.manual_seed(0)
    m = U.unet_model("resnet34", n_out=11)
    if "shuffle" in variant:
        for mod in m.modules():
            if isinstance(mod, U.PixelShuffleICNR): mod.shuffle = ShuffleCL()
    if "pad" in variant:
        m = PadUnet(m, 5)
    return m.cuda().to(memory_format=torch.channels_last)
for variant in ("base", "pad", "shuffle", "pad+shuffle"):
    m = build(variant)
    opt = torch.optim.AdamW(m.parameters(), 1e-3, fused=True)
    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = loss_fn(m(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    res[variant] = round(timeit(step), 2)
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        res[variant + " out cl"] = m(x).is_contiguous(memory_format=torch.channels_last)
    print(json.dumps(res), flush=True)
from torch.profiler import profile, ProfilerActivity
m = build("base"); opt = torch.optim.AdamW(m.parameters(), 1e-3, fused=True)
def step():
    with torch.autocast("cuda", torch.bfloat16):
        loss = loss_fn(m(x), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3): step()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True, with_stack=True) as p:
    step(); torch.cuda.synchronize()
print(p.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=40, max_shapes_column_width=70))
print(p.key_averages(group_by_stack_n=6).table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=30))
