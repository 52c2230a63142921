"""The loop's events, the Callback base class and the Cancel* control-flow exceptions.

Event order for one fit (see `Learner.show_training_loop()`):
    before_fit
      before_epoch
        before_train
          before_batch → after_forward → after_loss → after_backward → after_step → after_batch  (per batch)
        after_train
        before_validate
          before_batch → after_forward → after_loss → after_batch                                 (per batch)
        after_validate
      after_epoch
    after_fit
A `CancelX` raised in a callback skips the rest of X; X's `after_*` event still runs.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

__all__ = ["EVENTS", "Callback", "CancelBatch", "CancelStep", "CancelTrain", "CancelValidate", "CancelEpoch",
           "CancelFit", "run_handlers"]

EVENTS = ("before_fit", "before_epoch", "before_train", "before_batch", "after_forward", "after_loss",
          "after_backward", "after_step", "after_batch", "after_train", "before_validate", "after_validate",
          "after_epoch", "after_fit")


class CancelBatch(Exception):
    """Skip the rest of this batch (after_batch still runs)."""


class CancelStep(Exception):
    """Skip this optimizer step and zero_grad (raise in after_backward; gradients are kept)."""


class CancelTrain(Exception):
    """Skip the rest of this epoch's training phase (after_train still runs)."""


class CancelValidate(Exception):
    """Skip the rest of this validation (after_validate still runs)."""


class CancelEpoch(Exception):
    """Skip the rest of this epoch (after_epoch still runs)."""


class CancelFit(Exception):
    """Stop training (after_fit still runs)."""


CANCELS = (CancelBatch, CancelStep, CancelTrain, CancelValidate, CancelEpoch, CancelFit)


class Callback:
    """Base class: define any of the methods named in `EVENTS`, each taking the learner.

    `order` sorts callbacks (lower runs first). A callback holds no hidden reference to the learner:
    it gets it as an argument, so `learn.model` is always spelled out. `graph_safe = True` says that its
    `after_forward` / `after_loss` / `after_backward` only do tensor work on the device (no `.item()`, no Python
    state that changes per batch), so a whole-step CUDA graph may record it (learner/graphs.py); without it, a
    callback handling one of those events makes the fit eager.

    Example:
        >>> class PrintLoss(Callback):
        ...     def after_epoch(self, learn):
        ...         print(learn.epoch, learn.history.epoch_records[-1])
    """

    order: int = 0
    graph_safe: bool = False

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this callback (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return type(self).__name__


def run_handlers(handlers: Sequence[tuple[Callback, Callable[[Any], None]]], learn: Any, event: str) -> None:
    """Call each (callback, handler) of `event` with the learner, in order. `Cancel*` pass through; any other
    error is re-raised with a note naming the callback and the event (Python < 3.11: a RuntimeError saying so)."""
    for cb, handler in handlers:
        try:
            handler(learn)
        except CANCELS:
            raise
        except Exception as e:
            note = f"(raised in callback {cb!r} during event '{event}')"
            if hasattr(e, "add_note"):
                e.add_note(note)
                raise
            raise RuntimeError(f"{type(e).__name__}: {e} {note}") from e


class CallbackHost:
    """How a `Learner` holds its callbacks (sorted by `order`, stable) and calls them on an event: a base class
    of `Learner`; the loop that raises the events is in learner.py."""

    callbacks: list[Callback]
    _handlers: dict[str, list[tuple[Callback, Callable]]]

    def add_callbacks(self, callbacks: Iterable[Callback | type]) -> "CallbackHost":
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
        run_handlers(self._handlers[name], self, name)

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
