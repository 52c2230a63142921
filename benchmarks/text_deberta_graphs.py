"""The DeBERTa-v3-style random model of hf_vs_trainer.py through learnkit's transformers path, cuda_graphs 'auto'
then False, in one process: fit seconds per phase and the graph report (the capture fails inside DeBERTa-v2's
TorchScript helpers; results/text_deberta_graphs_h200.txt).

    python benchmarks/text_deberta_graphs.py fortunes.csv
"""
import sys, time, tempfile, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import torch
from hf_vs_trainer import write_deberta, read_fortunes
from learnkit import set_seed
from learnkit.text import TextDataBunch, text_classifier_learner
from learnkit.learner.events import Callback
csv_path = sys.argv[1]
folder = write_deberta(Path(tempfile.mkdtemp()) / "deb", csv_path)
class Marks(Callback):
    def before_fit(self, learn): self.t = [time.perf_counter()]
    def after_train(self, learn): torch.cuda.synchronize(); self.t.append(time.perf_counter())
    def after_validate(self, learn): torch.cuda.synchronize(); self.t.append(time.perf_counter())
for graphs in ("auto", False):
    set_seed(0)
    texts, labels, valid = read_fortunes(csv_path)
    data = TextDataBunch.from_lists(texts, labels, valid_idx=valid, batch_size=32, seed=0)
    m = Marks()
    t = time.perf_counter()
    learn = text_classifier_learner(data, "transformers", weights=str(folder), max_len=128, progress=False,
                                    cuda_graphs=graphs, callbacks=[m])
    t1 = time.perf_counter()
    learn.fit_one_cycle(3, 5e-4, pct_start=0.1)
    t2 = time.perf_counter()
    print(json.dumps({"graphs": graphs, "learner_s": round(t1 - t, 2), "fit_s": round(t2 - t1, 2),
                      "phases": [round(b - a, 2) for a, b in zip(m.t, m.t[1:])],
                      "acc": learn.validate()["accuracy"], "report": learn.cuda_graph_report}), flush=True)
