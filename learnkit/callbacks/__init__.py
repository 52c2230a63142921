"""Optional callbacks: early stopping, best-model saving, plateau lr reduction, CSV logging, gradient
clipping and accumulation, NaN guard, resumable checkpoints."""
from learnkit.callbacks.tracking import CSVLogger, EarlyStopping, ReduceLROnPlateau, SaveBestModel
from learnkit.callbacks.training import Checkpoint, GradientAccumulation, GradientClipping, TerminateOnNaN

__all__ = ["CSVLogger", "Checkpoint", "EarlyStopping", "GradientAccumulation", "GradientClipping",
           "ReduceLROnPlateau", "SaveBestModel", "TerminateOnNaN"]
