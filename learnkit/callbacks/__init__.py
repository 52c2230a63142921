"""Optional callbacks: early stopping, best-model saving, plateau lr reduction, CSV logging, gradient
clipping and accumulation, NaN guard, resumable checkpoints, weight averaging (EMA), TensorBoard and MLflow
loggers (optional extras, imported when a logger is made)."""
from learnkit.callbacks.ema import EMA
from learnkit.callbacks.loggers import MLflowLogger, TensorBoardLogger
from learnkit.callbacks.tracking import CSVLogger, EarlyStopping, ReduceLROnPlateau, SaveBestModel
from learnkit.callbacks.batchnorm import PreciseBatchNorm, recompute_batchnorm
from learnkit.callbacks.training import Checkpoint, GradientAccumulation, GradientClipping, TerminateOnNaN

__all__ = ["CSVLogger", "Checkpoint", "EMA", "EarlyStopping", "GradientAccumulation", "GradientClipping",
           "MLflowLogger", "PreciseBatchNorm", "ReduceLROnPlateau", "SaveBestModel", "TensorBoardLogger",
           "TerminateOnNaN", "recompute_batchnorm"]
