"""Learner: the model, the data, the optimizer and THE training loop.

Everything a training step needs (device moves, train/eval and grad modes, autocast, backward, step,
zero_grad, schedules, counters) is in this file, in `fit` and the `_do_*` helpers below it. What one batch
computes is the public step seam, `train_step` / `eval_step`, which a subclass overrides (a GAN, a loss over
two outputs) while the loop keeps the rest. Callbacks are for optional concerns; recipes (`fit_one_cycle`,
`fine_tune`, `lr_find`) are short methods over `fit`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from learnkit.core.device import amp_dtype, autocast
from learnkit.core.random import get_rng_state, set_rng_state
from learnkit.data.bunch import DataBunch, n_items
from learnkit.learner.events import (Callback, CallbackHost, CancelBatch, CancelEpoch, CancelFit, CancelStep,
                                     CancelTrain, CancelValidate)
from learnkit.learner.history import History
from learnkit.learner.inference import inference_forward
from learnkit.learner.metrics import Metric, as_metrics, update_metric
from learnkit.learner.names import take_fastai_names
from learnkit.learner.progress import ProgressBar
from learnkit.learner.recipes import Lr, Recipes
from learnkit.optim.optimizer import AdamW, make_layer_groups, set_hyper
from learnkit.optim.schedules import Const

__all__ = ["Learner"]


class Learner(CallbackHost, Recipes):
    """Trains `model` on `data`.

    Args:
        data: a `DataBunch` (fastai's `dls=` is accepted, with a deprecation warning; so are `loss_func`,
            `opt_func`, `cbs`, `wd`).
        model: any `nn.Module`; moved to `data.device`.
        loss_fn: any callable `(pred, *targets) -> scalar`; default: the target block's loss.
        opt_fn: `(param_groups, lr) -> torch.optim.Optimizer`; default learnkit's `AdamW`.
        metrics: functions `(pred, target) -> tensor`, `Metric`s (`RocAuc()`, `SkMetric(fn, y_pred=...)` for a
            scikit-learn-style function) or torchmetrics metrics, computed on the whole validation set.
        callbacks: extra callbacks (instances) for every fit.
        path: folder for `save`/`load`/`export` (models go to `path/model_dir`).
        splitter: `model -> list of modules`, the layer groups (default: `[model]`).
        mixed_precision: 'auto' (bf16 or fp16 autocast on CUDA, off on CPU), 'bf16', 'fp16' or None; the
            values `load_learner` takes too (`learnkit.core.parse_mixed_precision`).
        progress: show fastprogress bars and the metrics table.
        train_bn: keep normalization layers trainable in frozen layer groups.
        preflight: run the pre-flight check (`check()`) before the first fit.
        compile: torch.compile the model now (`learn.compile`): True, a mode ('max-autotune', or
            'reduce-overhead' = CUDA graphs, for static shapes), or a dict of torch.compile arguments.
        sync_bn: under torchrun on CUDA, BatchNorm statistics span all ranks (`nn.SyncBatchNorm`).
        weight_decay: the weight decay of the optimizer's decay param groups (weights; biases and
            normalization parameters get none); None keeps the optimizer's default (AdamW: 0.01).
        cudnn_benchmark: set `torch.backends.cudnn.benchmark` to this during `fit`, `validate` and `get_preds`
            only (restored afterwards); None leaves the process setting alone.
        cuda_graphs: 'auto' (default): on CUDA, each fit records the whole training step (forward, loss,
            backward, optimizer step) and the validation forward as CUDA graphs and replays them for every batch
            of the same shapes, when nothing in the set-up prevents it (learner/graphs.py lists what does; the
            reason is in `learn.cuda_graph_report`); True insists (an error says why it cannot); False: eager.

    The step seam: `train_step(batch) -> loss` (forward and loss of one training batch) and `eval_step(batch)
    -> (pred, loss)` (validation; `pred` feeds the metrics). A subclass overrides them for a custom step (a GAN,
    a loss over two outputs); the loop keeps device moves, batch transforms, autocast, backward through the grad
    scaler, accumulation and clipping callbacks, the step of `learn.opt`, `zero_grad`, schedules and counters.
    A second network (a GAN's critic) is stepped inside the step with `learn.optimizer_step(loss, its_opt)`.

    Under `torchrun --nproc_per_node=N` the same script trains data-parallel (learner/distributed.py).
    Public state the tools around the loop read: `checked` (the pre-flight check passed, or preflight=False),
    `resume_point` ((batches_done, rng_state) while `resume_from=` resumes an epoch mid-way, else None),
    `fit_error` (during after_fit: the exception, KeyboardInterrupt included, that ended the fit; None after a
    normal end or CancelFit), `max_batches` (this fit's `fit(max_batches=...)`, else None), `live_plot` (the
    progress bar's live loss plot: True, False, or None = on in a notebook only; set it any time),
    `fine_tune_defaults` (what `fine_tune` uses for `lr_mult` / `freeze_epochs` left at None; empty: fastai's).

    Example:
        >>> learn = Learner(data, create_model("mlp", n_in=784, n_out=10), metrics=[accuracy])
        >>> learn.fit_one_cycle(3, max_lr=3e-3)
    """

    def __init__(self, data: DataBunch | None = None, model: nn.Module | None = None, loss_fn: Callable | None = None,
                 opt_fn: Callable[..., torch.optim.Optimizer] = AdamW, metrics: Sequence[Any] = (),
                 callbacks: Iterable[Callback] = (), path: str | Path = ".", model_dir: str = "models",
                 splitter: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
                 mixed_precision: Any = "auto", progress: bool = True, train_bn: bool = True,
                 preflight: bool = True, compile: bool | str | dict = False, sync_bn: bool = False,
                 weight_decay: float | None = None, cudnn_benchmark: bool | None = None,
                 cuda_graphs: bool | str = "auto", **fastai_names: Any):
        if fastai_names:
            data, loss_fn, opt_fn, callbacks, weight_decay = take_fastai_names("Learner", Learner.__init__, fastai_names, {
                "data": data, "loss_fn": loss_fn, "opt_fn": opt_fn, "callbacks": callbacks,
                "weight_decay": weight_decay}).values()
        if data is None or model is None:
            raise TypeError(f"Learner() needs data and model: Learner(data, model, ...) (got data={data!r}, "
                            f"model={type(model).__name__ if model is not None else None})")
        from learnkit.learner.distributed import Distributed
        self.data, self.device = data, data.device
        self.dist = Distributed.from_env(self.device, sync_bn)  # None in a single process
        if self.dist is not None:
            self.dist.sync_generators(data.order_generators() + [torch.default_generator], data.generators())
            data.shard(self.dist.rank, self.dist.world_size)
            model = self.dist.prepare(model)
        self.model, self._train_module = model.to(self.device), None
        self.loss_fn = loss_fn if loss_fn is not None else data.loss_fn()
        if self.loss_fn is None:
            raise ValueError("Learner: no loss_fn given and the data has no target block to supply one; "
                             "pass loss_fn=...")
        self.opt_fn, self.opt = opt_fn, None
        self.weight_decay, self.cudnn_benchmark = weight_decay, cudnn_benchmark
        if cuda_graphs not in (True, False, "auto"):
            raise ValueError(f"Learner(cuda_graphs={cuda_graphs!r}): use 'auto', True or False")
        self.cuda_graphs, self.graphs, self.cuda_graph_report = cuda_graphs, None, None  # see learner/graphs.py
        self.metrics: list[Metric] = as_metrics(metrics)  # one metric, a list, or None
        self.path, self.model_dir = Path(path), model_dir
        self.splitter, self.train_bn = splitter, train_bn
        self.layer_groups = make_layer_groups(self.model, splitter)
        self.amp_dtype = amp_dtype(mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.callbacks: list[Callback] = []
        self._handlers: dict[str, list[tuple[Callback, Callable]]] = {}
        self.history = History()
        progress = progress and (self.dist is None or self.dist.is_main)  # one rank prints
        self.progress = progress
        self.add_callbacks([self.history] + ([ProgressBar()] if progress else []) + list(callbacks))
        self.epoch = self.iter = self.n_iter = self.n_epochs = self.opt_steps = self.batch_idx = 0
        self.schedules: dict[str, Any] = {}
        self.hypers: dict[str, list[float]] = {}
        self.val_results: dict[str, float] = {}
        self.training = False
        # The current loader and batch as callbacks see them (set by the loop), and the validation sums.
        self.dl, self.xb, self.yb, self.pred, self.loss, self.loss_grad = None, (), (), None, None, None
        self._val_loss, self._val_count = torch.zeros(()), 0
        # Set by other modules, declared here so that every attribute of a Learner is listed in one place:
        self.compile_seconds: float | None = None  # learn.compile() (learner/compile.py)
        self.budget_plan: dict[str, Any] | None = None  # fit_one_cycle(budget=...) (learner/budget.py)
        self.lr_find_results: dict[str, Any] | None = None  # learn.lr_find() (learner/lr_find.py)
        self.pretrained_source: str | None = None  # where vision_learner's pretrained weights came from
        # fine_tune's values for the arguments a call leaves at None (`lr_mult`, `freeze_epochs`): the builder
        # that knows the task sets them (vision_learner, for regression targets)
        self.fine_tune_defaults: dict[str, Any] = {}
        self.encoder_transfer: dict[str, int] | None = None  # load_encoder: shared/new tokens (text/learner.py)
        self.live_plot: bool | None = None  # ProgressBar's live plot: None = in a notebook only (learner/progress.py)
        self.checked, self.max_batches, self.fit_error = not preflight, None, None  # see the class docstring
        self.resume_point: tuple[int, dict] | None = None
        if compile:
            self.compile(**(compile if isinstance(compile, dict) else {} if compile is True else {"mode": compile}))

    # ------------------------------------------------------------------ the loop
    def fit(self, epochs: int | None = None, lr: Lr = 1e-3, schedules: dict | None = None,
            callbacks: Iterable[Callback] = (), resume_from: str | Path | None = None,
            weight_decay: float | None = None, max_batches: int | None = None, **fastai_names: Any) -> None:
        """Train for `epochs` with a constant `lr` (or the given `schedules`).

        Args:
            lr: one rate, a `slice(lo, hi)` spread geometrically over the layer groups, or one per group.
            schedules: hyper-parameter name → schedule (or list, one per layer group) of progress 0..1.
            callbacks: callbacks for this fit only.
            resume_from: a checkpoint written by the `Checkpoint` callback during this same fit.
            weight_decay: the decay param groups' weight decay for this fit (restored afterwards); None keeps
                the learner's.
            max_batches: stop after this many training batches in all: the epoch it falls in is cut short,
                validated, and the fit ends. Schedules see the true length (`n_iter = max_batches`).

        Example:
            >>> learn.fit(3, lr=1e-3)
        """
        if fastai_names:
            epochs, callbacks, weight_decay = take_fastai_names("fit", Learner.fit, fastai_names, {
                "epochs": epochs, "callbacks": callbacks, "weight_decay": weight_decay}).values()
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"fit(epochs={epochs!r}): epochs must be a positive int, e.g. fit(3)")
        n_batches = len(self.data.train_dl)
        if n_batches == 0:
            dl = self.data.train_dl
            raise ValueError(f"fit: the training loader yields no batch ({n_items(dl)} items, batch_size="
                             f"{getattr(dl, 'batch_size', '?')}, drop_last={getattr(dl, 'drop_last', '?')}); use a "
                             f"smaller batch_size or more training items")
        if max_batches is not None and not (type(max_batches) is int and max_batches >= 1):
            raise ValueError(f"fit(max_batches={max_batches!r}): max_batches must be a positive int or None")
        if self.opt is None:
            self.create_opt()
        self.max_batches, total = max_batches, epochs * n_batches
        self.n_epochs, self.n_iter, self.iter = epochs, min(total, max_batches or total), 0
        self.schedules = schedules if schedules is not None else {"lr": [Const(v) for v in self.lr_per_group(lr)]}
        if not self.checked:
            self.check()
        added = [self.add_callback(cb) for cb in callbacks]
        decay_before = self._set_weight_decay(weight_decay)
        # Training forwards go through DDP under torchrun (a wrapper per fit); else the model itself.
        self._train_module = self.dist.train_model(self.model) if self.dist is not None else self.model
        start_epoch = 0
        with self._cudnn_scope():
            try:
                from learnkit.learner.graphs import graphs_for_fit
                self.graphs = graphs_for_fit(self)  # None: eager (why: learn.cuda_graph_report)
                if resume_from is not None:
                    from learnkit.learner.checkpoint import restore_checkpoint
                    start_epoch = restore_checkpoint(self, resume_from)
                self._event("before_fit")
                for self.epoch in range(start_epoch, epochs):
                    if self.iter >= self.n_iter:  # max_batches ended the fit in the previous epoch
                        break
                    self.val_results = {}
                    self._with_events("epoch", self._do_epoch, CancelEpoch)
            except CancelFit:
                pass
            except BaseException as e:  # after_fit is told (learn.fit_error) that this fit failed
                self.fit_error = e
                raise
            finally:
                # Also on KeyboardInterrupt or an error: close progress bars, keep history, drop half-made grads.
                self.training = False
                if self.opt is not None:
                    self.opt.zero_grad(set_to_none=True)
                    for group, value in zip(self._decay_groups(), decay_before):
                        group["weight_decay"] = value
                self._train_module = None  # under torchrun the DDP wrapper goes with it (a new one each fit)
                if self.graphs is not None:  # the graphs hold this fit's buffers: free them with it
                    self.cuda_graph_report, self.graphs = self.graphs.report, None
                try:
                    self._event("after_fit")
                finally:
                    self.fit_error = None  # its traceback would keep the failed step's tensors alive (an OOM retry)
                    for cb in added:
                        self.remove_callback(cb)

    def _do_epoch(self) -> None:
        self.training, self.dl = True, self.data.train_dl
        self._with_events("train", self._do_train, CancelTrain)
        if len(self.data.valid_dl) > 0:
            self.training, self.dl = False, self.data.valid_dl
            self._with_events("validate", self._do_validate, CancelValidate)

    def _do_train(self) -> None:
        self.model.train()
        resume, self.resume_point = self.resume_point, None
        with torch.enable_grad():
            for self.batch_idx, batch in enumerate(self.dl):
                if resume is not None:  # resuming mid-epoch: replay the same order, skip what already ran
                    if self.batch_idx < resume[0]:
                        continue
                    set_rng_state(resume[1], self.data.generators())
                    resume = None
                self._one_batch(batch)
                if self.iter >= self.n_iter:  # fit(max_batches=...) ends inside this epoch
                    break

    def _do_validate(self) -> None:
        self.training = False
        self.model.eval()
        for m in self.metrics:
            m.reset()
        self._val_loss, self._val_count = torch.zeros((), device=self.device), 0
        with torch.no_grad():
            for self.batch_idx, batch in enumerate(self.dl):
                self._one_batch(batch)
        names = ["valid_loss"] + [m.name for m in self.metrics]
        if self.dist is not None and not self.dist.local:  # sums over every rank's shard
            self.val_results = dict(zip(names, self.dist.reduce_validation(self._val_loss, self._val_count,
                                                                           self.metrics)))
            return
        # One host sync per validation, for all metrics together.
        values = torch.stack([self._val_loss / max(1, self._val_count)] +
                             [torch.as_tensor(m.compute(), device=self.device).float().reshape(()) for m in self.metrics])
        self.val_results = dict(zip(names, values.tolist()))

    def _one_batch(self, batch: Sequence[Any]) -> None:
        batch = self.data.transfer(batch, self.training)
        self.pred = self.loss = self.loss_grad = None  # nothing stale if this batch is cancelled early
        self.xb, self.yb = tuple(batch[:self.data.n_inp]), tuple(batch[self.data.n_inp:])
        try:
            if self.training:
                self._apply_schedules()
            self._event("before_batch")  # callbacks may replace learn.xb / learn.yb (MixUp): the step sees theirs
            ran = self.graphs.run(self, self._eager_step, self._event) if self.graphs is not None else None
            if ran == "replayed":  # learner/graphs.py; a 'warm-up' ran _eager_step in full
                self._after_step() if self.training else self._accumulate_validation()
            elif ran is None:
                self._eager_step()
        except CancelBatch:
            pass
        self._event("after_batch")
        if self.training:
            self.iter += 1

    def _eager_step(self) -> None:
        with self.autocast():
            if self.training:
                self.loss = self.train_step(self.xb + self.yb)
            else:
                self.pred, self.loss = self.eval_step(self.xb + self.yb)
        self.loss_grad = self.loss  # what backward sees; a callback may rescale it (GradientAccumulation)
        self._event("after_loss")
        if self.training:
            self._backward_step()
        else:
            self._accumulate_validation()

    def _accumulate_validation(self) -> None:
        n = self.yb[0].shape[0] if self.yb else self.xb[0].shape[0]
        self._val_loss += self.loss.detach().float() * n
        self._val_count += n
        for m in self.metrics:
            update_metric(m, self.pred, *self.yb)  # first output of a tuple; errors name the metric

    # ------------------------------------------------------------------ the step seam
    def train_step(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Forward and loss of one training batch; returns the loss the loop backpropagates.

        `batch` is on the device, batch-transformed, as callbacks left it at `before_batch` (inputs first). The loop
        runs this under autocast and grad mode, then the rest: `after_loss`, backward through the grad scaler,
        `after_backward` (clipping, accumulation), the step of `learn.opt`, `zero_grad`, counters. The default:
        `learn.pred = learn.train_module(*inputs)`, `after_forward`, `loss_fn(learn.pred, *targets)`.

        Example:
            >>> class TwoHeads(Learner):  # a model returning (logits, value): one loss over both outputs
            ...     def train_step(self, batch):
            ...         (logits, value), (y, target) = self.model(batch[0]), batch[1:]
            ...         return F.cross_entropy(logits, y) + F.mse_loss(value, target)
        """
        n = self.data.n_inp
        self.pred = self.train_module(*batch[:n])
        self._event("after_forward")
        return self.loss_fn(self.pred, *batch[n:])

    def eval_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[Any, torch.Tensor]:
        """Forward and loss of one validation batch: `(pred, loss)`; `pred` feeds the metrics
        (`metric(pred, *targets)`) and the loss the validation loss. Runs in eval mode, under no_grad and
        autocast. The default fires `after_forward` like `train_step`; override both together."""
        n = self.data.n_inp
        self.pred = self.model(*batch[:n])
        self._event("after_forward")
        return self.pred, self.loss_fn(self.pred, *batch[n:])

    @property
    def train_module(self) -> nn.Module:
        """What training forwards go through: the model, or during a fit under torchrun its DDP wrapper."""
        return self._train_module if self._train_module is not None else self.model

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One whole step of a second optimizer inside a custom `train_step` (a GAN's critic): zero its
        gradients, backward `loss` through the grad scaler (outside autocast), `scaler.step(optimizer)`, zero
        its gradients again. The loop's `scaler.update()` after `learn.opt`'s step covers both; `opt_steps`
        counts only the loop's steps. The loss the step then returns goes to `learn.opt` as usual."""
        optimizer.zero_grad(set_to_none=True)
        off = torch.autocast(self.device.type, enabled=False) if self.amp_dtype is not None else contextlib.nullcontext()
        with off:
            self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)

    def _backward_step(self) -> None:
        self.scaler.scale(self.loss_grad).backward()
        try:
            self._event("after_backward")
            self.scaler.step(self.opt)
            self.scaler.update()
            self._after_step()
            self.opt.zero_grad(set_to_none=True)
        except CancelStep:
            pass

    def _after_step(self) -> None:
        self.opt_steps += 1
        self._event("after_step")

    def _apply_schedules(self) -> None:
        progress = self.iter / max(1, self.n_iter - 1)
        hypers = {}  # a new dict every batch: History keeps it as it is, without copying
        for name, sched in self.schedules.items():
            if isinstance(sched, (list, tuple)):
                values = [s(progress) for s in sched]
            else:
                values = [sched(progress)] * len(self.layer_groups)
            set_hyper(self.opt, name, values)
            hypers[name] = values
        self.hypers = hypers

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this learner's mixed-precision setting (a no-op when off)."""
        return autocast(self.device.type, self.amp_dtype)

    @contextlib.contextmanager
    def _cudnn_scope(self) -> Iterator[None]:
        """`torch.backends.cudnn.benchmark = self.cudnn_benchmark` inside, the process's value restored after."""
        before = torch.backends.cudnn.benchmark
        if self.cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = before

    def rng_state(self) -> dict:
        return get_rng_state(self.data.generators())

    def set_rng_state(self, state: dict) -> None:
        set_rng_state(state, self.data.generators())

    def compile(self, **kwargs: Any) -> float:
        """torch.compile the model in place and compile now; returns the compile seconds (eager, with one
        warning, if it fails). kwargs go to `torch.compile` (mode, backend, ...). See learner/compile.py."""
        from learnkit.learner.compile import compile_model
        return compile_model(self, **kwargs)

    def profile(self, n_batches: int = 50) -> dict[str, Any]:
        """Time `n_batches` training steps: samples/s, share of time waiting for data, peak GPU memory and one
        line of advice (see `BottleneckReport`). Leaves model, optimizer, RNG and history unchanged."""
        from learnkit.learner.profiling import profile
        return profile(self, n_batches)

    # ------------------------------------------------------------------ evaluation, inference, saving
    def validate(self, dl: Any = None) -> dict[str, float]:
        """Loss and metrics on `dl` (default: the validation loader)."""
        self.dl = dl if dl is not None else self.data.valid_dl
        with self._cudnn_scope():
            self._with_events("validate", self._do_validate, CancelValidate)
        return dict(self.val_results)

    def get_preds(self, dl: Any = None, activation: bool = True) -> tuple[Any, torch.Tensor | None]:
        """(predictions, targets) on `dl` (default: validation, every rank's under torchrun) on the CPU in the loader's
        order; a tuple of tensors for a model with several outputs (activation on the first). No callbacks run."""
        sharded = self.dist is not None and (dl is None or dl is self.data.valid_dl)
        dl = dl if dl is not None else self.data.valid_dl
        self.model.eval()
        preds, targets = [], []
        with torch.no_grad(), self._cudnn_scope():
            for batch in dl:
                batch = self.data.transfer(batch, training=False)
                out = inference_forward(self.model, batch[:self.data.n_inp], self.amp_dtype)
                y_block = self.data.y_block
                outs = list(out) if isinstance(out, (tuple, list)) else [out]
                outs[0] = y_block.activation(outs[0]) if activation and y_block is not None else outs[0]
                preds.append(tuple(o.float() for o in outs))
                if len(batch) > self.data.n_inp:
                    targets.append(batch[self.data.n_inp])
        per_output = [list(o) for o in zip(*preds)] or [[]]  # one list of batches per model output
        if sharded:
            per_output, targets = [self.dist.gather_batches(o) for o in per_output], self.dist.gather_batches(targets)
        joined = tuple(torch.cat(o).cpu() for o in per_output)
        return (joined[0] if len(joined) == 1 else joined), (torch.cat(targets).cpu() if targets else None)

    def predict(self, item: Any) -> tuple[Any, Any, torch.Tensor]:
        """(decoded prediction, class index or None, probabilities) for one raw input (what get_x returns)."""
        preds, _ = self.get_preds(self.data.test_dl([item]))
        decoded, index = self.data.y_block.decode_prediction(preds[0])
        return decoded, index, preds[0]

    def save(self, name: str, with_opt: bool = True) -> Path:
        """Save weights (and optimizer state) to path/model_dir/name.pth, atomically (rank 0 only under torchrun)."""
        from learnkit.core.serialization import atomic_write
        file = self.path / self.model_dir / f"{name}.pth"
        if self.dist is not None and not self.dist.is_main:
            return file
        state: dict[str, Any] = {"model": self.model.state_dict()}
        if with_opt and self.opt is not None:
            state["opt"] = self.opt.state_dict()
        with atomic_write(file) as tmp:
            torch.save(state, tmp)
        return file

    def load(self, name: str, with_opt: bool = True, strict: bool = True) -> "Learner":
        """Load what `save(name)` wrote (read with torch.load(weights_only=True): no code runs).

        All or nothing: every key and shape (model and optimizer) is checked before anything is copied, so a
        checkpoint that does not fit leaves the model and optimizer as they were.
        """
        from learnkit.learner.checkpoint import load_saved
        file = self.path / self.model_dir / f"{name}.pth"
        if self.dist is not None and not self.dist.local:
            self.dist.barrier()  # rank 0 may still be writing it
        if not file.exists():
            raise FileNotFoundError(f"load: no checkpoint at {file}; saved ones: "
                                    f"{sorted(p.stem for p in file.parent.glob('*.pth'))}")
        load_saved(self, file, with_opt, strict)
        return self

    def export(self, path: str | Path = "export") -> Path:
        """Write an inference bundle (weights as plain tensors + a JSON recipe); see `load_learner`."""
        from learnkit.export.bundle import export
        return self._on_main(lambda: export(self, path))

    def _on_main(self, fn: Callable[[], Any]) -> Any:
        """fn() here; under torchrun on rank 0 alone (no collectives, plain model), result given to every rank."""
        return self.dist.run_on_main(fn) if self.dist is not None else fn()

    def export_torch(self, path: str | Path, example: torch.Tensor | None = None) -> Path:
        """Write a `torch.export` program (.pt2, dynamic batch) with the batch preprocessing and activation
        inside, plus a model card beside it (export/graph.py)."""
        from learnkit.export.graph import export_torch
        return self._on_main(lambda: export_torch(self, path, example))

    def export_onnx(self, path: str | Path, example: torch.Tensor | None = None) -> Path:
        """Write an ONNX file (input 'images', output 'probs', dynamic batch) with the batch preprocessing and
        activation inside, plus a model card beside it (export/graph.py)."""
        from learnkit.export.graph import export_onnx
        return self._on_main(lambda: export_onnx(self, path, example))

    def check(self) -> None:
        """Pre-flight check: one batch through model and loss; classic mistakes raise in plain words."""
        from learnkit.learner.doctor import check_learner
        check_learner(self)
        self.checked = True

    def summary(self) -> str:
        """Per-layer output shapes and parameter counts (trainable/frozen), optimizer and loss."""
        from learnkit.learner.doctor import learner_summary
        text = learner_summary(self)
        print(text)
        return text

    def plot_loss(self, **kwargs: Any) -> Any:
        return self.history.plot_loss(**kwargs)

    def plot_sched(self, **kwargs: Any) -> Any:
        return self.history.plot_sched(**kwargs)
