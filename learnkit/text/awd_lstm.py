"""AWD-LSTM (Merity et al. 2017) as used by ULMFiT (Howard & Ruder 2018): the encoder, a language model
with a tied decoder, a classifier with a masked concat-pooling head, the AR/TAR callback and layer-group
splitters.

Regularization, each named after its argument:
    embed_p   embedding dropout: whole vocabulary rows dropped (one mask per batch), so a dropped word
              vanishes everywhere it occurs in the batch.
    input_p   variational (locked) dropout on the embeddings: one mask per sequence, shared by all steps.
    weight_p  DropConnect on each LSTM's hidden-to-hidden matrix. The LSTM keeps its own `weight_hh_l0`
              as the raw parameter; a dropped copy is passed in with `torch.func.functional_call`, so
              nothing is patched and gradients reach the raw weight.
    hidden_p  locked dropout between LSTM layers.
    output_p  locked dropout on the last layer's output (the language model's "output dropout").
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from learnkit.core.registry import register_model
from learnkit.learner.events import Callback

__all__ = ["AWDLSTM", "LanguageModel", "TextClassifier", "RNNRegularizer", "lm_splitter", "classifier_splitter",
           "locked_dropout", "LM_DROPOUTS", "CLASSIFIER_DROPOUTS"]

# fastai's ULMFiT defaults; each is multiplied by `drop_mult`.
LM_DROPOUTS = {"output_p": 0.1, "hidden_p": 0.15, "input_p": 0.25, "embed_p": 0.02, "weight_p": 0.2}
CLASSIFIER_DROPOUTS = {"output_p": 0.4, "hidden_p": 0.3, "input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5}

Hidden = list[tuple[torch.Tensor, torch.Tensor]]


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout on `(B, L, D)`: one mask per sequence and feature, shared across the L steps
    (a unit dropped at one step is dropped at every step, which is what keeps an RNN's noise consistent)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p).div_(1 - p)
    return x * mask


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"AWDLSTM: {name}={p} must be in [0, 1); lower it (or the drop_mult that scaled it)")
    return float(p)


class AWDLSTM(nn.Module):
    """The AWD-LSTM encoder: embedding → `n_layers` single-layer LSTMs, with AWD regularization.

    The last layer's hidden size is `emb_size` so that a decoder can share the embedding matrix.
    After each forward, `last_raw_outputs[i]` / `last_outputs[i]` hold layer i's output before / after
    its dropout (plain attributes, read by `RNNRegularizer`). Per-layer modules: `embedding`, `layers[i]`
    (an `nn.LSTM`).

    With `stateful=True` (language modelling on a contiguous stream) the hidden state carries over from
    one call to the next, detached so that backpropagation stops at the batch boundary; `reset()` clears
    it, and so does a change of batch size or device. With `stateful=False` every call starts from zeros.

    Args:
        vocab_size: number of token ids.
        emb_size: embedding size, also the last LSTM layer's hidden size.
        hidden_size: hidden size of the other LSTM layers.
        n_layers: number of LSTM layers.
        pad_idx: the padding token's id (its embedding row is zero and gets no gradient).
        hidden_p, input_p, embed_p, weight_p: dropout probabilities (see the module docstring).
        output_p: locked dropout on the last layer's output; None means `hidden_p`.
        stateful: keep the hidden state between calls.

    Example:
        >>> enc = AWDLSTM(vocab_size=100, emb_size=16, hidden_size=24, n_layers=2)
        >>> enc(torch.randint(0, 100, (4, 7))).shape
        torch.Size([4, 7, 16])
    """

    def __init__(self, vocab_size: int, emb_size: int = 400, hidden_size: int = 1152, n_layers: int = 3,
                 pad_idx: int = 1, hidden_p: float = 0.3, input_p: float = 0.4, embed_p: float = 0.05,
                 weight_p: float = 0.5, stateful: bool = False, output_p: float | None = None):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"AWDLSTM: n_layers={n_layers} must be at least 1")
        self.vocab_size, self.emb_size, self.hidden_size, self.n_layers = vocab_size, emb_size, hidden_size, n_layers
        self.pad_idx, self.stateful = pad_idx, stateful
        self.hidden_p, self.input_p = _check_p("hidden_p", hidden_p), _check_p("input_p", input_p)
        self.embed_p, self.weight_p = _check_p("embed_p", embed_p), _check_p("weight_p", weight_p)
        self.output_p = _check_p("output_p", hidden_p if output_p is None else output_p)
        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=pad_idx)
        sizes = [emb_size] + [hidden_size] * (n_layers - 1) + [emb_size]
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(n_layers))
        with torch.no_grad():
            self.embedding.weight.uniform_(-0.1, 0.1)
            if pad_idx is not None:
                self.embedding.weight[pad_idx].zero_()
        self.hidden: Hidden | None = None
        self.last_raw_outputs: list[torch.Tensor] = []
        self.last_outputs: list[torch.Tensor] = []

    def reset(self) -> None:
        """Forget the carried hidden state (stateful mode) and the stored outputs."""
        self.hidden = None
        self.last_raw_outputs, self.last_outputs = [], []

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embeddings of `tokens` with embedding dropout (training only): a vocabulary row is dropped
        with probability `embed_p` for the whole batch and the kept rows are scaled by 1/(1-embed_p)."""
        weight = self.embedding.weight
        if self.training and self.embed_p > 0:
            mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - self.embed_p).div_(1 - self.embed_p)
            weight = weight * mask
        return F.embedding(tokens, weight, padding_idx=self.pad_idx)

    def hh_weight(self, i: int) -> torch.Tensor:
        """Layer i's hidden-to-hidden matrix as the forward uses it: DropConnect'ed in training, raw in eval."""
        return F.dropout(self.layers[i].weight_hh_l0, self.weight_p, self.training)

    def _run_layer(self, i: int, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, Any]:
        lstm = self.layers[i]
        if not (self.training and self.weight_p > 0):
            return lstm(x, state)
        with warnings.catch_warnings():
            # cuDNN warns that the substituted weight is not part of its flattened buffer; it copies it.
            warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk.*")
            warnings.filterwarnings("ignore", message=".*contiguous.*", category=UserWarning)
            return functional_call(lstm, {"weight_hh_l0": self.hh_weight(i)}, (x, state))

    def _initial_state(self, x: torch.Tensor) -> Hidden:
        bs = x.shape[0]
        h = self.hidden
        if self.stateful and h is not None and h[0][0].shape[1] == bs and h[0][0].device == x.device:
            return [(hh.to(x.dtype), cc.to(x.dtype)) for hh, cc in h]
        return [(x.new_zeros(1, bs, lstm.hidden_size), x.new_zeros(1, bs, lstm.hidden_size)) for lstm in self.layers]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` `(B, L)` long → the last layer's output after its dropout, `(B, L, emb_size)`."""
        if tokens.ndim != 2:
            raise ValueError(f"AWDLSTM: expected token ids of shape (batch, length), got {tuple(tokens.shape)}")
        x = locked_dropout(self.embed(tokens), self.input_p, self.training)
        state = self._initial_state(x)
        raw_outputs, outputs, new_state = [], [], []
        for i in range(self.n_layers):
            raw, s = self._run_layer(i, x, state[i])
            new_state.append(s)
            p = self.output_p if i == self.n_layers - 1 else self.hidden_p
            x = locked_dropout(raw, p, self.training)
            raw_outputs.append(raw)
            outputs.append(x)
        # Detached: the next batch's backward stops here (truncated backpropagation through time).
        self.hidden = [(h.detach(), c.detach()) for h, c in new_state] if self.stateful else None
        self.last_raw_outputs, self.last_outputs = raw_outputs, outputs
        return x


def _scaled(defaults: dict[str, float], drop_mult: float, given: dict[str, float | None]) -> dict[str, float]:
    if drop_mult < 0:
        raise ValueError(f"drop_mult={drop_mult} must be >= 0")
    return {k: (defaults[k] if given[k] is None else given[k]) * drop_mult for k in defaults}


class LanguageModel(nn.Module):
    """A stateful AWD-LSTM encoder + output dropout + a linear decoder, its weight tied to the embedding.

    The output dropout is the encoder's last-layer dropout (`output_p`), so `encoder.last_outputs[-1]`
    is exactly what the decoder sees, as AR expects. Dropouts default to `LM_DROPOUTS`, all × `drop_mult`.
    Call `reset()` at the start of each pass over a stream (training, validation).

    Example:
        >>> lm = LanguageModel(vocab_size=100, emb_size=16, hidden_size=24, n_layers=2)
        >>> lm(torch.randint(0, 100, (4, 7))).shape
        torch.Size([4, 7, 100])
    """

    def __init__(self, vocab_size: int, emb_size: int = 400, hidden_size: int = 1152, n_layers: int = 3,
                 pad_idx: int = 1, drop_mult: float = 1.0, output_p: float | None = None,
                 hidden_p: float | None = None, input_p: float | None = None, embed_p: float | None = None,
                 weight_p: float | None = None, tie_weights: bool = True):
        super().__init__()
        ps = _scaled(LM_DROPOUTS, drop_mult, dict(output_p=output_p, hidden_p=hidden_p, input_p=input_p,
                                                  embed_p=embed_p, weight_p=weight_p))
        self.encoder = AWDLSTM(vocab_size, emb_size, hidden_size, n_layers, pad_idx, stateful=True, **ps)
        self.decoder = nn.Linear(emb_size, vocab_size)
        with torch.no_grad():
            self.decoder.bias.zero_()
        self.tie_weights = tie_weights
        if tie_weights:
            self.decoder.weight = self.encoder.embedding.weight  # the same Parameter object

    def reset(self) -> None:
        """Forget the encoder's carried hidden state."""
        self.encoder.reset()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` `(B, L)` long → next-token logits `(B, L, vocab_size)`."""
        return self.decoder(self.encoder(tokens))


class TextClassifier(nn.Module):
    """A (non-stateful) AWD-LSTM encoder + masked concat pooling + a two-layer head.

    Pooling over the non-pad positions of right-padded input: [output at the last non-pad token, max,
    mean] (3 × emb_size); a row that is all padding pools to zeros. Head: BatchNorm1d → Dropout(output_p)
    → Linear(lin_size) → ReLU → BatchNorm1d → Dropout(lin_p) → Linear(n_out). Dropouts default to
    `CLASSIFIER_DROPOUTS` (output_p is the head's first dropout) and lin_p=0.1, all × `drop_mult`.
    `encoder` has the same parameter names as `LanguageModel.encoder`, so a fine-tuned LM's encoder
    `state_dict` loads into it.

    Example:
        >>> clf = TextClassifier(vocab_size=100, n_out=3, emb_size=16, hidden_size=24, n_layers=2)
        >>> clf(torch.randint(2, 100, (4, 7))).shape
        torch.Size([4, 3])
    """

    def __init__(self, vocab_size: int, n_out: int, emb_size: int = 400, hidden_size: int = 1152,
                 n_layers: int = 3, pad_idx: int = 1, drop_mult: float = 1.0, lin_size: int = 50,
                 output_p: float | None = None, hidden_p: float | None = None, input_p: float | None = None,
                 embed_p: float | None = None, weight_p: float | None = None, lin_p: float = 0.1):
        super().__init__()
        ps = _scaled(CLASSIFIER_DROPOUTS, drop_mult, dict(output_p=output_p, hidden_p=hidden_p, input_p=input_p,
                                                          embed_p=embed_p, weight_p=weight_p))
        head_p = ps.pop("output_p")
        # As in ULMFiT, the last LSTM layer is not dropped here: the head's own dropout follows the pooling.
        self.encoder = AWDLSTM(vocab_size, emb_size, hidden_size, n_layers, pad_idx, stateful=False,
                               output_p=0.0, **ps)
        self.pad_idx = pad_idx
        self.head = nn.Sequential(
            nn.BatchNorm1d(3 * emb_size), nn.Dropout(head_p), nn.Linear(3 * emb_size, lin_size), nn.ReLU(),
            nn.BatchNorm1d(lin_size), nn.Dropout(lin_p * drop_mult), nn.Linear(lin_size, n_out))

    def reset(self) -> None:
        self.encoder.reset()

    def pool(self, output: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Masked concat pooling of `output` `(B, L, D)` over positions where `tokens != pad_idx` → `(B, 3D)`."""
        mask = tokens != self.pad_idx                                       # (B, L)
        has_any = mask.any(dim=1, keepdim=True)                             # (B, 1)
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        last_idx = torch.where(mask, positions, 0).max(dim=1).values        # last non-pad position (0 if none)
        last = output[torch.arange(output.shape[0], device=output.device), last_idx]
        m = mask.unsqueeze(-1)
        max_pool = output.masked_fill(~m, float("-inf")).max(dim=1).values
        mean_pool = (output * m).sum(dim=1) / m.sum(dim=1).clamp(min=1).to(output.dtype)
        # An all-pad row would give -inf (max) and the first pad's output (last): pool it to zeros instead.
        zero = output.new_zeros(())
        return torch.cat([torch.where(has_any, last, zero), torch.where(has_any, max_pool, zero), mean_pool], dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` `(B, L)` long, right-padded → logits `(B, n_out)`."""
        return self.head(self.pool(self.encoder(tokens), tokens))


@register_model("awd_lstm_lm")
def awd_lstm_lm(**kwargs: Any) -> nn.Module:
    """`LanguageModel(**kwargs)`, for `create_model("awd_lstm_lm", vocab_size=..., ...)`."""
    return LanguageModel(**kwargs)


@register_model("awd_lstm_classifier")
def awd_lstm_classifier(**kwargs: Any) -> nn.Module:
    """`TextClassifier(**kwargs)`, for `create_model("awd_lstm_classifier", vocab_size=..., n_out=...)`."""
    return TextClassifier(**kwargs)



def lm_splitter(model: LanguageModel) -> list[nn.Module]:
    """Layer groups of a `LanguageModel`: [LSTM 0, ..., LSTM n-1, embedding + decoder].

    The embedding sits in the last group with the (tied) decoder, as in ULMFiT: fine-tuning a pretrained
    LM frozen (`learn.freeze()`) still trains the vectors of the target corpus's new tokens.
    """
    enc = model.encoder
    groups: list[nn.Module] = list(enc.layers)
    groups.append(nn.ModuleList([enc.embedding, model.decoder]))
    return groups


def classifier_splitter(model: TextClassifier) -> list[nn.Module]:
    """Layer groups of a `TextClassifier`: [embedding, LSTM 0, ..., LSTM n-1, head]."""
    enc = model.encoder
    return [enc.embedding, *enc.layers, model.head]


def _find_encoder(model: nn.Module) -> AWDLSTM:
    enc = getattr(model, "encoder", None)
    if isinstance(enc, AWDLSTM):
        return enc
    for m in model.modules():
        if isinstance(m, AWDLSTM):
            return m
    raise TypeError(f"RNNRegularizer: the model ({type(model).__name__}) contains no AWDLSTM; "
                    "use it with LanguageModel or TextClassifier, or remove the callback")


class RNNRegularizer(Callback):
    """Activation regularization (AR) and temporal activation regularization (TAR) from AWD-LSTM.

    In training, adds to `learn.loss_grad` (what backward sees; `learn.loss` stays the plain loss):
        AR  = alpha * mean(last_outputs[-1] ** 2)                      (the dropped last-layer output)
        TAR = beta  * mean((raw[:, 1:] - raw[:, :-1]) ** 2), raw = last_raw_outputs[-1]
    Note: placed after `GradientAccumulation` (order -5), this term is not divided by its `steps`.

    Example:
        >>> learn = Learner(data, create_model("awd_lstm_lm", vocab_size=len(vocab)), cbs=[RNNRegularizer()])
    """

    order = 0
    graph_safe = True  # device tensor work only

    def __init__(self, alpha: float = 2.0, beta: float = 1.0):
        self.alpha, self.beta = alpha, beta

    def after_loss(self, learn: Any) -> None:
        if not learn.training:
            return
        enc = _find_encoder(learn.model)
        if not enc.last_outputs:
            return
        reg = 0.0
        if self.alpha:
            reg = reg + self.alpha * enc.last_outputs[-1].float().pow(2).mean()
        raw = enc.last_raw_outputs[-1]
        if self.beta and raw.shape[1] > 1:
            reg = reg + self.beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        learn.loss_grad = learn.loss_grad + reg

    def __repr__(self) -> str:
        return f"RNNRegularizer(alpha={self.alpha}, beta={self.beta})"
