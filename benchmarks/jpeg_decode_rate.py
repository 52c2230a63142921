"""Where the JPEG streaming path's ceiling is (issue #18): each stage of `jpeg_stream.py`'s workload alone, on the
same images (256 px, quality 90, written by `jpeg_stream.generate`).

    python benchmarks/jpeg_decode_rate.py --n 4096 [--out results.json]

Rows (images per second, one process, page cache warm):
- read: learnkit's `JpegDecoder.read` (file bytes + the header check) in 16 threads;
- nvjpeg: `torchvision.io.decode_jpeg(list of 256, device='cuda')` alone, then with learnkit's batched Resize(224);
- pillow/core: Pillow decode + Resize(224) + to uint8 tensor in this one process (a worker's rate);
- host decode in threads: `JpegDecoder.host_decoder()` reading, decoding (torchvision's CPU decoder) and resizing one
  image at a time in 1, 8 and 14 threads (the GIL's limit; `DecodeLoader(num_workers=n)` uses processes instead);
- gpu ceiling: resnet34 at 224 px, batch 256, bf16 autocast, channels_last, fused AdamW, on one batch already on the
  GPU (no data path at all): what the training step allows.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def step_rate(model, warmup: int = 15, steps: int = 40) -> float:
    """Images/s of `model` trained on one fixed 224 px batch of 256 already on the GPU (fused AdamW on its trainable
    parameters, bf16 autocast, channels_last): the training step with no data path at all."""
    import torch
    x = torch.randn(256, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (256,), device="cuda")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3, fused=True)
    model.train()

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return rate(steps * 256, time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--data", default="/tmp/jpeg_rate")
    p.add_argument("--source", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    from jpeg_stream import _source, generate
    from learnkit.vision import Resize
    from learnkit.vision.jpeg import JpegDecoder, apply_resizes

    generate(Path(a.data), a.n, 256, _source(a.source))
    files = sorted(Path(a.data, "train").rglob("*.jpg"))[:a.n]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "n": len(files)}
    dec = JpegDecoder(files, "RGB", [Resize(224)], device)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(dec.read, range(min(256, len(files)))))
        t = time.perf_counter()
        raws = list(pool.map(dec.read, range(len(files))))
        out["read_16_threads"] = rate(len(files), time.perf_counter() - t)
    from torchvision.io import ImageReadMode, decode_jpeg
    datas = [r[0] for r in raws]
    batches = [datas[s:s + 256] for s in range(0, len(datas) - 255, 256)]
    decode_jpeg(batches[0], mode=ImageReadMode.RGB, device=device)
    sync()
    t = time.perf_counter()
    for b in batches:
        decode_jpeg(b, mode=ImageReadMode.RGB, device=device)
    sync()
    out["nvjpeg_batched_decode"] = rate(256 * len(batches), time.perf_counter() - t)
    t = time.perf_counter()
    for b in batches:
        torch.stack(apply_resizes(list(decode_jpeg(b, mode=ImageReadMode.RGB, device=device)), [Resize(224)]))
    sync()
    out["nvjpeg_decode_resize"] = rate(256 * len(batches), time.perf_counter() - t)
    t = time.perf_counter()
    for s, b in enumerate(batches):
        dec.decode(raws[s * 256:(s + 1) * 256], list(range(s * 256, (s + 1) * 256)))
    sync()
    out["learnkit_decoder_decode"] = rate(256 * len(batches), time.perf_counter() - t)
    # single images (the non-batched call), for comparison
    t = time.perf_counter()
    for d in datas[:512]:
        decode_jpeg(d, mode=ImageReadMode.RGB, device=device)
    sync()
    out["nvjpeg_one_by_one"] = rate(512, time.perf_counter() - t)

    host = dec.host_decoder()
    for threads in (1, 8, 14):
        count = 512 if threads == 1 else len(files)
        with ThreadPoolExecutor(threads) as pool:
            t = time.perf_counter()
            list(pool.map(lambda i: host.decode([host.read(i)], [i]), range(count)))
            out[f"host_decode_resize_{threads}_threads"] = rate(count, time.perf_counter() - t)

    import numpy as np
    from PIL import Image
    t = time.perf_counter()
    for f in files[:1024]:
        with Image.open(f) as im:
            im = im.convert("RGB").resize((224, 224), Image.BILINEAR)
            torch.from_numpy(np.asarray(im)).permute(2, 0, 1).contiguous()
    out["pillow_decode_resize_per_core"] = rate(1024, time.perf_counter() - t)

    if cuda:
        import torchvision
        model = torchvision.models.resnet34(num_classes=10).to(device, memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
        out["gpu_ceiling_resnet34_224_bf16"] = step_rate(model)
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
