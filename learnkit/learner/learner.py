"""Learner: the model, the data, the optimizer and THE training loop.

Everything a training step needs (device moves, train/eval and grad modes, autocast, backward, step,
zero_grad, schedules, counters) is in this file, in `fit` and the `_do_*` helpers below it. Callbacks
are for optional concerns; recipes (`fit_one_cycle`, `fine_tune`, `lr_find`) are short methods over `fit`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from learnkit.core.device import amp_dtype
from learnkit.core.random import get_rng_state, set_rng_state
from learnkit.data.bunch import DataBunch, n_items
from learnkit.learner.events import (CANCELS, EVENTS, Callback, CancelBatch, CancelEpoch, CancelFit, CancelStep,
                                     CancelTrain, CancelValidate)
from learnkit.learner.history import History
from learnkit.learner.metrics import Metric, as_metrics, update_metric
from learnkit.learner.progress import ProgressBar
from learnkit.optim.optimizer import AdamW, lrs_per_group, make_layer_groups, param_groups, set_hyper, set_trainable
from learnkit.optim.schedules import Const, flat_cos, one_cycle, sgdr

__all__ = ["Learner"]


class Learner:
    """Trains `model` on `data`.

    Args:
        data: a `DataBunch`.
        model: any `nn.Module`; moved to `data.device`.
        loss_fn: any callable `(pred, *targets) -> scalar`; default: the target block's loss.
        opt_fn: `(param_groups, lr) -> torch.optim.Optimizer`; default learnkit's `AdamW`.
        metrics: functions `(pred, target) -> tensor` or `Metric`s, computed on the validation set.
        callbacks: extra callbacks (instances) for every fit.
        path: folder for `save`/`load`/`export` (models go to `path/model_dir`).
        splitter: `model -> list of modules`, the layer groups (default: `[model]`).
        mixed_precision: 'auto' (bf16 or fp16 autocast on CUDA, off on CPU), 'bf16', 'fp16' or None.
        progress: show fastprogress bars and the metrics table.
        train_bn: keep normalization layers trainable in frozen layer groups.
        preflight: run the pre-flight check (`check()`) before the first fit.
        compile: torch.compile the model now (`learn.compile`): True, a mode ('max-autotune', or
            'reduce-overhead' = CUDA graphs, for static shapes), or a dict of torch.compile arguments.
        sync_bn: under torchrun on CUDA, BatchNorm statistics span all ranks (`nn.SyncBatchNorm`).

    Under `torchrun --nproc_per_node=N` the same script trains data-parallel (learner/distributed.py).

    Example:
        >>> learn = Learner(data, create_model("mlp", n_in=784, n_out=10), metrics=[accuracy])
        >>> learn.fit_one_cycle(3, max_lr=3e-3)
    """

    def __init__(self, data: DataBunch, model: nn.Module, loss_fn: Callable | None = None,
                 opt_fn: Callable[..., torch.optim.Optimizer] = AdamW, metrics: Sequence[Any] = (),
                 callbacks: Iterable[Callback] = (), path: str | Path = ".", model_dir: str = "models",
                 splitter: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
                 mixed_precision: Any = "auto", progress: bool = True, train_bn: bool = True,
                 preflight: bool = True, compile: bool | str | dict = False, sync_bn: bool = False):
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
        self.metrics: list[Metric] = as_metrics(metrics)  # one metric, a list, or None
        self.path, self.model_dir = Path(path), model_dir
        self.splitter, self.train_bn = splitter, train_bn
        self.layer_groups = make_layer_groups(self.model, splitter)
        self.amp_dtype = amp_dtype(mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.compile_seconds: float | None = None  # set by compile()
        self.callbacks: list[Callback] = []
        self._handlers: dict[str, list[tuple[Callback, Callable]]] = {}
        self.history = History()
        progress = progress and (self.dist is None or self.dist.is_main)  # one rank prints
        self.add_callbacks([self.history] + ([ProgressBar()] if progress else []) + list(callbacks))
        self.epoch = self.iter = self.n_iter = self.n_epochs = self.opt_steps = self.batch_idx = 0
        self.schedules: dict[str, Any] = {}
        self.hypers: dict[str, list[float]] = {}
        self.val_results: dict[str, float] = {}
        self.training = False
        self._checked = not preflight
        self._resume_point: tuple[int, dict] | None = None
        if compile:
            self.compile(**(compile if isinstance(compile, dict) else {} if compile is True else {"mode": compile}))

    # ------------------------------------------------------------------ callbacks
    def add_callbacks(self, callbacks: Iterable[Callback | type]) -> "Learner":
        for cb in callbacks:
            self.add_callback(cb)
        return self

    def add_callback(self, cb: Callback | type) -> Callback:
        """Add a callback (an instance, or a class taking no arguments); returns the instance."""
        cb = cb() if isinstance(cb, type) else cb
        if not isinstance(cb, Callback):
            raise TypeError(f"add_callback: {cb!r} is not a learnkit Callback")
        self.callbacks.append(cb)
        self._sort_handlers()
        return cb

    def remove_callback(self, cb: Callback | type) -> None:
        """Remove a callback instance, or every callback of a class."""
        self.callbacks = [c for c in self.callbacks if not (c is cb or (isinstance(cb, type) and isinstance(c, cb)))]
        self._sort_handlers()

    def _sort_handlers(self) -> None:
        self.callbacks.sort(key=lambda c: c.order)  # stable: equal orders keep insertion order
        self._handlers = {e: [(c, getattr(c, e)) for c in self.callbacks if callable(getattr(c, e, None))]
                          for e in EVENTS}

    def _event(self, name: str) -> None:
        for cb, handler in self._handlers[name]:
            try:
                handler(self)
            except CANCELS:
                raise
            except Exception as e:
                note = f"(raised in callback {cb!r} during event '{name}')"
                if hasattr(e, "add_note"):
                    e.add_note(note)
                    raise
                raise RuntimeError(f"{type(e).__name__}: {e} {note}") from e

    def _with_events(self, name: str, body: Callable[[], None], cancel: type[Exception]) -> None:
        # after_<name> runs when the body ends or is cancelled, not when it fails (fit has its own finally).
        try:
            self._event(f"before_{name}")
            body()
        except cancel:
            pass
        self._event(f"after_{name}")

    def show_training_loop(self) -> None:
        """Print each event of the loop, indented by nesting, with the callbacks that run on it."""
        from learnkit.learner.doctor import print_training_loop
        print_training_loop(self)

    # ------------------------------------------------------------------ the loop
    def fit(self, n_epochs: int, lr: float | slice | Sequence[float] = 1e-3, schedules: dict | None = None,
            callbacks: Iterable[Callback] = (), resume_from: str | Path | None = None) -> None:
        """Train for `n_epochs` with a constant `lr` (or the given `schedules`).

        Args:
            lr: one rate, a `slice(lo, hi)` spread geometrically over the layer groups, or one per group.
            schedules: hyper-parameter name → schedule (or list, one per layer group) of progress 0..1.
            callbacks: callbacks for this fit only.
            resume_from: a checkpoint written by the `Checkpoint` callback during this same fit.
        """
        if not isinstance(n_epochs, int) or n_epochs < 1:
            raise ValueError(f"fit(n_epochs={n_epochs!r}): n_epochs must be a positive int")
        n_batches = len(self.data.train_dl)
        if n_batches == 0:
            dl = self.data.train_dl
            raise ValueError(f"fit: the training loader yields no batch ({n_items(dl)} items, batch_size="
                             f"{getattr(dl, 'batch_size', '?')}, drop_last={getattr(dl, 'drop_last', '?')}); use a "
                             f"smaller batch_size or more training items")
        if self.opt is None:
            self.create_opt()
        self.n_epochs, self.n_iter, self.iter = n_epochs, n_epochs * n_batches, 0
        self.schedules = schedules if schedules is not None else {"lr": [Const(v) for v in self.lr_per_group(lr)]}
        if not self._checked:
            self.check()
        added = [self.add_callback(cb) for cb in callbacks]
        # Training forwards go through DDP under torchrun (a wrapper per fit); else the model itself.
        self._train_module = self.dist.train_model(self.model) if self.dist is not None else self.model
        start_epoch = 0
        try:
            if resume_from is not None:
                from learnkit.learner.checkpoint import restore_checkpoint
                start_epoch = restore_checkpoint(self, resume_from)
            self._event("before_fit")
            for self.epoch in range(start_epoch, n_epochs):
                self.val_results = {}
                self._with_events("epoch", self._do_epoch, CancelEpoch)
        except CancelFit:
            pass
        finally:
            # Also on KeyboardInterrupt or an error: close progress bars, keep history, drop half-made grads.
            self.training = False
            if self.opt is not None:
                self.opt.zero_grad(set_to_none=True)
            self._train_module = None  # under torchrun the DDP wrapper goes with it (a new one each fit)
            try:
                self._event("after_fit")
            finally:
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
        resume, self._resume_point = self._resume_point, None
        with torch.enable_grad():
            for self.batch_idx, batch in enumerate(self.dl):
                if resume is not None:  # resuming mid-epoch: replay the same order, skip what already ran
                    if self.batch_idx < resume[0]:
                        continue
                    set_rng_state(resume[1], self._generators())
                    resume = None
                self._one_batch(batch)

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
            self._event("before_batch")
            with self.autocast():
                self.pred = (self._train_module if self.training else self.model)(*self.xb)
                self._event("after_forward")
                self.loss = self.loss_fn(self.pred, *self.yb)
            self.loss_grad = self.loss  # what backward sees; a callback may rescale it (GradientAccumulation)
            self._event("after_loss")
            if self.training:
                self._backward_step()
            else:
                n = self.yb[0].shape[0] if self.yb else self.xb[0].shape[0]
                self._val_loss += self.loss.detach().float() * n
                self._val_count += n
                for m in self.metrics:
                    update_metric(m, self.pred, *self.yb)  # first output of a tuple; errors name the metric
        except CancelBatch:
            pass
        self._event("after_batch")
        if self.training:
            self.iter += 1

    def _backward_step(self) -> None:
        self.scaler.scale(self.loss_grad).backward()
        try:
            self._event("after_backward")
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt_steps += 1
            self._event("after_step")
            self.opt.zero_grad(set_to_none=True)
        except CancelStep:
            pass

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
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _generators(self) -> list[torch.Generator]:
        """The data's own generators, which a bit-exact restore must include."""
        return self.data.generators()

    def rng_state(self) -> dict:
        return get_rng_state(self._generators())

    def set_rng_state(self, state: dict) -> None:
        set_rng_state(state, self._generators())

    # ------------------------------------------------------------------ recipes
    def fit_one_cycle(self, n_epochs: int | None = None, max_lr: float | slice | Sequence[float] = 1e-3,
                      div_factor: float = 25.0, final_div_factor: float = 1e5, pct_start: float = 0.25,
                      moms: Sequence[float] | None = (0.95, 0.85, 0.95), budget: str | float | None = None,
                      **kwargs: Any) -> None:
        """`fit` with the one-cycle policy (cosine warm-up then cosine annealing of lr; momentum inverse).
        budget='60s' instead of n_epochs: sized to end, annealed, in that time (learner/budget.py)."""
        if (n_epochs is None) == (budget is None):
            raise ValueError("fit_one_cycle: give n_epochs or budget (e.g. budget='60s'), not both or neither")
        total = n_epochs * len(self.data.train_dl) if n_epochs is not None else 0
        if budget is not None:
            from learnkit.learner.budget import plan_budget
            self.budget_plan = plan_budget(self, budget)
            n_epochs, total = self.budget_plan["n_epochs"], self.budget_plan["total_batches"]
            kwargs["callbacks"] = list(kwargs.get("callbacks", ())) + [self.budget_plan["callback"]]
        per_group = [one_cycle(v, total, div_factor, final_div_factor, pct_start, moms)
                     for v in self.lr_per_group(max_lr)]
        self.fit(n_epochs, schedules={k: [s[k] for s in per_group] for k in per_group[0]}, **kwargs)

    def fit_flat_cos(self, n_epochs: int, lr: float | slice = 1e-3, pct_start: float = 0.75,
                     div_final: float = 1e5, **kwargs: Any) -> None:
        """`fit` with lr flat, then cosine-annealed over the last (1 - pct_start) of the run."""
        total = n_epochs * len(self.data.train_dl)
        self.fit(n_epochs, schedules={"lr": [flat_cos(v, total, pct_start, div_final)["lr"]
                                             for v in self.lr_per_group(lr)]}, **kwargs)

    def fit_sgdr(self, n_cycles: int, cycle_len: int, max_lr: float | slice = 1e-3, cycle_mult: int = 2,
                 **kwargs: Any) -> None:
        """Cosine annealing with warm restarts: cycle i lasts cycle_len * cycle_mult**i epochs."""
        lengths = [cycle_len * cycle_mult ** i for i in range(n_cycles)]
        self.fit(sum(lengths), schedules={"lr": [sgdr(v, lengths)["lr"] for v in self.lr_per_group(max_lr)]},
                 **kwargs)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div_factor: float = 5.0, strategy: str = "freeze",
                  group_factor: float = 2.6, **kwargs: Any) -> None:
        """Transfer learning in one call.

        strategy='freeze' (fastai's): train the last layer group `freeze_epochs` with the rest frozen, then
        everything for `epochs` with rates from base_lr/2/lr_mult to base_lr/2.
        strategy='gradual' (ULMFiT): unfreeze one more layer group per stage (`freeze_epochs` each, lr halved
        per stage, rates falling by `group_factor` per group), then everything for `epochs`.
        """
        if strategy not in ("freeze", "gradual"):
            raise ValueError(f"fine_tune(strategy={strategy!r}): use 'freeze' or 'gradual'")
        self.freeze()
        self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99 if strategy == "freeze" else 0.25,
                           **kwargs)
        n = len(self.layer_groups)
        if strategy == "gradual":
            for k in range(2, n):
                base_lr /= 2
                self.freeze_to(-k)
                self.fit_one_cycle(freeze_epochs, slice(base_lr / group_factor ** (n - 1), base_lr), **kwargs)
            base_lr /= 2
            self.unfreeze()
            self.fit_one_cycle(epochs, slice(base_lr / group_factor ** (n - 1), base_lr), **kwargs)
            return
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div_factor=div_factor,
                           **kwargs)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10, num_it: int = 100, stop_div: bool = True,
                show_plot: bool = True) -> Any:
        """Exponential lr sweep; returns suggestions (valley, minimum, steepest). Leaves no trace."""
        from learnkit.learner.lr_find import lr_find
        # under torchrun: rank 0 sweeps on its shard; every rank gets the suggestions
        return self._on_main(lambda: lr_find(self, start_lr, end_lr, num_it, stop_div, show_plot))

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

    # ------------------------------------------------------------------ parameters and layer groups
    def lr_per_group(self, lr: float | slice | Sequence[float]) -> list[float]:
        """One learning rate per layer group: slice(lo, hi) is geometric from lo to hi; slice(hi) gives
        hi/10 to all groups but the last."""
        return lrs_per_group(lr, len(self.layer_groups))

    def create_opt(self) -> torch.optim.Optimizer:
        """Build `self.opt` with one (or two, decay/no-decay) param groups per layer group."""
        self.opt = self.opt_fn(param_groups(self.layer_groups), lr=1e-3)
        return self.opt

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups [:n] (normalization layers stay trainable when train_bn), unfreeze the rest."""
        set_trainable(self.layer_groups, n, self.train_bn)

    def freeze(self) -> None:
        """Freeze every layer group but the last."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        self.freeze_to(0)

    # ------------------------------------------------------------------ evaluation, inference, saving
    def validate(self, dl: Any = None) -> dict[str, float]:
        """Loss and metrics on `dl` (default: the validation loader)."""
        self.dl = dl if dl is not None else self.data.valid_dl
        self._with_events("validate", self._do_validate, CancelValidate)
        return dict(self.val_results)

    def get_preds(self, dl: Any = None, activation: bool = True) -> tuple[Any, torch.Tensor | None]:
        """(predictions, targets) on `dl` (default: validation, every rank's under torchrun) on the CPU in the loader's
        order; a tuple of tensors for a model with several outputs (activation on the first). No callbacks run."""
        sharded = self.dist is not None and (dl is None or dl is self.data.valid_dl)
        dl = dl if dl is not None else self.data.valid_dl
        self.model.eval()
        preds, targets = [], []
        with torch.no_grad():
            for batch in dl:
                batch = self.data.transfer(batch, training=False)
                with self.autocast():
                    out = self.model(*batch[:self.data.n_inp])
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
        """Load what `save(name)` wrote (read with torch.load(weights_only=True): no code runs)."""
        file = self.path / self.model_dir / f"{name}.pth"
        if self.dist is not None and not self.dist.local:
            self.dist.barrier()  # rank 0 may still be writing it
        if not file.exists():
            raise FileNotFoundError(f"load: no checkpoint at {file}; saved ones: "
                                    f"{sorted(p.stem for p in file.parent.glob('*.pth'))}")
        state = torch.load(file, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"], strict=strict)
        if with_opt and "opt" in state:
            if self.opt is None:
                self.create_opt()
            self.opt.load_state_dict(state["opt"])
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
        self._checked = True

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

    def plot_lr_find(self, **kwargs: Any) -> Any:
        from learnkit.learner.lr_find import plot_lr_find
        return plot_lr_find(self, **kwargs)
