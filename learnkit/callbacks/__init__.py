"""Optional callbacks: early stopping, best-model saving, plateau lr reduction, CSV logging, gradient
clipping and accumulation, NaN guard, resumable checkpoints, weight averaging (EMA)."""
from learnkit.callbacks.ema import EMA
from learnkit.callbacks.tracking import CSVLogger, EarlyStopping, ReduceLROnPlateau, SaveBestModel
from learnkit.callbacks.batchnorm import PreciseBatchNorm, recompute_batchnorm
from learnkit.callbacks.training import Checkpoint, GradientAccumulation, GradientClipping, TerminateOnNaN

__all__ = ["CSVLogger", "Checkpoint", "EMA", "EarlyStopping", "GradientAccumulation", "GradientClipping",
           "PreciseBatchNorm", "ReduceLROnPlateau", "SaveBestModel", "TerminateOnNaN", "recompute_batchnorm"]
