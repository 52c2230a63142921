"""Where a fresh process's seconds go in hf_vs_trainer.py's DeBERTa-v3-style runs (issue #16): a timeline of
imports, data, model construction and each training phase (CUDA synchronized), for learnkit (`--graphs auto|off`)
and for the Hugging Face `Trainer` script (`--graphs trainer`), optionally under cProfile. `--graphs split` is
learnkit's run with transformers' modeling imports and the CUDA context timed on their own before the learner.

    python benchmarks/text_deberta_timeline.py fortunes.csv [--profile] [--graphs auto,off,trainer] [--epochs 3]
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


MARKS = [("start", T0)]


def mark(name: str) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    MARKS.append((name, time.perf_counter()))


def report(**extra) -> None:
    steps = [(name, round(t - prev, 3)) for (name, t), (_, prev) in zip(MARKS[1:], MARKS)]
    print("RESULT " + json.dumps({**extra, "total_s": round(MARKS[-1][1] - T0, 2), "steps": steps}), flush=True)


def trainer_child(a: argparse.Namespace) -> None:
    """hf_vs_trainer.trainer_worker's script (the benchmark's own), step by step."""
    from hf_vs_trainer import trainer_worker

    def marks():
        from transformers import TrainerCallback

        class Marks(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                mark("train: on_train_begin")

            def on_step_end(self, args, state, control, **kw):
                if state.global_step in (1, 2, 10):
                    mark(f"train: step {state.global_step}")

            def on_epoch_end(self, args, state, control, **kw):
                mark(f"train: epoch {round(state.epoch)}")
        return [Marks()]
    row = trainer_worker(a.folder, a.csv, a.epochs, 5e-4, 32, 128, mark=mark, make_callbacks=marks)
    report(**row)


def child(a: argparse.Namespace) -> None:
    if a.graphs == "trainer":
        return trainer_child(a)
    import torch  # noqa: F401  (timed: the first import)
    mark("import torch")
    import transformers  # noqa: F401
    mark("import transformers")
    from hf_vs_trainer import read_fortunes
    from learnkit import Callback, set_seed
    from learnkit.text import TextDataBunch, text_classifier_learner
    mark("import learnkit.text")
    set_seed(0)
    texts, labels, valid = read_fortunes(a.csv)
    data = TextDataBunch.from_lists(texts, labels, valid_idx=valid, batch_size=32, seed=0)
    mark("TextDataBunch.from_lists")

    class Marks(Callback):
        def before_fit(self, learn):
            mark("fit: before_fit")

        def after_batch(self, learn):
            if learn.training and learn.iter in (0, 1, 9):
                mark(f"fit: epoch {learn.epoch} train batch {learn.iter}")

        def after_train(self, learn):
            mark(f"fit: epoch {learn.epoch} train")

        def after_validate(self, learn):
            mark(f"fit: epoch {learn.epoch} validate")

    if a.graphs == "split":  # the learner's share of imports and CUDA start-up, each timed before it
        from transformers import AutoModel, AutoTokenizer  # noqa: F401  (transformers' lazy modeling imports)
        mark("import AutoModel, AutoTokenizer")
        torch.zeros(1, device="cuda" if torch.cuda.is_available() else "cpu").sum().item()
        mark("CUDA context")
    graphs = {"auto": "auto", "off": False, "split": "auto"}[a.graphs]
    learn = text_classifier_learner(data, "transformers", weights=a.folder, max_len=128, progress=False,
                                    cuda_graphs=graphs, callbacks=[Marks()])
    mark("text_classifier_learner")
    learn.fit_one_cycle(a.epochs, 5e-4, pct_start=0.1)
    mark("fit_one_cycle returned")
    acc = learn.validate()["accuracy"]
    mark("validate")
    report(accuracy=round(acc, 4), graphs=learn.cuda_graph_report,
           pad_multiple=getattr(learn.data.x_block, "pad_multiple", None))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--folder", default=None)
    p.add_argument("--graphs", default="auto")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--child", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.child:
        if a.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.runcall(child, a)
            stats = pstats.Stats(prof, stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(25)
        else:
            child(a)
        return
    from hf_vs_trainer import write_deberta
    folder = write_deberta(Path(tempfile.mkdtemp()) / "deberta", a.csv)
    rows = []
    for graphs in a.graphs.split(","):
        t = time.perf_counter()
        cmd = [sys.executable, __file__, a.csv, "--child", "--folder", str(folder), "--graphs", graphs,
               "--epochs", str(a.epochs)] + (["--profile"] if a.profile else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        row = {"graphs": graphs, "process_s": round(time.perf_counter() - t, 2),
               **(json.loads(line[7:]) if line else {"error": proc.stderr[-3000:]})}
        if a.profile:
            row["profile"] = proc.stderr[-12000:]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "profile"}, indent=1), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
