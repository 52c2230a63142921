"""learnkit: the shortest path from a folder of data to a well-trained PyTorch model.

Layers (imports only point left; the chain is written once, in learnkit/layers.py): version ← core ← data ←
optim ← learner ← callbacks ← export ← vision ← text ← datasets ← cli ← learnkit.
"""

from learnkit.version import __version__
from learnkit.callbacks import (EMA, CSVLogger, Checkpoint, EarlyStopping, GradientAccumulation, GradientClipping,
                                ReduceLROnPlateau, SaveBestModel, TerminateOnNaN)
from learnkit.callbacks import MLflowLogger, TensorBoardLogger
from learnkit.core import (create_model, default_device, list_models, load_tensors, register_model, save_tensors,
                           set_seed)
from learnkit.core.hub import ModelNotCached
from learnkit.data import (CategoryBlock, ColumnSplitter, DataBlock, DataBunch, FolderSplitter, FuncSplitter,
                           IndexSplitter, MultiCategoryBlock, Normalize, PipelineError, RandomSplitter,
                           RegressionBlock, TensorBlock, TransformBlock, read_idx)
from learnkit.export import Predictor, load_learner
from learnkit.learner import (RMSE, BottleneckReport, Callback, CancelBatch, CancelEpoch, CancelFit, CancelStep,
                              CancelTrain, CancelValidate, F1Score, History, Learner, LearnerCheckError, Metric,
                              ProgressBar, TopKAccuracy, accuracy, accuracy_multi, error_rate, mae, mse)
from learnkit.learner import (BalancedAccuracy, ClassAccuracy, MatthewsCorrCoef, RocAuc, SkMetric, StatefulMetric,
                              per_class_accuracy)
from learnkit.learner.lora import add_lora, merge_lora
from learnkit.optim import SGD, AdamW
from learnkit.learner import CrossValidation, cross_validate, write_submission

__all__ = [
    "AdamW", "BottleneckReport", "CSVLogger", "Callback", "CancelBatch", "CancelEpoch", "CancelFit", "CancelStep",
    "CancelTrain", "EMA",
    "CancelValidate", "CategoryBlock", "Checkpoint", "ColumnSplitter", "DataBlock", "DataBunch", "EarlyStopping",
    "F1Score", "FolderSplitter", "FuncSplitter", "GradientAccumulation", "GradientClipping", "History",
    "IndexSplitter", "Learner", "LearnerCheckError", "Metric", "MultiCategoryBlock", "Normalize", "PipelineError",
    "Predictor", "ProgressBar", "RMSE", "RandomSplitter", "ReduceLROnPlateau", "RegressionBlock", "SGD",
    "SaveBestModel", "TensorBlock", "TerminateOnNaN", "TopKAccuracy", "TransformBlock", "__version__", "accuracy",
    "accuracy_multi", "create_model", "default_device", "error_rate", "list_models", "load_learner", "load_tensors",
    "BalancedAccuracy", "ClassAccuracy", "MatthewsCorrCoef", "RocAuc", "SkMetric", "StatefulMetric",
    "per_class_accuracy", "MLflowLogger", "TensorBoardLogger",
    "mae", "mse", "read_idx", "register_model", "save_tensors", "set_seed", "ModelNotCached", "add_lora",
    "merge_lora",
]
__all__ += ["CrossValidation", "cross_validate", "write_submission"]  # the Kaggle loop
