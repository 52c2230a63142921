"""TensorBoardLogger and MLflowLogger, read back: TensorBoard's event files with its EventAccumulator, the MLflow
run with MlflowClient (a local file store). Every logged value equals what the learner's History recorded, the step
axis runs across fits, and a resumed fit continues it with no step lost or written twice."""
import sys

import pytest
import torch

from learnkit import Checkpoint, MLflowLogger, TensorBoardLogger, accuracy
from learnkit.testing import InterruptAt, tiny_learner

BATCHES = 6  # tiny classification data: 192 training items in batches of 32


def learner(tmp_path, **kwargs):
    return tiny_learner(seed=0, path=tmp_path, metrics=[accuracy], **kwargs)


def event_data(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def steps_values(events):
    return [e.step for e in events], [e.value for e in events]


def assert_matches_history(get, learn, epoch_steps):
    """`get(tag)` → (steps, values); per batch and per epoch they equal learn.history."""
    hist = learn.history
    steps, values = get("train/loss")
    assert steps == list(range(len(hist.losses)))
    assert values == pytest.approx(hist.losses.tolist(), rel=1e-6)
    for name in ("lr", "mom"):
        steps, values = get(f"schedule/{name}/group_0")
        assert steps == list(range(len(hist.hypers))) and values == pytest.approx([h[name][0] for h in hist.hypers])
    for key in ("train_loss", "valid_loss", "accuracy"):
        steps, values = get(f"epoch/{key}")
        assert steps == epoch_steps and values == pytest.approx([r[key] for r in hist.epoch_records], rel=1e-6)


def tb_hparams(acc):
    """The hyper-parameters of the run's one hparams session."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    (start,) = [plugin_data_pb2.HParamsPluginData.FromString(c) for t, c in acc.PluginTagToContent("hparams").items()
                if t.endswith("session_start_info")]
    return {k: v.number_value or v.string_value for k, v in start.session_start_info.hparams.items()}


def test_tensorboard_logs_what_the_learner_recorded(tmp_path):
    learn = learner(tmp_path)
    logger = TensorBoardLogger(tmp_path / "tb", params={"arch": "mlp"}, histogram_every=4, log_graph=True)
    learn.fit_one_cycle(2, 1e-2, callbacks=[logger])
    acc = event_data(tmp_path / "tb")
    assert_matches_history(lambda tag: steps_values(acc.Scalars(tag)), learn, [BATCHES - 1, 2 * BATCHES - 1])
    assert steps_values(acc.Scalars("epoch/epoch"))[1] == [0, 1]
    hparams = tb_hparams(acc)
    assert hparams["arch"] == "mlp" and hparams["epochs"] == 2 and hparams["batches"] == 2 * BATCHES
    assert hparams["lr_max"] == pytest.approx(1e-2) and hparams["opt"] == "AdamW"
    name = next(n for n, _ in learn.model.named_parameters())
    assert [h.step for h in acc.Histograms(f"weights/{name}")] == [0, 4, 8]
    assert [h.step for h in acc.Histograms(f"grads/{name}")] == [0, 4, 8]
    assert acc.Tags()["graph"] and len(acc.Graph().node) > 0


def test_tensorboard_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r'TensorBoardLogger needs the optional extra \'tensorboard\': pip install '
                                          r'"learnkit\[tensorboard\]"'):
        TensorBoardLogger()


def test_tensorboard_step_axis_runs_across_fine_tunes_two_fits(tmp_path):
    learn = learner(tmp_path)
    learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1, callbacks=[TensorBoardLogger(tmp_path / "tb")])
    acc = event_data(tmp_path / "tb")
    assert_matches_history(lambda tag: steps_values(acc.Scalars(tag)), learn,
                           [BATCHES - 1, 2 * BATCHES - 1, 3 * BATCHES - 1])
    assert steps_values(acc.Scalars("epoch/epoch"))[1] == [0, 1, 2]
    assert tb_hparams(acc)["epochs"] == 1  # the first fit's (TensorBoard keeps one set per run)


class InterruptAfterEpoch(InterruptAt):
    """Ctrl-C at the end of epoch `epoch`, after the loggers (70) wrote it and before Checkpoint (90) saved."""

    order = 80

    def after_batch(self, learn):
        pass

    def after_epoch(self, learn):
        if learn.epoch == self.at[0]:
            raise KeyboardInterrupt


def interrupted_then_resumed(tmp_path, make_logger, interrupt, every_n_batches):
    learn = learner(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        learn.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint("c.pth", every_n_batches), make_logger(), interrupt])
    resumed = learner(tmp_path)  # a new process: new learner, new logger; the checkpoint says where to log
    resumed.fit_one_cycle(3, 1e-2, callbacks=[Checkpoint("c.pth", every_n_batches), make_logger()],
                          resume_from=tmp_path / "models" / "c.pth")
    assert len(resumed.history.losses) == 3 * BATCHES
    return resumed


RESUMES = [(InterruptAt(1, 4), 3), (InterruptAt(2, 1), None), (InterruptAfterEpoch(1, 0), None)]


@pytest.mark.parametrize("interrupt,every_n_batches", RESUMES)
def test_tensorboard_resumed_fit_continues_the_step_axis(tmp_path, interrupt, every_n_batches):
    resumed = interrupted_then_resumed(tmp_path, TensorBoardLogger, interrupt, every_n_batches)
    (log_dir,) = (tmp_path / "runs").iterdir()  # the resumed logger wrote into the interrupted run's folder
    assert len(list(log_dir.iterdir())) == 2
    acc = event_data(log_dir)
    assert_matches_history(lambda tag: steps_values(acc.Scalars(tag)), resumed,
                           [BATCHES - 1, 2 * BATCHES - 1, 3 * BATCHES - 1])


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store without it
    return f"file:{tmp_path / 'mlruns'}"


def mlflow_reader(uri, run_id):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)

    def get(key):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        return [m.step for m in history], [m.value for m in history]
    return client, get


def test_mlflow_logs_params_metrics_and_the_model(tmp_path, mlflow_uri):
    learn = learner(tmp_path)
    logger = MLflowLogger(mlflow_uri, experiment="tiny", run_name="first", params={"arch": "mlp"}, log_model=True)
    learn.fit_one_cycle(2, 1e-2, callbacks=[logger])
    client, get = mlflow_reader(mlflow_uri, logger.run_id)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    params = run.data.params
    assert params["arch"] == "mlp" and params["epochs"] == "2" and float(params["lr_max"]) == pytest.approx(1e-2)
    assert_matches_history(get, learn, [BATCHES - 1, 2 * BATCHES - 1])
    files = {f.path for f in client.list_artifacts(logger.run_id, "model")}
    assert {"model/recipe.json", "model/weights.safetensors"} <= files


def test_mlflow_fine_tune_is_one_run_with_each_fits_params(tmp_path, mlflow_uri):
    learn = learner(tmp_path)
    logger = MLflowLogger(mlflow_uri)
    learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1, callbacks=[logger])
    client, get = mlflow_reader(mlflow_uri, logger.run_id)
    params = client.get_run(logger.run_id).data.params
    assert params["epochs"] == "1" and params["fit1/epochs"] == "2"
    assert_matches_history(get, learn, [BATCHES - 1, 2 * BATCHES - 1, 3 * BATCHES - 1])


@pytest.mark.parametrize("interrupt,every_n_batches", RESUMES)
def test_mlflow_resumed_fit_continues_the_run(tmp_path, mlflow_uri, interrupt, every_n_batches):
    loggers = []

    def make():
        loggers.append(MLflowLogger(mlflow_uri))
        return loggers[-1]
    resumed = interrupted_then_resumed(tmp_path, make, interrupt, every_n_batches)
    assert loggers[0].run_id == loggers[1].run_id
    client, get = mlflow_reader(mlflow_uri, loggers[1].run_id)
    assert client.get_run(loggers[1].run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(loggers[1].run_id).info.experiment_id])) == 1
    assert_matches_history(get, resumed, [BATCHES - 1, 2 * BATCHES - 1, 3 * BATCHES - 1])


def test_mlflow_errors_name_the_fix(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(RuntimeError, match="cannot open the MLflow tracking store.*MLFLOW_ALLOW_FILE_STORE=true"):
        learner(tmp_path).fit(1, callbacks=[MLflowLogger(f"file:{tmp_path / 'mlruns'}")])
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r'pip install "learnkit\[mlflow\]"'):
        MLflowLogger()


def count_reads(monkeypatch, fit):
    """How often `fit()` reads a tensor to the host (tolist, item, float, cpu, numpy)."""
    reads = []
    for name in ("tolist", "item", "__float__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            reads.append((_name, tuple(self.shape)))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    try:
        fit()
    finally:
        monkeypatch.undo()
    return reads


@pytest.mark.parametrize("make_logger", ["tensorboard", "mlflow"])
def test_loggers_read_the_losses_once_per_epoch_not_per_batch(tmp_path, monkeypatch, make_logger):
    if make_logger == "mlflow":
        pytest.importorskip("mlflow")
    make = (lambda: TensorBoardLogger(tmp_path / "tb")) if make_logger == "tensorboard" else \
        (lambda: MLflowLogger(f"file:{tmp_path / 'mlruns'}"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = make()
    without = count_reads(monkeypatch, lambda: learner(tmp_path).fit(2, lr=1e-2))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with_logger = count_reads(monkeypatch, lambda: learner(tmp_path).fit(2, lr=1e-2, callbacks=[logger]))
    extra = list(with_logger)
    for read in without:
        extra.remove(read)
    assert extra == [("tolist", (BATCHES,))] * 2  # one read of the epoch's losses per epoch, nothing per batch
