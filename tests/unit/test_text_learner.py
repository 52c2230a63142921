"""The ULMFiT workflow end to end on tiny synthetic text: LM, encoder transfer with vocab remapping,
gradual unfreezing, predict, export, top losses."""
import pytest
import torch

import learnkit as lk
from learnkit.text import (TextDataBunch, language_model_learner, save_encoder,
                           text_classifier_learner, top_losses)

TINY = {"emb_size": 16, "hidden_size": 24, "n_layers": 2}
POS = ["great", "lovely", "superb", "fine", "happy"]
NEG = ["awful", "bad", "terrible", "sad", "poor"]


def _corpus(n=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i in range(n):
        words = POS if i % 2 else NEG
        picks = torch.randint(0, 5, (6,), generator=g).tolist()
        texts.append("the movie was " + " ".join(words[p] for p in picks) + " indeed")
        labels.append("pos" if i % 2 else "neg")
    return texts, labels


def test_ulmfit_workflow(tmp_path):
    lk.set_seed(0)
    texts, labels = _corpus(320)
    lm_data = TextDataBunch.from_lists(texts, is_lm=True, seed=0, batch_size=8, bptt=12, min_freq=1, device="cpu")
    lm = language_model_learner(lm_data, config=TINY, path=tmp_path, progress=False, drop_mult=0.1)
    assert len(lm.layer_groups) == 3
    lm.fit_one_cycle(2, 1e-2)
    assert lm.history.epoch_records[-1]["perplexity"] < len(lm_data.x_block.vocab)
    save_encoder(lm, "enc")

    clas_data = TextDataBunch.from_lists(texts, labels, seed=0, batch_size=16, min_freq=1, device="cpu",
                                         block=lk.text.TextBlock(vocab=None, min_freq=1))
    clas = text_classifier_learner(clas_data, config=TINY, path=tmp_path, progress=False, encoder="enc",
                                   drop_mult=0.1, metrics=[lk.accuracy])
    emb = clas.model.encoder.embedding.weight
    lm_emb = lm.model.encoder.embedding.weight.cpu()
    lm_stoi = lm_data.x_block.vocab.stoi
    for tok in ("movie", "great", "awful"):
        new_id = clas_data.x_block.vocab.stoi[tok]
        assert torch.equal(emb[new_id].detach(), lm_emb[lm_stoi[tok]].detach())
    assert clas.encoder_transfer["shared_tokens"] > 10
    clas.fine_tune(4, base_lr=2e-2, strategy="gradual", freeze_epochs=1)
    assert len(clas.history.epoch_records) == 1 + (len(clas.layer_groups) - 2) + 4
    assert clas.history.epoch_records[-1]["accuracy"] >= 0.9
    label, index, probs = clas.predict("the movie was great lovely superb indeed")
    assert label == "pos" and probs.shape == (2,) and abs(float(probs.sum()) - 1) < 1e-5
    worst = top_losses(clas, k=3)
    assert len(worst) == 3 and worst[0]["loss"] >= worst[-1]["loss"] and "movie" in worst[0]["text"]

    folder = clas.export("clf")
    predictor = lk.load_learner(folder, device="cpu")
    label2, index2, probs2 = predictor.predict("the movie was great lovely superb indeed")
    assert (label2, index2) == (label, index) and torch.allclose(probs, probs2, atol=1e-6)
    texts_in = ["the movie was awful bad terrible sad poor awful indeed", "the movie was great indeed"]
    labels_batch, probs_batch = predictor.predict_batch(texts_in)  # padded together, different lengths
    assert labels_batch == ["neg", "pos"]
    for text, p in zip(texts_in, probs_batch):
        assert torch.allclose(predictor.predict(text)[2], p, atol=1e-5)  # padding does not leak


def test_pretrained_lm_bundle_is_remapped_to_new_vocab(tmp_path):
    texts, _ = _corpus()
    data_a = TextDataBunch.from_lists(texts, is_lm=True, seed=0, batch_size=8, bptt=12, min_freq=1, device="cpu")
    lm_a = language_model_learner(data_a, config=TINY, path=tmp_path, progress=False)
    lm_a.fit(1, 1e-3)
    bundle = lm_a.export("lm_a")
    other = [t.replace("indeed", "really truly") for t in texts]
    data_b = TextDataBunch.from_lists(other, is_lm=True, seed=0, batch_size=8, bptt=12, min_freq=1, device="cpu")
    lm_b = language_model_learner(data_b, config=TINY, path=tmp_path, progress=False, weights=bundle)
    itos_a, stoi_b = data_a.x_block.vocab.itos, data_b.x_block.vocab.stoi
    emb_a, emb_b = lm_a.model.encoder.embedding.weight, lm_b.model.encoder.embedding.weight
    for i, tok in enumerate(itos_a):
        if tok in stoi_b:
            assert torch.equal(emb_a[i], emb_b[stoi_b[tok]])
    mean = emb_a.mean(0)
    assert torch.allclose(emb_b[stoi_b["truly"]], mean, atol=1e-6)
    assert lm_b.model.decoder.weight is lm_b.model.encoder.embedding.weight
    assert not lm_b.model.encoder.layers[0].weight_ih_l0.requires_grad and emb_b.requires_grad  # frozen, emb trains
    with pytest.raises(FileNotFoundError, match="recipe.json"):
        language_model_learner(data_b, config=TINY, weights=tmp_path / "nowhere", progress=False)


def test_transformer_one_liner_trains_exports_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from test_transformer import write_model_dir  # the tiny random BERT folder in Hugging Face's layout
    folder = write_model_dir(tmp_path / "tiny-bert")
    lk.set_seed(0)
    texts = [("the cat sat on the mat" if i % 2 else "hello world big dog") + " !" * (i % 3) for i in range(96)]
    labels = ["cat" if i % 2 else "dog" for i in range(96)]
    data = TextDataBunch.from_lists(texts, labels, seed=0, batch_size=16, device="cpu", min_freq=1)
    learn = text_classifier_learner(data, weights=folder, metrics=[lk.accuracy], progress=False, path=tmp_path, max_len=12)
    assert learn.data is not data and isinstance(learn.data.x_block, lk.text.SubwordTextBlock)
    assert learn.data.split == data.split and learn.data.classes == data.classes       # same texts and split
    assert len(learn.layer_groups) == 3                                            # embeddings, layers 0-1, head
    ids, _ = learn.data.one_batch()
    assert ids[0, 0].item() == 2 and ids.shape[1] <= 12                            # [CLS] first, max_len kept
    learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1)  # fastai's one-epoch head phase (tiny data: 5 batches)
    assert learn.validate()["accuracy"] == 1.0
    label, _, probs = learn.predict("the cat sat on the mat")
    assert label == "cat"
    predictor = lk.load_learner(learn.export("bert"), device="cpu")
    assert predictor.predict("the cat sat on the mat")[0] == "cat"
    assert torch.allclose(predictor.predict("the cat sat on the mat")[2], probs, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="'some-org/not-cached-model' is not in the Hugging Face cache"):
        text_classifier_learner(data, weights="some-org/not-cached-model", progress=False)
