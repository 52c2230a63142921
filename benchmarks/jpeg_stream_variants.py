"""The device-decode path while a resnet34 trains (issue #18): the same learner, images/s for reader-thread counts,
the share of each batch the reader threads decode themselves (torchvision's CPU decoder, the rest nvJPEG) and where
those are resized (h: in the reader thread, d: on the GPU with the rest), in one process (the folder of
jpeg_stream.py; fit_one_cycle(1) cut after `--limit` batches, timed after `--warmup`). A variant is
`threads:host_share:h|d`.

    python benchmarks/jpeg_stream_variants.py --n 20000 [--variants 4:0:h,12:1:h] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--data", default="/tmp/learnkit-jpeg-stream")
    p.add_argument("--source", default=None)
    p.add_argument("--limit", type=int, default=70)
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--variants", default="4:0:h,8:0.5:h,12:0.5:h,8:1:h,12:1:h,15:1:h,12:1:d")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import torch
    from jpeg_stream import Clock, _source, generate
    from learnkit import Callback, CancelTrain, CancelValidate
    from learnkit.vision import ImageDataBunch, Resize, vision_learner

    generate(Path(a.data), a.n, 256, _source(a.source))
    data = ImageDataBunch.from_folder(a.data, item_tfms=Resize(224), batch_size=256, seed=0, resident=False,
                                      device_decode=True, verbose=False)
    learn = vision_learner(data, "resnet34", pretrained=False, progress=False, metrics=[])
    rows = []
    for variant in a.variants.split(","):
        threads, share, where = variant.split(":")
        data.train_dl.num_threads = int(threads)
        data.train_dl.decoder.host_share, data.train_dl.decoder.host_resize = float(share), where == "h"
        clock = Clock(a.warmup, a.limit, torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None))

        class Timer(Callback):
            def after_batch(self, learn):
                if learn.training and clock.batch_done(256):
                    raise CancelTrain

            def before_validate(self, learn):
                raise CancelValidate

        learn.fit_one_cycle(1, 1e-3, callbacks=[Timer()])
        row = {"threads": int(threads), "host_share": float(share), "host_resize": where == "h", **clock.result(),
               "graphs": {k: learn.cuda_graph_report.get(k) for k in ("used", "reason", "replays", "eager_batches")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
