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

from typing import Any, Callable, Sequence

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
    it gets it as an argument, so `learn.model` is always spelled out.

    Example:
        >>> class PrintLoss(Callback):
        ...     def after_epoch(self, learn):
        ...         print(learn.epoch, learn.history.epoch_records[-1])
    """

    order: int = 0

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
