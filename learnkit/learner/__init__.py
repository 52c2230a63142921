"""Learner: the training loop, its events, metrics, history, progress, LR finder, profiling, doctor,
export."""
from learnkit.learner.doctor import LearnerCheckError
from learnkit.learner.events import (EVENTS, Callback, CancelBatch, CancelEpoch, CancelFit, CancelStep, CancelTrain,
                                     CancelValidate)
from learnkit.learner.export import Predictor, load_learner
from learnkit.learner.history import History
from learnkit.learner.learner import Learner
from learnkit.learner.lr_find import SuggestedLRs
from learnkit.learner.metrics import (RMSE, AvgMetric, F1Score, Metric, TopKAccuracy, accuracy, accuracy_multi,
                                      error_rate, mae, mse)
from learnkit.learner.profiling import BottleneckReport
from learnkit.learner.progress import ProgressBar
from learnkit.learner.serving import ServingModule, export_onnx, export_torch

__all__ = ["EVENTS", "AvgMetric", "BottleneckReport", "Callback", "CancelBatch", "CancelEpoch", "CancelFit",
           "CancelStep", "CancelTrain", "CancelValidate", "F1Score", "History", "Learner", "LearnerCheckError",
           "Metric", "Predictor", "ProgressBar", "RMSE", "ServingModule", "SuggestedLRs", "TopKAccuracy", "accuracy",
           "accuracy_multi", "error_rate", "export_onnx", "export_torch", "load_learner", "mae", "mse"]
