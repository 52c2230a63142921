"""scikit-learn estimators over learnkit: `LearnkitClassifier` and `LearnkitRegressor` train a learnkit
`Learner` behind the `fit/predict/predict_proba/score` contract, so that they work in `Pipeline`,
`GridSearchCV` and `cross_val_score`. Needs the optional extra `learnkit[baselines]`.

The kind of X picks the data and the model (`input_kind_` records it; predict needs the same kind):
- numeric: a 2-D array, tensor or list of rows -> TensorBlock rows, the `module` network (default an MLP).
- images: a 1-D list/array/Series whose items are all image paths -> `ImageDataBunch.from_lists` and
  `vision_learner` (`arch`, default 'resnet9' from scratch). An item is an image path when it is a
  `pathlib.Path`, or a str with an image suffix (IMAGE_EXTENSIONS, e.g. '.png') that names an existing file
  or holds no whitespace; every file must exist (else FileNotFoundError naming it). Classifier only.
- texts: a 1-D list/array/Series of str where no item is an image path -> `TextDataBunch.from_lists` and
  `text_classifier_learner` (`arch`, default a small AWD-LSTM). Classifier only.
A 1-D sequence mixing these (or holding other values next to str/Path) is a ValueError naming the first
item that disagrees with X[0]. partial_fit is for numeric X only.

Numeric X is NOT standardized here: do it in a Pipeline (`make_pipeline(StandardScaler(), LearnkitRegressor())`),
as with any scikit-learn estimator, so that the scaling is fitted on training folds only.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError
    from sklearn.utils.multiclass import type_of_target
except ImportError as e:  # scikit-learn is an optional extra
    raise ImportError("learnkit.sklearn needs scikit-learn: pip install 'learnkit[baselines]' "
                      "(or pip install scikit-learn)") from e

from learnkit.core.registry import create_model
from learnkit.data.blocks import CategoryBlock, RegressionBlock, TensorBlock
from learnkit.data.datablock import DataBlock
from learnkit.data.splitters import RandomSplitter
from learnkit.learner.learner import Learner
from learnkit.text.data import TextDataBunch
from learnkit.text.learner import text_classifier_learner
from learnkit.vision.data import ImageDataBunch
from learnkit.vision.image import IMAGE_EXTENSIONS
from learnkit.vision.learner import vision_learner
from learnkit.vision.transforms import Resize

__all__ = ["LearnkitClassifier", "LearnkitRegressor"]

_PREFIX = "module__"
NUMERIC, IMAGES, TEXTS = "numeric", "images", "texts"
# The estimator's text model: AWD_LSTM_CONFIG (400/1152/3) is sized for ULMFiT transfer and trains ~50x slower on
# a CPU; a model trained from scratch on a scikit-learn-sized data set needs far less. module__emb_size etc. override.
TEXT_CONFIG = {"emb_size": 100, "hidden_size": 256, "n_layers": 2}


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_X(X: Any, n_features: int | None = None, owner: str = "this estimator") -> np.ndarray:
    """X as a 2-D float32 array, or a ValueError (TypeError for unconvertible objects) saying what to fix."""
    arr = _as_array(X)
    if arr.dtype.kind == "c":
        raise ValueError("Complex data not supported: X holds complex numbers; use real features "
                         "(e.g. np.abs, or real and imaginary parts as columns)")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float32)
        except (TypeError, ValueError) as e:
            raise type(e)(f"X must be numeric; got dtype {arr.dtype} (e.g. {arr.ravel()[:3].tolist()}; {e}). "
                          "Fix: encode text/categorical columns first, e.g. OneHotEncoder or "
                          "OrdinalEncoder in a Pipeline.") from None
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {arr.shape}. Reshape your data: "
                         "X.reshape(-1, 1) for a single feature, X.reshape(len(X), -1) for images.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"Found array with {arr.shape[0]} sample(s) and {arr.shape[1]} feature(s) "
                         f"(shape={arr.shape}) while a minimum of 1 is required.")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("X contains NaN or infinity. Fix: impute (e.g. SimpleImputer in a Pipeline).")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features, but {owner} is expecting {n_features} features as "
                         "input (the number it was fitted with)")
    return arr


def _sequence_items(X: Any) -> list | None:
    """The items of a 1-D sequence holding str/Path (image paths or texts); None for numeric X."""
    if isinstance(X, (str, Path)):
        raise ValueError(f"X is a single {type(X).__name__} ({str(X)[:60]!r}); give a list with one image path or "
                         "text per sample, e.g. X=[path] or X=[text]")
    if isinstance(X, torch.Tensor):
        return None
    if hasattr(X, "ndim") and hasattr(X, "tolist"):  # numpy arrays, pandas Series
        if X.ndim != 1 or getattr(X, "dtype", np.dtype(float)).kind not in "OU":
            return None
        items = X.tolist()
    elif isinstance(X, (list, tuple)):
        items = list(X)
    else:
        return None
    return items if any(isinstance(v, (str, Path)) for v in items) else None


def _is_image_path(value: str | Path) -> bool:
    if isinstance(value, Path):
        return True
    # A text may end in 'photo.jpg' too: a str counts as a path only when it has no whitespace or is a file.
    return Path(value).suffix.lower() in IMAGE_EXTENSIONS and (not any(c.isspace() for c in value)
                                                               or os.path.isfile(value))


def _show(value: Any) -> str:
    return repr(str(value)[:80] if isinstance(value, (str, Path)) else value)[:80]


def _check_items(items: list) -> tuple[str, list]:
    """(IMAGES, [Path]) or (TEXTS, [str]) by the module docstring's rule, or a ValueError naming the first item
    whose kind differs from the first str/Path item's (FileNotFoundError naming a missing image)."""
    def kind_of(v: Any) -> str | None:
        return None if not isinstance(v, (str, Path)) else IMAGES if _is_image_path(v) else TEXTS
    ref = next(i for i, v in enumerate(items) if isinstance(v, (str, Path)))
    kind = kind_of(items[ref])
    for i, v in enumerate(items):
        if kind_of(v) != kind:
            what = {IMAGES: "an image path", TEXTS: "a text", None: f"a {type(v).__name__}, not a str or Path"}
            raise ValueError(f"X mixes kinds of input: X[{i}] = {_show(v)} is {what[kind_of(v)]}, but "
                             f"X[{ref}] = {_show(items[ref])} is {what[kind]}. Fix: give only image paths "
                             "(pathlib.Path or str with an image suffix), only texts, or a 2-D numeric array.")
    if kind == TEXTS:
        return kind, items
    files = [Path(v) for v in items]
    for i, f in enumerate(files):
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"X[{i}] = {str(f)!r} is not an image file: suffix {f.suffix!r} is not one of "
                             f"{sorted(IMAGE_EXTENSIONS)}. Fix: pass image files only (a text as str, not Path).")
        if not f.is_file():
            raise FileNotFoundError(f"X[{i}]: image file {str(f)!r} not found (working directory {os.getcwd()}). "
                                    "Fix the path, or drop that sample from X and y.")
    return kind, files


def _check_y(y: Any, n_samples: int, owner: str, ravel: bool) -> np.ndarray:
    if y is None:
        raise ValueError(f"{owner} requires y to be passed, but the target y is None")
    arr = _as_array(y)
    if ravel and arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; using y.ravel()",
                      DataConversionWarning, stacklevel=4)
        arr = arr.ravel()
    if len(arr) != n_samples:
        raise ValueError(f"y has {len(arr)} samples but X has {n_samples}; X and y must have the same "
                         "length (one target per row of X)")
    return arr


class _LearnkitEstimator(BaseEstimator):
    """Shared fit/partial_fit logic. Arguments are documented on the public subclasses."""

    def __init__(self, module: str | Callable[..., nn.Module] = "mlp", module__hidden: Any = (128,),
                 epochs: int = 10, max_lr: float | str = 1e-3, batch_size: int = 64,
                 valid_fraction: float = 0.0, seed: int | None = 0, device: Any = None,
                 mixed_precision: Any = "auto", verbose: bool = False, arch: Any = None, pretrained: bool = False,
                 image_size: Any = None, **module_params: Any):
        # scikit-learn's rule: __init__ only stores its arguments; everything is checked in fit.
        self.module, self.module__hidden, self.epochs, self.max_lr = module, module__hidden, epochs, max_lr
        self.batch_size, self.valid_fraction, self.seed, self.device = batch_size, valid_fraction, seed, device
        self.mixed_precision, self.verbose = mixed_precision, verbose
        self.arch, self.pretrained, self.image_size = arch, pretrained, image_size
        for key, value in module_params.items():
            setattr(self, key, value)

    # --- nested module__* parameters (clone() rebuilds from get_params(deep=False)) ---
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=False)
        # Keyword arguments stored by __init__ (public, no trailing underscore: not a fitted attribute).
        params.update({k: v for k, v in vars(self).items() if not k.startswith("_") and not k.endswith("_")})
        return params

    def set_params(self, **params: Any) -> "_LearnkitEstimator":
        for key in [k for k in params if k.startswith(_PREFIX)]:
            setattr(self, key, params.pop(key))
        return super().set_params(**params) if params else self

    def _module_kwargs(self) -> dict[str, Any]:
        kwargs = {k[len(_PREFIX):]: v for k, v in self.get_params().items() if k.startswith(_PREFIX)}
        if kwargs.get("hidden", 0) is None:  # module__hidden=None: for a builder without `hidden`
            del kwargs["hidden"]
        return kwargs

    # --- training (subclasses define _encode_y: y -> (targets, target block, n_out)) ---
    def _rng(self) -> contextlib.AbstractContextManager:
        """Seeded RNG for model init and training, without touching the caller's global RNG state."""
        if self.seed is None:
            return contextlib.nullcontext()
        return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])

    def _check_training_args(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r}: must be a positive int, e.g. epochs=10")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError(f"valid_fraction={self.valid_fraction!r}: must be in [0, 1), e.g. 0.0 or 0.2")

    def _check_input(self, X: Any, fitted_kind: str | None = None) -> tuple[str, Any]:
        """(kind, X checked): numeric -> 2-D float32 array, images -> [Path], texts -> [str]."""
        owner = type(self).__name__
        items = _sequence_items(X)
        kind, X = _check_items(items) if items is not None else \
            (NUMERIC, _check_X(X, self.n_features_in_ if fitted_kind == NUMERIC else None, owner))
        if fitted_kind is not None and kind != fitted_kind:
            raise ValueError(f"{owner} was fitted on {fitted_kind} X but got {kind} X (e.g. {_show(X[0])}); "
                             f"predict on the same kind of X as fit, or fit again on {kind}.")
        if kind != NUMERIC and not isinstance(self, ClassifierMixin):
            raise ValueError(f"{owner} takes numeric X only; got {kind} (e.g. {_show(X[0])}). Fix: use "
                             f"LearnkitClassifier for labels, or turn the {kind} into numeric features first.")
        return kind, X

    def _databunch(self, X: np.ndarray, targets: Any, y_block: Any) -> Any:
        self._check_training_args()
        items = list(zip(torch.from_numpy(X), targets))
        dblock = DataBlock(blocks=(TensorBlock, y_block), splitter=RandomSplitter(self.valid_fraction,
                                                                                 seed=self.seed or 0))
        return dblock.databunch(items, batch_size=self.batch_size, num_workers=0, device=self.device,
                                seed=self.seed)

    def _new_learner(self, kind: str, X: Any, targets: Any, y_block: Any, n_out: int) -> Learner:
        """A fresh Learner: `module` on numeric rows, or learnkit's vision / text one-liners on (items, class
        indices)."""
        if kind == NUMERIC:
            data, module_kwargs = self._databunch(X, targets, y_block), self._module_kwargs()
            if callable(self.module):
                model = self.module(X.shape[1], n_out, **module_kwargs)
            elif isinstance(self.module, str):
                model = create_model(self.module, n_in=X.shape[1], n_out=n_out, **module_kwargs)
            else:
                raise ValueError(f"module={self.module!r}: give a registered model name (e.g. 'mlp') or a "
                                 "callable (n_in, n_out, **module__params) -> nn.Module")
            self.n_features_in_ = X.shape[1]
            return Learner(data, model, mixed_precision=self.mixed_precision, progress=self.verbose)
        self._check_training_args()
        common = dict(valid_pct=self.valid_fraction, seed=self.seed, batch_size=self.batch_size, device=self.device)
        extra = self._module_kwargs()
        extra.pop("hidden", None)  # module__hidden is the numeric MLP's
        if kind == IMAGES:
            tfms = [Resize(self.image_size)] if self.image_size is not None else []
            data = ImageDataBunch.from_lists(".", X, targets, item_tfms=tfms, num_workers=0, verbose=self.verbose,
                                             **common)
            return vision_learner(data, self.arch or "resnet9", pretrained=self.pretrained,
                                  mixed_precision=self.mixed_precision, progress=self.verbose, **extra)
        data = TextDataBunch.from_lists(X, targets, **common)
        config = {**TEXT_CONFIG, **{k: extra.pop(k) for k in list(extra) if k in TEXT_CONFIG}}
        if self.mixed_precision != "auto":  # 'auto' keeps the text learner's own default (float32 AWD-LSTM)
            extra["mixed_precision"] = self.mixed_precision
        weights = None if self.arch in (None, "awd_lstm") else self.arch  # arch: 'awd_lstm' or a BERT-family folder
        return text_classifier_learner(data, weights=weights, config=config, progress=self.verbose, **extra)

    def _train(self, X: Any, y: Any, classes: Any = None, partial: bool = False) -> "_LearnkitEstimator":
        fitted = partial and hasattr(self, "learner_")
        if not fitted:
            self._reset()
        try:
            if partial and _sequence_items(X) is not None:
                raise NotImplementedError(f"{type(self).__name__}.partial_fit takes numeric X only (image and text "
                                          "data set their normalization and vocabulary once); use fit for those.")
            return self._train_checked(X, y, classes, fitted)
        except BaseException:
            if not fitted:
                self._reset()  # a failed first fit leaves no half-fitted state behind
            raise

    def _reset(self) -> None:
        for attr in ("learner_", "classes_", "n_features_in_", "input_kind_", "max_lr_", "_y_2d"):
            self.__dict__.pop(attr, None)

    def _train_checked(self, X: Any, y: Any, classes: Any, fitted: bool) -> "_LearnkitEstimator":
        unknown = [k for k in self.get_params() if "__" not in k and k not in self._get_param_names()]
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for {type(self).__name__}; arguments for the module "
                             "builder must start with 'module__' (e.g. module__dropout=0.1)")
        kind, X = self._check_input(X, self.input_kind_ if fitted else None)
        y = _check_y(y, len(X), type(self).__name__, isinstance(self, ClassifierMixin))
        with self._rng():
            if self.seed is not None:
                torch.manual_seed(self.seed if not fitted else self.seed + self.learner_.opt_steps)
            targets, y_block, n_out = self._encode_y(y, classes if not fitted else getattr(self, "classes_", None))
            if fitted:  # continue the same model and optimizer on the new data (numeric X only)
                self.learner_.data = self._databunch(X, targets, y_block)
            else:
                self.learner_ = self._new_learner(kind, X, targets, y_block, n_out)
                self.input_kind_, self.max_lr_ = kind, self.max_lr
                if self.max_lr == "auto":
                    self.max_lr_ = self.learner_.lr_find(show_plot=False).valley
            self.learner_.fit_one_cycle(self.epochs, max_lr=self.max_lr_)
        return self

    def fit(self, X: Any, y: Any) -> "_LearnkitEstimator":
        """Build a fresh model and train it for `epochs` epochs of one-cycle; returns self."""
        return self._train(X, y)

    def _outputs(self, X: Any) -> torch.Tensor:
        if not hasattr(self, "learner_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit(X, y) first.")
        kind, X = self._check_input(X, self.input_kind_)
        dl = self.learner_.data.test_dl(list(torch.from_numpy(X)) if kind == NUMERIC else X)
        return self.learner_.get_preds(dl)[0].float()


class LearnkitClassifier(ClassifierMixin, _LearnkitEstimator):
    """A scikit-learn classifier that trains a learnkit model (cross-entropy, one-cycle AdamW).

    Args:
        module: for numeric X, a registered model name (`create_model`) or a callable
            `(n_in, n_out, **params) -> nn.Module`.
        module__hidden: hidden widths of the default 'mlp' (None: not passed, for builders without it);
            any other `module__<name>=value` keyword goes to the builder too (e.g. `module__dropout=0.1`)
            and is a tunable parameter (`get_params`, `set_params`, `GridSearchCV`). For image X they go to
            `vision_learner` (e.g. `module__dropout`); for text X `module__emb_size`, `module__hidden_size` and
            `module__n_layers` replace those of TEXT_CONFIG, others go to `text_classifier_learner`.
        epochs: epochs per `fit` (and per `partial_fit` call).
        max_lr: peak learning rate of the one-cycle schedule, or 'auto' for `lr_find().valley`.
        batch_size: items per training batch.
        valid_fraction: share of X held out as a validation set (reported in the progress table only).
        seed: seeds model init, shuffling and the split (same seed, same predictions); None: global RNG.
        device: torch device; None = CUDA if available, else CPU.
        mixed_precision: as `Learner(mixed_precision=...)`.
        verbose: show progress bars and the metrics table.
        arch: the network for image or text X: for images a `vision_learner` arch (None: 'resnet9', from
            scratch, fine on a CPU for small images), for texts 'awd_lstm' (None) or a local BERT-family folder.
        pretrained: images only: ImageNet weights for a torchvision/timm `arch` (they must be in the local cache).
        image_size: images only: resize (crop) every image to this size, an int or (height, width); None keeps
            them as stored, which then must all have one size.

    X is a 2-D numeric array, a list of image paths or a list of texts (see the module docstring for the rule).
    Numeric X is used as given: standardize it in a Pipeline. Labels may be any sortable hashable values (ints,
    strings); `classes_` holds them sorted.

    Example:
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> clf = make_pipeline(StandardScaler(), LearnkitClassifier(module__hidden=(64,), epochs=5))
        >>> clf.fit(X_train, y_train).score(X_test, y_test)
        >>> LearnkitClassifier(image_size=32).fit(["cats/1.png", "dogs/1.png", ...], ["cat", "dog", ...])
        >>> LearnkitClassifier(max_lr=1e-2).fit(["great film", "dull plot", ...], ["pos", "neg", ...])
    """

    def _encode_y(self, y: np.ndarray, classes: Any = None) -> tuple[Any, Any, int]:
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one label per sample); got shape {y.shape}")
        if type_of_target(y) == "continuous":
            raise ValueError("Unknown label type: continuous. y looks like real numbers: use LearnkitRegressor "
                             "for regression, or give class labels")
        if classes is None:
            self.classes_ = np.unique(y)
        else:
            self.classes_ = np.unique(_as_array(classes))
        unseen = set(np.unique(y).tolist()) - set(self.classes_.tolist())
        if unseen:
            raise ValueError(f"y has labels {sorted(map(str, unseen))[:10]} not in classes_ "
                             f"{self.classes_.tolist()[:20]}; pass every label as partial_fit(..., classes=[...])")
        if len(self.classes_) < 2:
            raise ValueError(f"y has {len(self.classes_)} class ({self.classes_.tolist()}); a classifier needs "
                             "at least two. Fix: check y, or give partial_fit(..., classes=[...]) all labels.")
        index = np.searchsorted(self.classes_, y).tolist()
        return index, CategoryBlock(vocab=list(range(len(self.classes_)))), len(self.classes_)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> "LearnkitClassifier":
        """Train the existing model `epochs` more epochs on (X, y); the first call builds it.

        `classes` (all labels) is needed on the first call when this batch of y does not hold them all.
        Numeric X only: image and text X raise NotImplementedError (their normalization statistics and
        vocabulary are fixed by the first data set).
        """
        return self._train(X, y, classes, partial=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in `classes_` order."""
        proba = self._outputs(X).numpy().astype(np.float64)
        return proba / proba.sum(1, keepdims=True)  # softmax ran in float32: renormalize in float64

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each sample of X."""
        index = self.predict_proba(X).argmax(1)
        return self.classes_[index]


class LearnkitRegressor(RegressorMixin, _LearnkitEstimator):
    """A scikit-learn regressor that trains a learnkit model (MSE, one-cycle AdamW).

    Takes the same arguments as `LearnkitClassifier`, for numeric X only (image or text X is a ValueError).
    y may be 1-D or 2-D (several outputs). Scale X (and a y far from unit scale, via
    `TransformedTargetRegressor`) in a Pipeline: nothing is standardized here.

    Example:
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> reg = make_pipeline(StandardScaler(), LearnkitRegressor(module__hidden=(64,), max_lr=1e-2))
        >>> reg.fit(X_train, y_train).score(X_test, y_test)  # R²
    """

    def _encode_y(self, y: np.ndarray, classes: Any = None) -> tuple[Any, Any, int]:
        try:
            y = y.astype(np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"y must be numeric for a regressor; got dtype {y.dtype}. Fix: use "
                             "LearnkitClassifier for labels.") from None
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; drop or impute those rows")
        self._y_2d = y.ndim == 2
        return list(torch.from_numpy(y)), RegressionBlock(), (y.shape[1] if y.ndim == 2 else 1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # a 2-D y trains one output per column
        return tags

    def partial_fit(self, X: Any, y: Any) -> "LearnkitRegressor":
        """Train the existing model `epochs` more epochs on (X, y); the first call builds it."""
        return self._train(X, y, partial=True)

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (n_samples,) (or (n_samples, n_outputs) when fitted on 2-D y)."""
        out = self._outputs(X).numpy().astype(np.float64)
        return out if self._y_2d else out.reshape(-1)
