"""An AWD-LSTM language model writes text: `learn.predict(text, n_words)` (fastai's call), greedy or sampled
with a temperature and a seed; and a non-BERT model folder gets an error naming its architecture."""
import json

import pytest
import torch

import learnkit as lk
from learnkit.text import TextDataBunch, language_model_learner, text_classifier_learner
from learnkit.text.generate import LanguageModelLearner, banned_ids, generate_ids
from learnkit.text.tokenizer import Tokenizer
from learnkit.text.transformer import load_bert

TINY = {"emb_size": 16, "hidden_size": 24, "n_layers": 2}


@pytest.fixture(scope="module")
def lm():
    lk.set_seed(0)
    g = torch.Generator().manual_seed(0)
    words = ["red", "green", "blue", "small", "big", "cat", "dog", "bird"]
    texts = ["the " + " ".join(words[i] for i in torch.randint(0, 8, (5,), generator=g).tolist()) + " runs home."
             for _ in range(200)]
    data = TextDataBunch.from_lists(texts, is_lm=True, seed=0, batch_size=8, bptt=12, min_freq=1, device="cpu")
    learn = language_model_learner(data, config=TINY, progress=False, drop_mult=0.1)
    learn.fit_one_cycle(1, 1e-2)
    return learn


def test_predict_continues_the_prompt_with_n_words_tokens(lm):
    assert isinstance(lm, LanguageModelLearner)
    prompt = "The big cat"
    text = lm.predict(prompt, n_words=20, temperature=0)
    assert text.startswith(prompt) and len(text) > len(prompt)
    block = lm.data.x_block
    ids = block.vocab.numericalize(block.tokenizer(prompt))
    new = generate_ids(lm.model, ids, 20, temperature=0, banned=banned_ids(block.vocab.itos))
    assert len(new) == 20 and not set(new) & set(banned_ids(block.vocab.itos))
    # what predict returned is the prompt followed by exactly those 20 tokens
    tokens = block.tokenizer(prompt)
    assert text == prompt + Tokenizer.decode(tokens + block.vocab.decode(new))[len(Tokenizer.decode(tokens)):]
    assert lm.predict(prompt, n_words=20, temperature=0) == text  # greedy: deterministic
    assert lm.predict(prompt, n_words=0) == prompt


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(lm):
    state = torch.get_rng_state()
    a = lm.predict("the small", n_words=15, temperature=1.5, seed=1)
    b = lm.predict("the small", n_words=15, temperature=1.5, seed=1)
    assert a == b and torch.equal(state, torch.get_rng_state())
    others = {lm.predict("the small", n_words=15, temperature=1.5, seed=s) for s in range(2, 7)}
    assert len(others | {a}) > 1  # a temperature above 0 samples
    lm.model.train()
    lm.predict("the small", n_words=3, seed=0)
    assert lm.model.training and lm.model.encoder.hidden is None  # mode put back, carried state reset


def test_predict_arguments_are_checked(lm):
    with pytest.raises(ValueError, match="temperature=-1"):
        lm.predict("the", n_words=2, temperature=-1)
    with pytest.raises(TypeError, match="must be a str"):
        lm.predict(["the"], n_words=2)


def _write_model_folder(folder, config):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.json").write_text("{}")  # what a RoBERTa folder holds instead of vocab.txt
    (folder / "merges.txt").write_text("")
    return folder


def test_a_roberta_folder_names_its_architecture_and_what_supports_it(tmp_path):
    folder = _write_model_folder(tmp_path / "roberta-base", {"model_type": "roberta",
                                                            "architectures": ["RobertaForMaskedLM"]})
    with pytest.raises(ValueError) as info:
        load_bert(folder)
    message = str(info.value)
    for part in ("model_type='roberta'", "RobertaForMaskedLM", "BERT-family", "pip install transformers",
                 str(folder)):
        assert part in message, part
    data = TextDataBunch.from_lists(["good film"] * 8 + ["bad film"] * 8, ["pos"] * 8 + ["neg"] * 8, seed=0,
                                    batch_size=4, min_freq=1, device="cpu")
    with pytest.raises(ValueError, match="model_type='roberta'"):
        text_classifier_learner(data, "bert", weights=folder)  # the built-in BERT, asked for by name
