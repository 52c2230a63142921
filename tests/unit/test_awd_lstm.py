"""AWD-LSTM encoder, language model, classifier, splitters and the AR/TAR callback (tiny sizes, CPU)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from learnkit.core.registry import create_model, model_spec
from learnkit.text.awd_lstm import (AWDLSTM, CLASSIFIER_DROPOUTS, LM_DROPOUTS, LanguageModel, RNNRegularizer,
                                    TextClassifier, classifier_splitter, lm_splitter)

V, E, H, N = 50, 16, 24, 2
SIZES = dict(emb_size=E, hidden_size=H, n_layers=N)
NO_DROP = dict(hidden_p=0.0, input_p=0.0, embed_p=0.0, weight_p=0.0)


def tokens(b=3, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, V, (b, length), generator=g)


def test_shapes():
    torch.manual_seed(0)
    x = tokens()
    enc = AWDLSTM(V, **SIZES)
    assert enc(x).shape == (3, 7, E)
    assert [o.shape[-1] for o in enc.last_raw_outputs] == [H, E]
    assert len(enc.last_outputs) == N
    assert LanguageModel(V, **SIZES)(x).shape == (3, 7, V)
    assert TextClassifier(V, 4, **SIZES)(x).shape == (3, 4)
    with pytest.raises(ValueError, match="batch, length"):
        enc(x[0])


def test_embedding_init_and_pad_row():
    enc = AWDLSTM(V, **SIZES, pad_idx=1)
    w = enc.embedding.weight
    assert w.abs().max() <= 0.1 and torch.all(w[1] == 0)


def test_default_dropouts_scale_with_drop_mult():
    lm = LanguageModel(V, **SIZES, drop_mult=0.5)
    e = lm.encoder
    got = dict(output_p=e.output_p, hidden_p=e.hidden_p, input_p=e.input_p, embed_p=e.embed_p, weight_p=e.weight_p)
    assert got == pytest.approx({k: v * 0.5 for k, v in LM_DROPOUTS.items()})
    clf = TextClassifier(V, 2, **SIZES)
    assert clf.encoder.weight_p == CLASSIFIER_DROPOUTS["weight_p"] and clf.head[1].p == CLASSIFIER_DROPOUTS["output_p"]
    assert clf.head[5].p == pytest.approx(0.1)


def test_tied_weights_stay_tied_after_a_step():
    torch.manual_seed(0)
    lm = LanguageModel(V, **SIZES)
    assert lm.decoder.weight is lm.encoder.embedding.weight
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    x = tokens()
    F.cross_entropy(lm(x).reshape(-1, V), x.reshape(-1)).backward()
    opt.step()
    assert lm.decoder.weight is lm.encoder.embedding.weight
    untied = LanguageModel(V, **SIZES, tie_weights=False)
    assert untied.decoder.weight is not untied.encoder.embedding.weight


def test_weight_dropout_training_only_and_raw_weight_gets_gradients():
    torch.manual_seed(0)
    enc = AWDLSTM(V, **SIZES, hidden_p=0.0, input_p=0.0, embed_p=0.0, weight_p=0.5)
    raw = enc.layers[0].weight_hh_l0
    dropped = enc.hh_weight(0)
    zeros = (dropped == 0).float().mean().item()
    assert 0.35 < zeros < 0.65
    kept = dropped != 0
    assert torch.allclose(dropped[kept], raw[kept] * 2)
    x = tokens()
    a, b = enc(x), enc(x)
    assert not torch.allclose(a, b)  # weight dropout is the only randomness left
    (a.sum() + b.sum()).backward()
    for lstm in enc.layers:
        assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0
    enc.eval()
    assert torch.equal(enc.hh_weight(0), raw)
    fresh = AWDLSTM(V, **SIZES, **NO_DROP)
    fresh.load_state_dict(enc.state_dict())
    with torch.no_grad():  # the LSTMs went back to their raw weights after the substituted calls
        assert torch.equal(enc.eval()(x), fresh.eval()(x))
    with torch.no_grad():
        ref = enc(x)
        enc.train()
        enc.weight_p = 0.0
        assert torch.allclose(enc(x), ref)  # eval output == training without any dropout


def test_embedding_dropout_drops_whole_rows():
    enc = AWDLSTM(V, **SIZES, hidden_p=0.0, input_p=0.0, embed_p=0.5, weight_p=0.0)
    x = torch.full((4, 9), 7)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        e = enc.embed(x)
        if torch.all(e == 0):
            seen.add("dropped")
        else:
            assert torch.allclose(e, enc.embedding.weight[7].expand_as(e) * 2)  # every position kept, scaled
            seen.add("kept")
    assert seen == {"dropped", "kept"}
    enc.eval()
    assert torch.equal(enc.embed(x), enc.embedding.weight[7].expand(4, 9, E))


def test_eval_is_deterministic():
    torch.manual_seed(0)
    x = tokens()
    for model in (AWDLSTM(V, **SIZES), LanguageModel(V, **SIZES), TextClassifier(V, 3, **SIZES)):
        model.eval()
        with torch.no_grad():
            first = model(x)
            model.reset()  # the LM is stateful: same state, same output
            assert torch.equal(model(x), first)


def test_stateful_lm_carries_and_detaches_hidden_state():
    torch.manual_seed(0)
    lm = LanguageModel(V, **SIZES).eval()
    x = tokens()
    with torch.no_grad():
        first, second = lm(x), lm(x)
        assert not torch.allclose(first, second)  # the second call starts from the first's final state
        lm.reset()
        assert torch.equal(lm(x), first)
        assert lm(x[:2]).shape == (2, 7, V)  # a new batch size starts afresh
        assert torch.allclose(lm(x[:2]), second[:2], atol=1e-6)
    lm.train()
    lm.reset()
    out1 = lm(x)
    assert all(not h.requires_grad and not c.requires_grad for h, c in lm.encoder.hidden)
    out2 = lm(x)
    out2.sum().backward()
    out1.sum().backward()  # would fail had the second graph reached into (and freed) the first
    # non-stateful: every call starts from zeros
    enc = AWDLSTM(V, **SIZES).eval()
    with torch.no_grad():
        assert torch.equal(enc(x), enc(x)) and enc.hidden is None


def test_classifier_pooling_ignores_padding():
    torch.manual_seed(0)
    clf = TextClassifier(V, 3, **SIZES, pad_idx=1)
    clf.train()
    clf(tokens(8, 6))  # give the BatchNorms some running statistics
    clf.eval()
    x = tokens(3, 6)
    padded = torch.cat([x, torch.full((3, 5), 1)], dim=1)
    ragged = padded.clone()
    ragged[0, 4:] = 1  # a shorter row must equal that row alone
    with torch.no_grad():
        assert torch.allclose(clf(x), clf(padded), atol=1e-6)
        assert torch.allclose(clf(ragged)[0], clf(x[:1, :4])[0], atol=1e-6)
        pooled = clf.pool(torch.randn(2, 4, E), torch.tensor([[5, 6, 1, 1], [1, 1, 1, 1]]))
        assert torch.all(pooled[1] == 0)
        all_pad = torch.cat([x, torch.full((1, 6), 1)])
        out = clf(all_pad)
    assert torch.isfinite(out).all()
    clf.train()
    assert torch.isfinite(clf(all_pad)).all()


def test_classifier_pool_values():
    clf = TextClassifier(V, 2, **SIZES, pad_idx=1)
    out = torch.randn(1, 5, E)
    pooled = clf.pool(out, torch.tensor([[4, 5, 6, 1, 1]]))
    real = out[0, :3]
    expected = torch.cat([real[-1], real.max(0).values, real.mean(0)])
    assert torch.allclose(pooled[0], expected)


def _ar_tar(enc, alpha, beta):
    out, raw = enc.last_outputs[-1], enc.last_raw_outputs[-1]
    ar = alpha * (out ** 2).mean()
    tar = beta * ((raw[:, 1:] - raw[:, :-1]) ** 2).mean()
    return ar + tar


def test_rnn_regularizer_adds_ar_and_tar_to_loss_grad_only():
    torch.manual_seed(0)
    lm = LanguageModel(V, **SIZES).train()
    x = tokens()
    pred = lm(x)
    loss = F.cross_entropy(pred.reshape(-1, V), x.reshape(-1))
    learn = SimpleNamespace(training=True, model=lm, loss=loss, loss_grad=loss)
    cb = RNNRegularizer(alpha=2.0, beta=1.0)
    assert cb.order == 0
    cb.after_loss(learn)
    assert learn.loss is loss
    expected = loss + _ar_tar(lm.encoder, 2.0, 1.0)
    assert torch.allclose(learn.loss_grad, expected)
    assert learn.loss_grad.item() > loss.item()
    learn.loss_grad.backward()  # differentiable through the activations
    # validation: untouched
    plain = loss.detach()
    val = SimpleNamespace(training=False, model=lm, loss=plain, loss_grad=plain)
    cb.after_loss(val)
    assert val.loss_grad is val.loss
    with pytest.raises(TypeError, match="no AWDLSTM"):
        cb.after_loss(SimpleNamespace(training=True, model=torch.nn.Linear(2, 2), loss=loss, loss_grad=loss))


def _assert_exact_cover(model, groups):
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}


def test_splitters_cover_every_parameter_once():
    lm = LanguageModel(V, **SIZES)
    groups = lm_splitter(lm)
    assert len(groups) == N + 1
    _assert_exact_cover(lm, groups)
    # ULMFiT: the (tied) embedding trains with the decoder in the last group, so a frozen LM still adapts
    # the vectors of new tokens.
    assert any(p is lm.encoder.embedding.weight for p in groups[-1].parameters())
    assert any(p is lm.decoder.bias for p in groups[-1].parameters())
    assert all(g is lm.encoder.layers[i] for i, g in enumerate(groups[:-1]))
    untied = LanguageModel(V, **SIZES, tie_weights=False)
    _assert_exact_cover(untied, lm_splitter(untied))
    clf = TextClassifier(V, 3, **SIZES)
    groups = classifier_splitter(clf)
    assert len(groups) == N + 2 and groups[-1] is clf.head
    _assert_exact_cover(clf, groups)


def test_create_model_round_trip_and_encoder_transfer():
    lm = create_model("awd_lstm_lm", vocab_size=V, drop_mult=0.3, **SIZES)
    assert isinstance(lm, LanguageModel) and model_spec(lm)["name"] == "awd_lstm_lm"
    clf = create_model("awd_lstm_classifier", vocab_size=V, n_out=2, **SIZES)
    assert isinstance(clf, TextClassifier) and model_spec(clf)["kwargs"]["n_out"] == 2
    spec = model_spec(lm)
    again = create_model(spec["name"], **spec["kwargs"])
    again.load_state_dict(lm.state_dict())
    clf.encoder.load_state_dict(lm.encoder.state_dict(), strict=True)
    for (n1, p1), (n2, p2) in zip(lm.encoder.named_parameters(), clf.encoder.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_tiny_lm_learns_a_repeating_pattern():
    # Stateful truncated BPTT over a stream: each row is a contiguous chunk, read in two bptt windows.
    torch.manual_seed(0)
    stream = torch.tensor([2, 3, 4, 5, 6, 7, 8, 9]).repeat(13)
    x, y = stream[:96].reshape(4, 24), stream[1:97].reshape(4, 24)
    lm = LanguageModel(16, emb_size=64, hidden_size=64, n_layers=2, drop_mult=0.2)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    losses = []
    for step in range(100):
        if step % 2 == 0:
            lm.reset()
        window = slice(0, 12) if step % 2 == 0 else slice(12, 24)
        loss = F.cross_entropy(lm(x[:, window]).reshape(-1, 16), y[:, window].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5, losses[-10:]
