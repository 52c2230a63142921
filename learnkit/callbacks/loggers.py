"""Experiment loggers: TensorBoardLogger (event files) and MLflowLogger (an MLflow run), optional extras.

Both log the same things on one step axis: per training batch the loss and the scheduled hyper-parameters of
every param group (`learn.hypers`: lr, mom, ...), per epoch the epoch's record (train/valid loss, metrics, time),
and the fit's parameters once. The step is the number of training batches before this one, counted across every
fit the logger sees (`fine_tune`'s two fits make one axis), and a fit resumed with `resume_from=` continues it
from the checkpoint: TensorBoard hides the events an interrupted run wrote after the checkpoint (`purge_step`),
MLflow keeps the values already in the run and the resumed fit skips those steps, so no step appears twice.

No host sync per batch: losses stay device tensors until the end of the epoch (or a checkpoint, or the end of
the fit), when they are read in one transfer, as `History` does for the epoch's mean. Under torchrun rank 0 logs.
"""
from __future__ import annotations

import importlib
import os
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from learnkit.learner.events import Callback
from learnkit.learner.learner import Learner
from learnkit.learner.metrics import metric_name

__all__ = ["TensorBoardLogger", "MLflowLogger", "fit_params"]


def _require(module: str, extra: str, who: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{who} needs the optional extra {extra!r}: pip install \"learnkit[{extra}]\" "
                          f"(importing {module} failed: {e})") from e


def fit_params(learn: Learner) -> dict[str, Any]:
    """The parameters of the fit that is starting, as numbers and strings: epochs, batches, batch size, model,
    parameter count, optimizer, loss, mixed precision, weight decay, layer groups and each schedule (its
    repr and its highest value in the last layer group, e.g. `lr_max`)."""
    params: dict[str, Any] = {
        "epochs": learn.n_epochs, "batches": learn.n_iter,
        "batch_size": getattr(learn.data.train_dl, "batch_size", None),
        "model": type(learn.model).__name__, "n_params": sum(p.numel() for p in learn.model.parameters()),
        "opt": type(learn.opt).__name__ if learn.opt is not None else None, "loss_fn": metric_name(learn.loss_fn),
        "mixed_precision": str(learn.amp_dtype).replace("torch.", "") if learn.amp_dtype is not None else "off",
        "weight_decay": max((g.get("weight_decay", 0.0) for g in learn.opt.param_groups), default=0.0)
        if learn.opt is not None else None,
        "layer_groups": len(learn.layer_groups),
    }
    n = max(2, min(learn.n_iter, 10_001))  # the fit's own steps (sampled beyond 10,000): the loop's progress values
    for name, sched in learn.schedules.items():
        last = sched[-1] if isinstance(sched, (list, tuple)) else sched
        params[f"schedule_{name}"] = repr(sched)
        params[f"{name}_max"] = max(float(last(i / (n - 1))) for i in range(n))  # schedules: pure functions of p
    return {k: v for k, v in params.items() if v is not None}


class _StepLogger(Callback):
    """The step axis, the per-batch buffer and the epoch records both loggers share; a subclass writes
    (`open`, `write_scalars`, `close`)."""

    order = 70  # after the metrics are in the epoch's record, before Checkpoint (90)

    def __init__(self, params: dict[str, Any] | None) -> None:
        self.params = dict(params or {})
        self.step_offset = self.next_step = 0  # the step of this fit's first batch; of the next batch logged
        self.epoch_offset = self.next_epoch = 0  # as CSVLogger: epochs counted across the fits logged
        self.fit_index = 0  # fits started by this logger (the first is 0)
        self._pending: list[tuple[int, torch.Tensor, dict[str, list[float]], float]] = []
        self._started = self._restored = False
        self.active = True

    # --- the loop's events
    def before_fit(self, learn: Learner) -> None:
        self.active = learn.dist is None or learn.dist.is_main  # under torchrun rank 0 logs
        resumed = self._restored
        if not resumed:
            if self._started:
                self.fit_index += 1
            self.step_offset, self.epoch_offset = self.next_step, self.next_epoch
        self._started, self._restored = True, False
        self._pending = []
        if self.active:
            self.open(learn, resumed)

    def after_batch(self, learn: Learner) -> None:
        if self.active and learn.training and learn.loss is not None:
            step = self.step_offset + learn.iter  # the loop counts this batch right after after_batch
            # The loss tensor as it is (no read, no sync); the loop makes a new hypers dict every batch.
            self._pending.append((step, learn.loss.detach(), learn.hypers, time.time()))
            self.next_step = step + 1

    def after_epoch(self, learn: Learner) -> None:
        if not self.active:
            return
        self.flush()
        record = dict(learn.history.epoch_records[-1]) if learn.history.epoch_records else {}
        record["epoch"] = self.epoch_offset + learn.epoch
        # At the epoch's last batch, so that a resume from the checkpoint written after it keeps it.
        step = max(self.step_offset, self.next_step - 1)
        self.write_scalars([(f"epoch/{k}", float(v), step, time.time()) for k, v in record.items()
                            if isinstance(v, (int, float))])
        self.next_epoch = record["epoch"] + 1

    def after_fit(self, learn: Learner) -> None:
        if self.active:
            self.flush()
        self.close(learn)

    def flush(self) -> None:
        """Write the buffered batches: their losses are read in one transfer."""
        if not self._pending:
            return
        losses = torch.stack([loss.float() for _, loss, _, _ in self._pending]).tolist()
        rows = []
        for (step, _, hypers, wall), loss in zip(self._pending, losses):
            rows.append(("train/loss", loss, step, wall))
            rows += [(f"schedule/{name}/group_{i}", float(v), step, wall)
                     for name, values in hypers.items() for i, v in enumerate(values)]
        self._pending = []
        self.write_scalars(rows)

    # --- checkpoints: what a resumed fit needs to continue the axis (the buffer is written first)
    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {"step_offset": self.step_offset, "next_step": self.next_step, "epoch_offset": self.epoch_offset,
                "next_epoch": self.next_epoch, "fit_index": self.fit_index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("step_offset", "next_step", "epoch_offset", "next_epoch", "fit_index"):
            setattr(self, key, int(state[key]))
        self._started = self._restored = True

    # --- what a subclass writes
    def open(self, learn: Learner, resumed: bool) -> None:
        raise NotImplementedError

    def write_scalars(self, rows: list[tuple[str, float, int, float]]) -> None:
        raise NotImplementedError

    def close(self, learn: Learner) -> None:
        raise NotImplementedError


class TensorBoardLogger(_StepLogger):
    """Log training to TensorBoard event files under `log_dir` (default `learn.path/runs/<date-time>`).

    Scalars: `train/loss` and `schedule/<name>/group_<i>` per batch; `epoch/<key>` for every number of the
    epoch's record (`epoch/train_loss`, `epoch/valid_loss`, `epoch/<metric>`, `epoch/time`, the running
    `epoch/epoch`), at the epoch's last batch. Hyper-parameters: `fit_params(learn)` of the logger's first fit and
    your `params`, through TensorBoard's hparams plugin (it keeps one set per run). Optional: every
    `histogram_every` batches a histogram of every parameter and its gradient (`weights/<name>`, `grads/<name>`;
    each reads the tensor to the host, so keep it rare), and `log_graph=True` the model's graph, traced on the
    first training batch in eval mode under no_grad (no statistics or random numbers change).

    Needs the `tensorboard` extra: `pip install "learnkit[tensorboard]"`. View with `tensorboard --logdir runs`.

    Example:
        >>> learn.fit_one_cycle(5, 1e-3, callbacks=[TensorBoardLogger(params={"arch": "resnet18"})])
    """

    def __init__(self, log_dir: str | Path | None = None, params: dict[str, Any] | None = None,
                 histogram_every: int | None = None, log_graph: bool = False):
        self._tb = _require("torch.utils.tensorboard", "tensorboard", "TensorBoardLogger")
        if histogram_every is not None and not (type(histogram_every) is int and histogram_every >= 1):
            raise ValueError(f"TensorBoardLogger(histogram_every={histogram_every!r}): a positive int or None")
        super().__init__(params)
        self.log_dir = None if log_dir is None else str(log_dir)
        self.histogram_every, self.log_graph = histogram_every, log_graph
        self.writer: Any = None
        self._graph_done = False

    def open(self, learn: Learner, resumed: bool) -> None:
        if self.log_dir is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            self.log_dir = str(Path(learn.path) / "runs" / stamp)
        # A resumed fit starts at the checkpoint's step: TensorBoard hides what the interrupted run wrote from it on.
        purge = self.step_offset + learn.iter if resumed else None
        self.writer = self._tb.SummaryWriter(self.log_dir, purge_step=purge)
        if not resumed and self.fit_index == 0:  # TensorBoard's hparams plugin keeps one set per run
            self._write_hparams(learn)

    def _write_hparams(self, learn: Learner) -> None:
        from torch.utils.tensorboard.summary import hparams
        values = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in {**fit_params(learn), **self.params}.items()}
        metrics = {f"epoch/{name}": 0.0 for name in ["train_loss", "valid_loss"] + [m.name for m in learn.metrics]}
        for summary in hparams(values, metrics):  # experiment, session start, session end (the plugin's three)
            self.writer.file_writer.add_summary(summary)

    def before_batch(self, learn: Learner) -> None:
        if self.active and self.log_graph and not self._graph_done and learn.training:
            self._graph_done = True
            was_training = learn.model.training
            learn.model.eval()
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation: TensorBoard uses it
                    self.writer.add_graph(learn.model, learn.xb if len(learn.xb) > 1 else learn.xb[0])
            finally:
                learn.model.train(was_training)

    def after_step(self, learn: Learner) -> None:
        step = self.step_offset + learn.iter
        if self.active and self.histogram_every and step % self.histogram_every == 0:
            for name, p in learn.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", p.detach().float(), step)
                if p.grad is not None:
                    self.writer.add_histogram(f"grads/{name}", p.grad.detach().float(), step)

    def write_scalars(self, rows: list[tuple[str, float, int, float]]) -> None:
        for tag, value, step, wall in rows:
            self.writer.add_scalar(tag, value, step, walltime=wall)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.writer is not None:
            self.writer.flush()
        return {**state, "log_dir": self.log_dir}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_dir = state["log_dir"]

    def close(self, learn: Learner) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(_StepLogger):
    """Log training to an MLflow run: `fit_params(learn)` and `params` as run parameters, the same metrics as
    `TensorBoardLogger` (`train/loss`, `schedule/<name>/group_<i>` per batch, `epoch/<key>` per epoch) with the
    same steps, and with `log_model=True` the inference bundle (`learn.export`) as the artefact folder `model`
    after every fit that ends normally. The run ends FINISHED, or FAILED when the fit raised; later fits of the
    same logger (fine_tune's second) continue the same run, their parameters prefixed `fit<i>/`.

    `tracking_uri`: where runs go (None: MLflow's default, `MLFLOW_TRACKING_URI` or `sqlite:///mlflow.db`). With
    `mlflow-skinny` (the `mlflow` extra) use a tracking server (`http://...`) or a local folder
    (`file:./mlruns`, which MLflow 3 accepts with `MLFLOW_ALLOW_FILE_STORE=true` in the environment); a sqlite
    store needs the full `mlflow` package (SQLAlchemy). A resumed fit (`resume_from=`) continues the run the
    checkpoint names; the steps the interrupted run already logged are kept and not logged again.

    Needs the `mlflow` extra: `pip install "learnkit[mlflow]"`.

    Example:
        >>> logger = MLflowLogger("file:./mlruns", experiment="pets", params={"arch": "resnet34"})
        >>> learn.fine_tune(3, callbacks=[logger]); logger.run_id
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "learnkit", run_name: str | None = None,
                 params: dict[str, Any] | None = None, log_model: bool = False):
        self._mlflow = _require("mlflow", "mlflow", "MLflowLogger")
        self._entities = importlib.import_module("mlflow.entities")
        super().__init__(params)
        self.tracking_uri, self.experiment, self.run_name, self.log_model = tracking_uri, experiment, run_name, \
            log_model
        self.run_id: str | None = None
        self.client: Any = None
        self._logged: dict[str, int] = {}  # on resume: the last step already in the run, per metric

    def _connect(self) -> Any:
        from mlflow.tracking import MlflowClient
        try:
            client = MlflowClient(self.tracking_uri)
            found = client.get_experiment_by_name(self.experiment)
        except Exception as e:
            uri = self.tracking_uri or self._mlflow.get_tracking_uri()
            raise RuntimeError(
                f"MLflowLogger: cannot open the MLflow tracking store {uri!r}: {type(e).__name__}: {str(e)[:300]}. "
                "Fix: tracking_uri='http://<server>' (any MLflow), tracking_uri='file:./mlruns' with "
                "MLFLOW_ALLOW_FILE_STORE=true set (mlflow-skinny works), or install the full mlflow package for "
                "sqlite:///mlflow.db") from e
        self._experiment_id = found.experiment_id if found is not None else client.create_experiment(self.experiment)
        return client

    def open(self, learn: Learner, resumed: bool) -> None:
        if self.client is None:
            self.client = self._connect()
        if self.run_id is None:
            self.run_id = self.client.create_run(self._experiment_id, run_name=self.run_name).info.run_id
        else:
            self.client.update_run(self.run_id, status="RUNNING")
        if resumed:  # what the interrupted run logged after the checkpoint stays; those steps are not sent again
            metrics = self.client.get_run(self.run_id).data.metrics
            self._logged = {key: max(m.step for m in self.client.get_metric_history(self.run_id, key))
                            for key in metrics}
            return
        self._logged = {}
        prefix = f"fit{self.fit_index}/" if self.fit_index else ""
        values = {**fit_params(learn), **self.params}
        self.client.log_batch(self.run_id, params=[self._entities.Param(f"{prefix}{k}", str(v)[:6000])
                                                   for k, v in values.items()])

    def write_scalars(self, rows: list[tuple[str, float, int, float]]) -> None:
        metrics = [self._entities.Metric(key, value, int(wall * 1000), step) for key, value, step, wall in rows
                   if step > self._logged.get(key, -1)]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, learn: Learner) -> None:
        failed = learn.fit_error is not None
        if self.log_model and not failed:
            with tempfile.TemporaryDirectory() as tmp:
                folder = learn.export(os.path.join(tmp, "model"))  # every rank calls it; rank 0 writes
                if self.active and self.run_id is not None:
                    self.client.log_artifacts(self.run_id, str(folder), "model")
        if self.active and self.run_id is not None:
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.run_id = state["run_id"]
