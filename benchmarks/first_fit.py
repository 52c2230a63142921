"""Where the first `fine_tune` of a process spends its time, and the second one's: EfficientNet-Lite0 (ImageNet
weights) on 1,350 Fashion-MNIST PNGs (135 per class, the committed sample) at 64 px, `fine_tune(1,
freeze_epochs=1)` twice (a new learner on the same data the second time), each phase timed with the GPU synced.

    python benchmarks/first_fit.py --lite0 efficientnet-lite0.pth [--profile prof.txt] [--out timing.json]
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_fine_tune(learn) -> dict:
    from learnkit.learner.events import Callback
    marks: list[tuple[str, float]] = []

    class Marks(Callback):
        order = 100

        def before_fit(self, learn):
            sync(), marks.append(("before_fit", time.perf_counter()))

        def after_batch(self, learn):
            if learn.training and not any(m[0] == f"first_step_{len(fits)}" for m in marks):
                sync(), marks.append((f"first_step_{len(fits)}", time.perf_counter()))

        def after_train(self, learn):
            sync(), marks.append(("after_train", time.perf_counter()))

        def after_fit(self, learn):
            sync(), marks.append(("after_fit", time.perf_counter()))
            fits.append(1)
    fits: list[int] = []
    start = time.perf_counter()
    learn.fine_tune(1, freeze_epochs=1, keep_best=False, callbacks=[Marks()])
    sync()
    out = {"total": time.perf_counter() - start}
    for name, t in marks:
        out.setdefault(name, []).append(round(t - start, 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lite0", default=None)
    parser.add_argument("--per-class", type=int, default=135)
    parser.add_argument("--png", type=Path, default=ROOT / "datasets" / "fashion-mnist-sample" / "png")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    timing: dict = {"python_start_to_main": round(time.perf_counter() - T0, 3)}
    if profiler:
        profiler.enable()
    t = time.perf_counter()
    import torch
    import learnkit  # noqa: F401
    from learnkit.vision import ImageDataBunch, Resize, vision_learner
    timing["import"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")
    sync()
    timing["cuda_init"] = round(time.perf_counter() - t, 3)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from transfer_defaults import image_folder
    with tempfile.TemporaryDirectory() as tmp:
        folder = image_folder(args.per_class, Path(tmp), args.png)
        t = time.perf_counter()
        data = ImageDataBunch.from_folder(folder, item_tfms=[Resize(64)], batch_size=64, seed=0, verbose=False)
        sync()
        timing["data"] = round(time.perf_counter() - t, 3)
        timing["loader"] = getattr(data, "loader_report", None) and str(data.loader_report)[:200]
        for run in ("first", "second"):
            t = time.perf_counter()
            learn = vision_learner(data, "efficientnet_lite0", weights=args.lite0, progress=False)
            sync()
            timing[f"{run}_learner"] = round(time.perf_counter() - t, 3)
            timing[f"{run}_fine_tune"] = timed_fine_tune(learn)
            if run == "first" and profiler:
                profiler.disable()
                stream = io.StringIO()
                pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(60)
                args.profile.write_text(stream.getvalue())
        timing["accuracy"] = round(learn.validate()["accuracy"], 4)
    timing["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(json.dumps(timing, indent=1))
    if args.out:
        args.out.write_text(json.dumps(timing, indent=1))


if __name__ == "__main__":
    main()
