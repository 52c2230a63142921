"""The device-decode path while a resnet34 trains (issue #18): the same learner, images/s for each way of reading
and decoding, in one process (the folder of jpeg_stream.py; fit_one_cycle(1) cut after `--limit` batches, timed
after `--warmup`). A variant is `tN` (N reader threads, nvJPEG on the GPU) or `wN` (N worker processes decoding on
the host, `DecodeLoader(num_workers=N)`); a trailing `b` turns cudnn.benchmark on for that fit (`w15b`).

    python benchmarks/jpeg_stream_variants.py --n 20000 [--variants t4,w15] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def folder_args(p: argparse.ArgumentParser) -> None:
    """--n, --data, --source: the JPEG folder that `streaming_learner` writes (once) and trains on."""
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--data", default="/tmp/learnkit-jpeg-stream")
    p.add_argument("--source", default=None)


def streaming_learner(a: argparse.Namespace):
    """(data, learn): jpeg_stream.py's folder (written if missing), not resident, device_decode=True, and the
    resnet34 learner from scratch that every variant trains."""
    from jpeg_stream import _source, generate
    from learnkit.vision import ImageDataBunch, Resize, vision_learner
    generate(Path(a.data), a.n, 256, _source(a.source))
    data = ImageDataBunch.from_folder(a.data, item_tfms=Resize(224), batch_size=256, seed=0, resident=False,
                                      device_decode=True, verbose=False)
    return data, vision_learner(data, "resnet34", pretrained=False, progress=False, metrics=[])


def main() -> None:
    p = argparse.ArgumentParser()
    folder_args(p)
    p.add_argument("--limit", type=int, default=70)
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--variants", default="t4,w15,w12,w8,t4")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    from jpeg_stream import Clock
    from learnkit import Callback, CancelTrain, CancelValidate

    data, learn = streaming_learner(a)
    rows = []
    for variant in a.variants.split(","):
        kind, bench = variant[0], variant.endswith("b")
        n = int(variant[1:].rstrip("b"))
        data.train_dl.num_threads, data.train_dl.num_workers = (n, 0) if kind == "t" else (4, n)
        learn.cudnn_benchmark = True if bench else None
        clock = Clock(a.warmup, a.limit, torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None))

        class Timer(Callback):
            def after_batch(self, learn):
                if learn.training and clock.batch_done(256):
                    raise CancelTrain

            def before_validate(self, learn):
                raise CancelValidate

        learn.fit_one_cycle(1, 1e-3, callbacks=[Timer()])
        row = {"variant": variant, **clock.result(),
               "graphs": {k: learn.cuda_graph_report.get(k) for k in ("used", "reason", "replays", "eager_batches")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
