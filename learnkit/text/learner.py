"""Text learners: `language_model_learner` and `text_classifier_learner` (AWD-LSTM / ULMFiT, or a
pretrained BERT-family encoder from a local folder), encoder transfer with vocabulary remapping,
perplexity, and the texts the model gets most wrong."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnkit.callbacks.training import GradientClipping
from learnkit.core.hub import resolve_model_dir
from learnkit.core.registry import create_model
from learnkit.core.serialization import load_tensors, save_tensors
from learnkit.learner.events import Callback
from learnkit.learner.interpret import ClassificationInterpretation
from learnkit.learner.learner import Learner
from learnkit.learner.metrics import Metric, accuracy, default_metrics
from learnkit.learner.names import take_fastai_names
from learnkit.optim.optimizer import AdamW
from learnkit.text.awd_lstm import RNNRegularizer, classifier_splitter, lm_splitter
from learnkit.text.data import SubwordTextBlock, TextBlock, TextDataBunch, graph_pad_multiple
from learnkit.text.generate import LanguageModelLearner
from learnkit.text.vocab import Vocab

__all__ = ["language_model_learner", "text_classifier_learner", "save_encoder", "load_encoder", "Perplexity",
           "ResetState", "top_losses", "find_model_dir", "AWD_LSTM_CONFIG"]

log = logging.getLogger(__name__)

ARCHS = ("awd_lstm", "bert", "transformers")
# What a hub download fetches: configs, vocabularies, tokenizers (tokenizer.json, sentencepiece .model) and
# safetensors weights; not pickles (.bin), other frameworks' weights or remote code (.py).
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
DEFAULT_SUBWORD_LEN = 256  # max_len of 'bert'/transformers classifiers unless the model takes fewer positions
AWD_LSTM_CONFIG = {"emb_size": 400, "hidden_size": 1152, "n_layers": 3}
# AWD-LSTM learners train in float32 unless asked otherwise (mixed_precision="bf16"): on an H100, bf16
# autocast made the classifier's weights NaN a few hundred steps into gradual unfreezing (finite losses,
# gradients clipped), float32 never did. Transformer learners keep the default ('auto').
AWD_LSTM_PRECISION = None


class Perplexity(Metric):
    """exp(mean next-token cross-entropy) over the whole validation set."""

    name = "perplexity"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.total = self.total + F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1),
                                                  reduction="sum")
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return torch.exp(torch.as_tensor(self.total) / max(1, self.count))


class ResetState(Callback):
    """Zero a stateful model's hidden state at the start of training and of validation (new streams)."""

    def before_train(self, learn: Learner) -> None:
        learn.model.reset()

    def before_validate(self, learn: Learner) -> None:
        learn.model.reset()


def _clipping(clip: float | None) -> list[Callback]:
    return [] if clip is None else [GradientClipping(clip)]


def _text_opt(params: Any, lr: float = 1e-3) -> torch.optim.Optimizer:
    return AdamW(params, lr=lr, weight_decay=0.01)


def _old_pretrained(where: str, pretrained: Any, weights: Any) -> tuple[bool, Any]:
    """An older learnkit took the weights' folder as `pretrained=`: accept it with a DeprecationWarning."""
    if isinstance(pretrained, (str, Path)):
        if weights is not None:
            raise TypeError(f"{where}(): got a folder as pretrained= and weights=; pass only weights=<folder>")
        warnings.warn(f"{where}(pretrained=<folder>) is deprecated: use weights=<folder> (pretrained is a bool)",
                      DeprecationWarning, stacklevel=3)
        return True, pretrained
    if pretrained is None:  # an older learnkit's default
        return False, weights
    if not isinstance(pretrained, bool):
        raise TypeError(f"{where}(pretrained={pretrained!r}): pretrained is True or False; the weights' folder or "
                        "id goes to weights=")
    return pretrained, weights


def language_model_learner(data: TextDataBunch | None = None, arch: str = "awd_lstm", pretrained: bool = True,
                           weights: str | Path | None = None, drop_mult: float = 1.0, config: dict | None = None,
                           metrics: Sequence[Any] | None = None, clip: float | None = 0.25, *,
                           loss_fn: Callable | None = None, opt_fn: Callable[..., torch.optim.Optimizer] = _text_opt,
                           callbacks: Iterable[Callback] = (), path: str | Path = ".", model_dir: str = "models",
                           mixed_precision: Any = AWD_LSTM_PRECISION, progress: bool = True, train_bn: bool = True,
                           preflight: bool = True, compile: bool | str | dict = False, sync_bn: bool = False,
                           weight_decay: float | None = None, cudnn_benchmark: bool | None = None,
                           cuda_graphs: bool | str = "auto",
                           **fastai_names: Any) -> LanguageModelLearner:
    """An AWD-LSTM language model on `data` (built with is_lm=True); `learn.predict(text, n_words)` continues a text.

    Args:
        pretrained: load `weights` (and freeze all but the head). There is no built-in pretrained AWD-LSTM
            (nothing is downloaded): without `weights` the model starts from scratch.
        weights: an LM bundle written by `learn.export()` (e.g. one pretrained on a large corpus); its
            weights are loaded with the vocabulary remapped to this data's vocab. (The folder as
            `pretrained=` still works, with a deprecation warning.)
        drop_mult: scales every dropout.
        config: emb_size / hidden_size / n_layers (default AWD_LSTM_CONFIG).
        clip: gradient-norm clipping (AWD-LSTM trains with 0.25); None turns it off.
        loss_fn, opt_fn, callbacks, path, model_dir, mixed_precision (default float32), progress, train_bn,
            preflight, compile, sync_bn, weight_decay, cudnn_benchmark, cuda_graphs: as `Learner`'s.

    Example:
        >>> lm = language_model_learner(lm_data, weights="models/wiki_lm", drop_mult=0.3)
        >>> lm.fit_one_cycle(1, 2e-2)
    """
    if fastai_names:
        data, loss_fn, opt_fn, callbacks, weight_decay = take_fastai_names(
            "language_model_learner", language_model_learner, fastai_names, {
                "data": data, "loss_fn": loss_fn, "opt_fn": opt_fn, "callbacks": callbacks,
                "weight_decay": weight_decay}).values()
    pretrained, weights = _old_pretrained("language_model_learner", pretrained, weights)
    if arch != "awd_lstm":
        raise ValueError(f"language_model_learner(arch={arch!r}): only 'awd_lstm' language models are available")
    if data is None or not getattr(data, "is_lm", False):
        raise ValueError("language_model_learner: the data must be a TextDataBunch built with is_lm=True")
    if weights is not None and not pretrained:
        raise ValueError(f"language_model_learner(weights={str(weights)!r}, pretrained=False): weights are loaded "
                         "only when pretrained; drop one of them")
    block = data.x_block
    cfg = {**AWD_LSTM_CONFIG, **(config or {})}
    model = create_model("awd_lstm_lm", vocab_size=len(block.vocab), pad_idx=block.pad_idx,
                         drop_mult=drop_mult, **cfg)
    callbacks = [ResetState(), RNNRegularizer(alpha=2.0, beta=1.0)] + _clipping(clip) + list(callbacks)
    learn = LanguageModelLearner(data, model, loss_fn=loss_fn, opt_fn=opt_fn, splitter=lm_splitter,
                    metrics=[accuracy, Perplexity()] if metrics is None else metrics, callbacks=callbacks,
                    path=path, model_dir=model_dir, mixed_precision=mixed_precision, progress=progress,
                    train_bn=train_bn, preflight=preflight, compile=compile, sync_bn=sync_bn,
                    weight_decay=weight_decay, cudnn_benchmark=cudnn_benchmark, cuda_graphs=cuda_graphs)
    if weights is not None:
        _load_pretrained_lm(learn, Path(weights))
        learn.freeze()
    return learn


def _embedding(model: nn.Module) -> nn.Embedding:
    return next(m for m in model.encoder.modules() if isinstance(m, nn.Embedding))


def _remap_rows(old: torch.Tensor, old_itos: Sequence[str], new_itos: Sequence[str]) -> torch.Tensor:
    """Rows of `old` re-ordered for the new vocab; tokens the old vocab lacks get the mean row."""
    old_stoi = {t: i for i, t in enumerate(old_itos)}
    mean = old.float().mean(0).to(old.dtype)
    rows = [old[old_stoi[t]] if t in old_stoi else mean for t in new_itos]
    return torch.stack(rows)


def _load_pretrained_lm(learn: Learner, folder: Path) -> None:
    recipe_file = folder / "recipe.json"
    if not recipe_file.exists():
        raise FileNotFoundError(f"weights={str(folder)!r}: no recipe.json there; pass a folder written by "
                                f"learn.export() of a language model")
    recipe = json.loads(recipe_file.read_text())
    if recipe.get("model", {}).get("name") != "awd_lstm_lm":
        raise ValueError(f"weights={str(folder)!r} holds a {recipe.get('model', {}).get('name')!r} model, not an "
                         f"AWD-LSTM language model")
    old_itos = recipe["blocks"][0]["itos"]
    state = load_tensors(folder / recipe["weights"]["file"])
    new_itos = learn.data.x_block.vocab.itos
    current = learn.model.state_dict()
    for key, value in list(state.items()):
        # Vocab-sized tensors (embedding, tied decoder weight, decoder bias) follow the tokens.
        if key in current and value.ndim >= 1 and value.shape[0] == len(old_itos) \
                and current[key].shape[0] == len(new_itos):
            state[key] = _remap_rows(value, old_itos, new_itos)
    missing = learn.model.load_state_dict(state, strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise ValueError(f"pretrained LM {folder} does not fit this model: missing {missing.missing_keys[:5]}, "
                         f"unexpected {missing.unexpected_keys[:5]}")


def save_encoder(learn: Learner, name: str) -> Path:
    """Save the encoder's weights and the vocab (path/models/name.safetensors + name.vocab.json)."""
    folder = learn.path / learn.model_dir
    state = {k: v.detach().cpu() for k, v in learn.model.encoder.state_dict().items()}
    save_tensors(state, folder / f"{name}.safetensors", metadata={"format": "learnkit-encoder"})
    learn.data.x_block.vocab.save(folder / f"{name}.vocab.json")
    return folder / f"{name}.safetensors"


def load_encoder(learn: Learner, name: str) -> Learner:
    """Load an encoder saved by `save_encoder`, remapping embedding rows to this data's vocab (shared tokens
    keep their vectors, new tokens start at the mean vector)."""
    folder = learn.path / learn.model_dir
    file, vocab_file = folder / f"{name}.safetensors", folder / f"{name}.vocab.json"
    for f in (file, vocab_file):
        if not f.exists():
            raise FileNotFoundError(f"load_encoder: {f} not found; write it with save_encoder(learn, {name!r})")
    state = load_tensors(file)
    old_itos = Vocab.load(vocab_file).itos
    new_itos = learn.data.x_block.vocab.itos
    emb = _embedding(learn.model)
    emb_key = next(k for k, p in learn.model.encoder.named_parameters() if p is emb.weight)
    if state[emb_key].shape[1] != emb.weight.shape[1]:
        raise ValueError(f"load_encoder: {file} has embeddings of size {state[emb_key].shape[1]}, this model "
                         f"{emb.weight.shape[1]}; build the learner with the same config")
    state[emb_key] = _remap_rows(state[emb_key], old_itos, new_itos)
    learn.model.encoder.load_state_dict({k: v.to(learn.device) for k, v in state.items()})
    shared = len(set(old_itos) & set(new_itos))
    learn.encoder_transfer = {"shared_tokens": shared, "new_tokens": len(new_itos) - shared}
    return learn


def find_model_dir(name_or_path: str | Path, weights: bool = True) -> Path:
    """A local Hugging Face model folder: the path itself, a hub id's snapshot in the hub cache (HF_HUB_CACHE /
    HF_HOME / ~/.cache/huggingface), or, online with huggingface_hub installed, a download into that cache
    (`learnkit.core.hub.resolve_model_dir`; HF_HUB_OFFLINE=1 is respected, and a model that is neither cached nor
    downloadable is a `ModelNotCached` error naming the id, the cache folder and the `hf download` command)."""
    from learnkit.text.hf import TOKENIZER_FILES, WEIGHT_FILES
    # a snapshot that lacks the tokenizer or (when `weights`) the weights is not cached: online, it is completed
    required = ("config.json", TOKENIZER_FILES) + ((WEIGHT_FILES,) if weights else ())
    return resolve_model_dir(name_or_path, allow_patterns=HUB_FILES, required=required)


def _builtin_bert_folder(folder: Path) -> bool:
    """A folder the built-in BERT reads: its three files, and a config of a BERT-family model."""
    from learnkit.text.transformer import MODEL_FILES, check_architecture
    if not all((folder / f).is_file() for f in MODEL_FILES):
        return False
    try:
        check_architecture(json.loads((folder / "config.json").read_text(encoding="utf-8")), str(folder))
    except ValueError:
        return False
    return True


def _resolve_arch(arch: Any, weights: Any) -> tuple[str, Any]:
    """(backend, weights): 'awd_lstm', 'bert' (built-in), 'transformers', or 'auto' for a model folder / hub id."""
    if arch is not None and str(arch) not in ARCHS:
        if weights is not None:
            raise TypeError(f"text_classifier_learner(arch={str(arch)!r}, weights=...): arch is one of {ARCHS} or "
                            "a model folder / hub id; give the model once")
        return "auto", arch
    if arch is None:
        return ("auto" if weights is not None else "awd_lstm"), weights
    return str(arch), weights


def _max_len(max_len: Any, limit: int | None, name: str) -> int:
    """`max_len` checked against 3 (the two special tokens and one word) and the model's position `limit`; None:
    DEFAULT_SUBWORD_LEN, or `limit` when smaller."""
    if max_len is None:
        return min(DEFAULT_SUBWORD_LEN, limit) if limit else DEFAULT_SUBWORD_LEN
    if isinstance(max_len, bool) or not isinstance(max_len, int):
        raise TypeError(f"text_classifier_learner(max_len={max_len!r}): max_len is a whole number of tokens")
    if max_len < 3:
        raise ValueError(f"text_classifier_learner(max_len={max_len}): at least 3 tokens (the [CLS] and [SEP] the "
                         "tokenizer adds and one word); e.g. max_len=128")
    if limit is not None and max_len > limit:
        raise ValueError(f"text_classifier_learner(max_len={max_len}): {name} takes at most {limit} tokens (its "
                         f"position table, or else its tokenizer's model_max_length); use max_len={limit} or less")
    return max_len


def text_classifier_learner(data: TextDataBunch | None = None, arch: str | Path | None = None,
                            pretrained: bool = True, weights: str | Path | None = None, drop_mult: float = 0.5,
                            max_len: int | None = None, pooling: str = "mean", config: dict | None = None,
                            encoder: str | None = None, metrics: Sequence[Any] | None = None,
                            clip: float | None = 0.25, *, loss_fn: Callable | None = None,
                            opt_fn: Callable[..., torch.optim.Optimizer] | None = None,
                            callbacks: Iterable[Callback] = (), path: str | Path = ".", model_dir: str = "models",
                            mixed_precision: Any = None, progress: bool = True, train_bn: bool = True,
                            preflight: bool = True, compile: bool | str | dict = False, sync_bn: bool = False,
                            weight_decay: float | None = None, cudnn_benchmark: bool | None = None,
                           cuda_graphs: bool | str = "auto",
                            **fastai_names: Any) -> Learner:
    # long: the spelled-out keyword options (no **kwargs) and their docstring; the body is short
    """A text classifier on `data`.

    Args:
        arch: a Hugging Face model folder or hub id ('org/name': the hub cache, downloaded when online), or one
            of 'awd_lstm' (ULMFiT; the default without `weights`), 'bert' (the built-in plain-torch BERT, no
            dependency) or 'transformers' (`transformers.AutoModel` + its fast tokenizer: any encoder the installed
            transformers knows — BERT, RoBERTa, DistilBERT, DeBERTa-v2/v3, ELECTRA, XLM-RoBERTa, ModernBERT, ...;
            the `learnkit[hf]` extra) with the model in `weights`. For a folder or id alone the backend is chosen:
            the built-in BERT for a BERT-family folder with vocab.txt and model.safetensors (the same logits as
            transformers, tested on all-MiniLM-L6-v2), transformers for everything else.
        pretrained: load the encoder's pretrained weights (False: the same architecture and tokenizer, randomly
            initialized). For 'awd_lstm', load `encoder=` when given (nothing is downloaded).
        weights: the model folder or hub id when `arch` names the backend. The data is then re-encoded with that
            model's own tokenizer (same texts, labels and split) into a new bunch, `learn.data`; your `data` is
            not modified, and one line (printed with `progress`, and logged) says so.
        max_len: tokens per document (the first ones, counting the [CLS]/[SEP] the tokenizer adds) for 'bert' and
            transformers: 3 up to the model's position limit; None: 256, or the model's limit when smaller.
        pooling: 'mean' or 'cls' for transformers.
        encoder: name of an encoder saved with `save_encoder` (AWD-LSTM only).
        clip: gradient-norm clipping for the AWD-LSTM (0.25, as the AWD-LSTM paper); None turns it off.
        loss_fn, opt_fn, callbacks, path, model_dir, mixed_precision, progress, train_bn, preflight, compile,
            sync_bn, weight_decay, cudnn_benchmark, cuda_graphs: as `Learner`'s. Defaults: AWD-LSTM in float32
            with AdamW (weight decay 0.01); transformers with the Learner's ('auto' precision, AdamW).

    Example:
        >>> learn = text_classifier_learner(data, "microsoft/deberta-v3-small")
        >>> learn.fine_tune(3, base_lr=1e-4)             # or fine_tune(3, lora=8): low-rank adapters
    """
    if fastai_names:
        data, loss_fn, opt_fn, callbacks, weight_decay = take_fastai_names(
            "text_classifier_learner", text_classifier_learner, fastai_names, {
                "data": data, "loss_fn": loss_fn, "opt_fn": opt_fn, "callbacks": callbacks,
                "weight_decay": weight_decay}).values()
    arch, weights = _resolve_arch(arch, weights)
    if not isinstance(pretrained, bool):
        raise TypeError(f"text_classifier_learner(pretrained={pretrained!r}): pretrained is True or False; the "
                        "model folder or id goes to weights=")
    if data is None or getattr(data, "is_lm", False):
        raise ValueError("text_classifier_learner: the data must be a labelled TextDataBunch (not is_lm=True)")
    metrics = default_metrics(data.y_block) if metrics is None else metrics
    n_out = len(data.classes)
    options = dict(loss_fn=loss_fn, metrics=metrics, path=path, model_dir=model_dir, progress=progress,
                   train_bn=train_bn, preflight=preflight, compile=compile, sync_bn=sync_bn, weight_decay=weight_decay,
                   cudnn_benchmark=cudnn_benchmark, cuda_graphs=cuda_graphs)
    if arch in ("bert", "transformers", "auto"):
        if weights is None:
            raise ValueError(f"text_classifier_learner(arch={arch!r}): give the model: a folder or hub id, e.g. "
                             "text_classifier_learner(data, 'sentence-transformers/all-MiniLM-L6-v2')")
        folder = find_model_dir(weights, weights=pretrained)
        if arch == "auto":  # the built-in BERT where it can (same logits, no dependency); transformers otherwise
            arch = "bert" if _builtin_bert_folder(folder) else "transformers"
        name = folder.name if Path(str(weights)).expanduser().is_dir() else str(weights)
        if arch == "bert":
            from learnkit.text.transformer import layer_groups, load_bert
            bert, tokenizer, bert_config = load_bert(folder)
            model = create_model("bert_classifier", config=bert_config, n_out=n_out, pad_id=int(tokenizer.pad_id),
                                 pooling=pooling)
            if pretrained:
                model.encoder.load_state_dict(bert.state_dict())
            splitter, kind = layer_groups, "WordPiece"
        else:
            from learnkit.text.hf import hf_classifier_from_dir, hf_layer_groups
            model, tokenizer = hf_classifier_from_dir(folder, n_out, pooling=pooling, pretrained=pretrained)
            splitter, kind = hf_layer_groups, f"{type(model.encoder).__name__} (transformers)"
        limit = getattr(model, "max_positions", None) or getattr(tokenizer, "model_max_length", None)
        max_len = _max_len(max_len, limit, name)
        few_lengths = graph_pad_multiple(max_len) if data.device.type == "cuda" and cuda_graphs is not False else None
        own = data.with_block(SubwordTextBlock(tokenizer, max_len=max_len, pad_multiple=few_lengths))  # a new bunch
        message = (f"text_classifier_learner: re-encoded the {len(own.texts)} texts with {name}'s {kind} "
                   f"tokenizer (max_len={max_len}); learn.data is that new bunch, your data is unchanged")
        log.info(message)
        if progress:
            print(message)
        return Learner(own, model, splitter=splitter, opt_fn=opt_fn or AdamW, callbacks=callbacks,
                       mixed_precision="auto" if mixed_precision is None else mixed_precision, **options)
    if arch != "awd_lstm":
        raise ValueError(f"text_classifier_learner(arch={arch!r}): use one of {ARCHS} or a model folder / hub id")
    if weights is not None:
        raise ValueError("text_classifier_learner(arch='awd_lstm', weights=...): an AWD-LSTM classifier starts "
                         "from a fine-tuned language model's encoder: pass encoder=<name given to save_encoder>")
    block = data.x_block
    if not isinstance(block, TextBlock) or block.vocab is None:
        raise ValueError("text_classifier_learner('awd_lstm'): the data must be encoded by a TextBlock with a vocab")
    cfg = {**AWD_LSTM_CONFIG, **(config or {})}
    model = create_model("awd_lstm_classifier", vocab_size=len(block.vocab), n_out=n_out, pad_idx=block.pad_idx,
                         drop_mult=drop_mult, **cfg)
    callbacks = [RNNRegularizer(alpha=2.0, beta=1.0)] + _clipping(clip) + list(callbacks)
    learn = Learner(data, model, opt_fn=opt_fn or _text_opt, splitter=classifier_splitter, callbacks=callbacks,
                    mixed_precision=AWD_LSTM_PRECISION if mixed_precision is None else mixed_precision, **options)
    if encoder is not None and pretrained:
        load_encoder(learn, encoder)
        learn.freeze()
    return learn


def top_losses(learn: Learner, k: int = 10) -> list[dict[str, Any]]:
    """The k validation texts with the highest loss: text, actual and predicted label, probability, loss
    (`ClassificationInterpretation(...).top_losses_table`, the class vision uses too)."""
    rows = ClassificationInterpretation.from_learner(learn).top_losses_table(k)
    return [{"text": r["input"], **{key: r[key] for key in ("actual", "predicted", "probability", "loss")}}
            for r in rows]
