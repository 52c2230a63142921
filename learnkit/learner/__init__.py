"""Learner: the training loop and the tools over it (events, metrics, history, progress, LR finder, profiling,
doctor, checkpoints, compile, budget, torchrun, TTA, the Kaggle loop: submissions and cross-validation). Deployment lives in learnkit.export."""
from learnkit.learner.cross_validation import CrossValidation, Fold, cross_validate, kfold_indices
from learnkit.learner.doctor import LearnerCheckError
from learnkit.learner.events import (EVENTS, Callback, CancelBatch, CancelEpoch, CancelFit, CancelStep, CancelTrain,
                                     CancelValidate)
from learnkit.learner.history import History
from learnkit.learner.learner import Learner
from learnkit.learner.lora import LoRALinear, add_lora, merge_lora
from learnkit.learner.lr_find import SuggestedLRs
from learnkit.learner.metrics import (RMSE, AvgMetric, F1Score, MeanDice, MeanIoU, Metric, PixelAccuracy,
                                      StatefulMetric, TopKAccuracy, accuracy, accuracy_multi, error_rate, mae, mse)
from learnkit.learner.profiling import BottleneckReport
from learnkit.learner.progress import ProgressBar
from learnkit.learner.set_metrics import (AccumulatedMetric, BalancedAccuracy, ClassAccuracy, MatthewsCorrCoef, RocAuc,
                                          SkMetric, per_class_accuracy)
from learnkit.learner.submission import submission_inputs, write_submission
from learnkit.learner.tta import tta

__all__ = ["EVENTS", "AvgMetric", "BottleneckReport", "Callback", "CancelBatch", "CancelEpoch", "CancelFit",
           "CancelStep", "CancelTrain", "CancelValidate", "F1Score", "History", "Learner", "LearnerCheckError",
           "Metric", "ProgressBar", "RMSE", "SuggestedLRs", "TopKAccuracy", "accuracy",
           "accuracy_multi", "error_rate", "mae", "mse",
           "AccumulatedMetric", "BalancedAccuracy", "ClassAccuracy", "MatthewsCorrCoef", "RocAuc", "SkMetric",
           "StatefulMetric", "per_class_accuracy", "LoRALinear", "add_lora", "merge_lora", "MeanDice", "MeanIoU",
           "PixelAccuracy"]
# The Kaggle loop (submission.py, cross_validation.py) and test-time augmentation (tta.py).
__all__ += ["CrossValidation", "Fold", "cross_validate", "kfold_indices", "submission_inputs", "tta",
            "write_submission"]
