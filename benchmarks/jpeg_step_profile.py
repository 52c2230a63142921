"""Where the GPU time of a streaming JPEG step goes (issue #18): jpeg_stream_variants.py's learner (resnet34, 224 px,
batch 256, bf16, decode worker processes) profiled for `--steps` training batches after `--warmup`, GPU kernel and
copy time summed by name; beside it, the same model object and a plain torchvision resnet34 stepped on one batch
already on the GPU (`jpeg_decode_rate.step_rate`: the step's ceiling), with and without the learner's CUDA graphs in
the streaming fit.

    python benchmarks/jpeg_step_profile.py --n 20000 [--source DIR] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from jpeg_decode_rate import step_rate  # noqa: E402  (the bare step: the ceiling's own measure)
from jpeg_stream_variants import folder_args, streaming_learner  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    folder_args(p)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    import torchvision
    from torch.profiler import ProfilerActivity, profile
    from jpeg_stream import Clock
    from learnkit import Callback, CancelTrain, CancelValidate

    data, learn = streaming_learner(a)
    out: dict = {"loader_report": data.loader_report}
    for graphs in ("auto", False):
        learn.cuda_graphs = graphs
        prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        clock = Clock(a.warmup, a.warmup + 3 * a.steps, torch.cuda.synchronize)
        seen = {"n": 0}

        class Window(Callback):
            def after_batch(self, learn):
                seen["n"] += 1
                if seen["n"] == a.warmup + a.steps:
                    torch.cuda.synchronize()
                    prof.start()
                elif seen["n"] == a.warmup + 2 * a.steps:
                    torch.cuda.synchronize()
                    prof.stop()
                if learn.training and clock.batch_done(256):
                    raise CancelTrain

            def before_validate(self, learn):
                raise CancelValidate

        learn.fit_one_cycle(1, 1e-3, callbacks=[Window()])
        rows = []
        for e in prof.key_averages():
            t = getattr(e, "self_device_time_total", 0) or 0
            if t > 0:
                rows.append((round(t / a.steps / 1e3, 3), e.key[:90], e.count))
        rows.sort(reverse=True)
        total = round(sum(r[0] for r in rows), 2)
        key = f"stream_graphs_{graphs}"
        out[key] = {**clock.result(), "gpu_ms_per_step": total, "wall_ms_per_step": None,
                    "top": rows[:30], "graph_report": {k: learn.cuda_graph_report.get(k) for k in ("used", "reason")}}
        if out[key]["images_per_s"]:
            out[key]["wall_ms_per_step"] = round(256 / out[key]["images_per_s"] * 1e3, 2)
        print(key, json.dumps({k: v for k, v in out[key].items() if k != "top"}), flush=True)
        for r in rows[:30]:
            print("   ", r, flush=True)
    torch.backends.cudnn.benchmark = False
    out["bare_learner_model"] = step_rate(learn.model)
    tv = torchvision.models.resnet34(num_classes=10).cuda().to(memory_format=torch.channels_last)
    out["bare_torchvision_resnet34"] = step_rate(tv)
    torch.backends.cudnn.benchmark = True
    out["bare_torchvision_resnet34_cudnn_benchmark"] = step_rate(tv)
    out["bare_learner_model_cudnn_benchmark"] = step_rate(learn.model)
    print(json.dumps({k: v for k, v in out.items() if k.startswith("bare")}), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
