"""Text generation with an AWD-LSTM language model: `generate_ids` (the loop: feed the prompt once, then one
token at a time through the stateful encoder) and `LanguageModelLearner`, the Learner that
`language_model_learner` returns, whose `predict(text, n_words)` continues a text as fastai's does."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from learnkit.learner.learner import Learner
from learnkit.text.tokenizer import BOS, EOS, PAD, UNK, Tokenizer

__all__ = ["LanguageModelLearner", "generate_ids", "banned_ids"]


def banned_ids(itos: Sequence[str], no_unk: bool = True) -> list[int]:
    """Ids a generated text should not contain: padding, document markers, the vocab's unused `xxfake` fillers
    and (with `no_unk`) the unknown token."""
    skip = {PAD, BOS, EOS} | ({UNK} if no_unk else set())
    return [i for i, t in enumerate(itos) if t in skip or t.startswith("xxfake")]


@torch.no_grad()
def generate_ids(model: nn.Module, prompt: torch.Tensor, n_words: int, temperature: float = 1.0,
                 banned: Sequence[int] = (), generator: torch.Generator | None = None) -> list[int]:
    """`n_words` new token ids after `prompt` (1-D ids, on the model's device) from a language model mapping
    (1, L) ids to (1, L, vocab) logits and carrying its state between calls (`reset()` starts it afresh).

    temperature=0 picks the likeliest token (greedy); otherwise tokens are sampled from softmax(logits / T),
    with `generator` (a CPU `torch.Generator`) for reproducible samples. The model's state is reset before and
    after, and its train/eval mode is put back.
    """
    if n_words < 0:
        raise ValueError(f"generate: n_words={n_words} must be >= 0")
    if temperature < 0:
        raise ValueError(f"generate: temperature={temperature} must be >= 0 (0 = greedy)")
    if prompt.ndim != 1 or prompt.numel() == 0:
        raise ValueError(f"generate: the prompt must be a non-empty 1-D tensor of ids, got shape {tuple(prompt.shape)}")
    was_training = model.training
    model.eval()
    model.reset()
    out: list[int] = []
    try:
        logits = model(prompt[None])[0, -1]
        for _ in range(n_words):
            logits = logits.float()
            if len(banned):
                logits[list(banned)] = float("-inf")
            if temperature == 0:
                next_id = int(logits.argmax())
            else:
                probs = F.softmax(logits / temperature, dim=-1).cpu()
                next_id = int(torch.multinomial(probs, 1, generator=generator))
            out.append(next_id)
            logits = model(prompt.new_tensor([[next_id]]))[0, -1]
    finally:
        model.reset()
        model.train(was_training)
    return out


class LanguageModelLearner(Learner):
    """A `Learner` for a language model on a `TextDataBunch` built with is_lm=True (what
    `language_model_learner` returns); `predict` writes text instead of classifying it.

    Example:
        >>> learn = language_model_learner(lm_data)
        >>> learn.fit_one_cycle(1, 1e-2)
        >>> learn.predict("The movie was", n_words=20, temperature=0.75, seed=0)
    """

    def predict(self, text: str, n_words: int = 1, temperature: float = 1.0, seed: int | None = None,
                no_unk: bool = True) -> str:  # type: ignore[override]
        """`text` followed by `n_words` generated tokens (fastai's `LMLearner.predict`).

        Args:
            text: the prompt, kept as written; it is tokenized and numericalized as the training texts were.
            n_words: how many tokens to add (case markers such as xxmaj count as tokens, as in fastai).
            temperature: 0 for greedy decoding; above 0, sampling from softmax(logits / temperature)
                (lower: safer words, higher: more varied).
            seed: seeds the sampling (a private generator: the global RNG is not touched); None uses the
                global torch RNG.
            no_unk: never generate the unknown token (padding and document markers are never generated).
        """
        if not isinstance(text, str):
            raise TypeError(f"predict: the prompt must be a str, got {type(text).__name__}")
        block = self.data.x_block
        tokens = block.tokenizer(text)
        prompt = block.vocab.numericalize(tokens).to(self.device)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        new = generate_ids(self.model, prompt, n_words, temperature, banned_ids(block.vocab.itos, no_unk),
                           generator)
        prefix = Tokenizer.decode(tokens)
        full = Tokenizer.decode(tokens + block.vocab.decode(new))
        # Keep the prompt as the user wrote it (words unknown to the vocab would read 'xxunk').
        return text.rstrip() + full[len(prefix):] if full.startswith(prefix) else full
