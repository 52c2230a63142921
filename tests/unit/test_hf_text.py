"""text_classifier_learner on any Hugging Face encoder (text/hf.py): tiny random models of seven architectures
saved with `save_pretrained` and tokenizers trained here (hf_models.py); the hub cache and offline errors
(core/hub.py); LoRA (learner/lora.py)."""
from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from torch import nn

import learnkit as lk
from learnkit.core.hub import ModelNotCached, cached_snapshot, resolve_model_dir
from learnkit.learner.lora import LoRALinear, add_lora, merge_lora
from learnkit.text import TextDataBunch, text_classifier_learner

transformers = pytest.importorskip("transformers")  # in the dev extra: runs in CI
from hf_models import ARCHS, DEBERTA_V3, write_hf_model  # noqa: E402

TEXTS = [("the cat sat on the mat" if i % 2 else "hello world big dog") + " !" * (i % 3) for i in range(48)]
LABELS = ["cat" if i % 2 else "dog" for i in range(48)]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {arch: write_hf_model(root / arch, arch) for arch in ARCHS}


def data():
    return TextDataBunch.from_lists(TEXTS, LABELS, seed=0, batch_size=8, device="cpu", min_freq=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_any_encoder_trains_predicts_exports_and_reloads(arch, folders, tmp_path):
    lk.set_seed(0)
    learn = text_classifier_learner(data(), folders[arch], max_len=12, progress=False, path=tmp_path)
    model = learn.model
    assert type(model).__name__ == "HFClassifier" and type(model.encoder).__module__.startswith("transformers.")
    # embeddings, layers 0-1, head: every parameter in exactly one group
    assert len(learn.layer_groups) == 3
    ids = [id(p) for g in learn.layer_groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    x, _ = learn.data.one_batch()
    assert x.shape[1] <= 12 and learn.data.x_block.pad_idx == 0   # max_len counts [CLS] and [SEP]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learn.fit_one_cycle(1, 1e-3)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("encoder."))
    label, index, probs = learn.predict("the cat sat on the mat")
    assert label in ("cat", "dog") and probs.shape == (2,)
    predictor = lk.load_learner(learn.export("bundle"), device="cpu")
    torch.testing.assert_close(predictor.predict("the cat sat on the mat")[2], probs, atol=1e-5, rtol=0)


def test_pretrained_weights_load_bit_exact_once_and_a_mismatched_config_names_the_folder(folders, tmp_path):
    import json
    import shutil

    from safetensors.torch import load_file

    from learnkit.text.hf import hf_classifier_from_dir
    saved = load_file(str(folders["bert"] / "model.safetensors"))
    model, _ = hf_classifier_from_dir(folders["bert"], n_out=3)
    state = model.encoder.state_dict()
    assert all(not t.is_meta for t in model.state_dict().values())
    assert model.head[1].out_features == 3 and model.head[1].weight.abs().sum() > 0
    assert saved and all(torch.equal(state[k], v.float()) for k, v in saved.items() if k in state)
    assert len([k for k in saved if k in state]) == len(saved)  # every saved tensor is in the encoder
    on_disk = (folders["bert"] / "model.safetensors").read_bytes()
    with torch.no_grad():  # training writes into the loaded weights: never into the (memory-mapped) file
        for p in model.parameters():
            p.add_(1.0)
    assert (folders["bert"] / "model.safetensors").read_bytes() == on_disk
    assert model.training and all(m.training for m in model.modules())  # from_pretrained's eval mode undone
    # a masked-LM checkpoint has no pooler (which the classifier never uses): it loads, the rest bit-exact
    from transformers import AutoConfig, AutoModelForMaskedLM
    mlm = shutil.copytree(folders["roberta"], tmp_path / "roberta-mlm")
    torch.manual_seed(1)
    AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(mlm)).save_pretrained(mlm)
    assert not any(k.startswith(("pooler.", "roberta.pooler.")) for k in load_file(str(mlm / "model.safetensors")))
    from_mlm, _ = hf_classifier_from_dir(mlm, n_out=2)
    reference = AutoModelForMaskedLM.from_pretrained(str(mlm)).roberta.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in from_mlm.encoder.state_dict().items() if "pooler" not in k)
    bad = shutil.copytree(folders["bert"], tmp_path / "bert-4-layers")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))  # weights hold 2 layers
    with pytest.raises(ValueError, match="bert-4-layers: its weights lack.*config.json belongs to the weights"):
        hf_classifier_from_dir(bad, n_out=3)


def test_padding_does_not_change_a_documents_logits(folders):
    learn = text_classifier_learner(data(), "transformers", weights=folders["roberta"], progress=False)
    model, block = learn.model.eval(), learn.data.x_block
    short, long = block.encode("the cat"), block.encode("hello world big dog and a cat")
    with torch.no_grad():
        alone = model(short[None])
        padded = model(block.collate([short, long]))[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)


def test_export_torch_takes_token_ids_of_any_batch_and_length(folders, tmp_path):
    learn = text_classifier_learner(data(), "transformers", weights=folders["bert"], max_len=12, progress=False,
                                    path=tmp_path)
    path = learn.export_torch(tmp_path / "model.pt2")
    program = torch.export.load(str(path)).module()
    block = learn.data.x_block
    ids = block.collate([block.encode(t) for t in ("the cat sat", "hello world big dog dog", "a")])
    learn.model.eval()
    with torch.no_grad():
        expected = torch.softmax(learn.model(ids), -1)
    torch.testing.assert_close(program(ids), expected, atol=1e-5, rtol=0)
    side = (tmp_path / "model.pt2.tokenizer.json").read_text()
    assert '"kind": "hf"' in side and "[CLS]" in side    # the tokenizer's own tokenizer.json rides beside it
    card = json.loads((tmp_path / "model.pt2.card.json").read_text())
    spec = card["input"]
    assert spec["vocab_size"] == len(block.tokenizer) and spec["pad_id"] == 0 and "from_str" in \
        spec["tokenizer"]["tokenizer_json"]


def test_export_onnx_of_a_transformers_model_runs_in_onnxruntime(folders, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    learn = text_classifier_learner(data(), "transformers", weights=folders["bert"], max_len=12, progress=False,
                                    path=tmp_path)
    path = learn.export_onnx(tmp_path / "model.onnx")
    block = learn.data.x_block
    session = ort.InferenceSession(str(path))
    learn.model.eval()
    for texts in (["the cat sat", "hello world big dog dog", "a"], ["the cat sat on the mat !"]):  # batch and length vary
        ids = block.collate([block.encode(t) for t in texts])
        with torch.no_grad():
            expected = torch.softmax(learn.model(ids), -1)
        got = session.run(None, {"input_ids": ids.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
    assert (tmp_path / "model.onnx.tokenizer.json").is_file()


def test_hub_id_resolves_from_the_standard_cache_layout(folders, tmp_path):
    snapshot = tmp_path / "hub-cache" / "models--some-org--tiny-bert" / "snapshots" / ("ab" * 20)
    shutil.copytree(folders["electra"], snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("ab" * 20)
    assert cached_snapshot("some-org/tiny-bert") == snapshot
    learn = text_classifier_learner(data(), "some-org/tiny-bert", progress=False)
    assert type(learn.model.encoder).__name__ == "ElectraModel"


def test_offline_and_not_cached_is_one_clear_error(tmp_path):
    with pytest.raises(ModelNotCached) as info:
        text_classifier_learner(data(), "some-org/not-cached", progress=False)
    message = str(info.value)
    for part in ("'some-org/not-cached'", str(tmp_path / "hub-cache" / "models--some-org--not-cached"),
                 "HF_HUB_OFFLINE=1", "hf download some-org/not-cached"):
        assert part in message, part


def test_failed_download_is_the_same_error(monkeypatch):
    import huggingface_hub
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(ModelNotCached, match=r"download failed \(OSError: Temporary failure.*hf download org/x"):
        resolve_model_dir("org/x")


def test_without_transformers_the_builtin_bert_still_works_and_hub_ids_name_the_extra(folders, monkeypatch,
                                                                                      tmp_path):
    from test_transformer import write_model_dir
    for name in ("transformers", "huggingface_hub"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    monkeypatch.delenv("HF_HUB_OFFLINE")
    bert = text_classifier_learner(data(), write_model_dir(tmp_path / "tiny-bert"), progress=False)
    assert type(bert.model).__name__ == "TransformerClassifier"
    with pytest.raises(ImportError, match=r'learnkit\[hf\]'):
        text_classifier_learner(data(), "org/some-model", progress=False)
    with pytest.raises(ImportError, match=r'needs Hugging Face transformers.*learnkit\[hf\]'):
        text_classifier_learner(data(), folders["roberta"], progress=False)


def test_lora_layer_starts_equal_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    layer = LoRALinear(nn.Linear(8, 6), rank=2, alpha=4)
    layer.base.load_state_dict(base.state_dict())
    x = torch.randn(5, 8)
    torch.testing.assert_close(layer(x), base(x))            # B starts at zero
    with torch.no_grad():
        layer.lora_b.normal_()
    adapted = layer(x)
    assert not torch.allclose(adapted, base(x))
    torch.testing.assert_close(layer.merged()(x), adapted, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"its Linear layers are named \['fc'\]"):
        add_lora(_Fc(), rank=2)


class _Fc(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
def test_fine_tune_lora_trains_adapters_and_head_only_and_merges(arch, folders, tmp_path):
    lk.set_seed(0)
    learn = text_classifier_learner(data(), "transformers", weights=folders[arch], progress=False, path=tmp_path)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.fine_tune(1, base_lr=1e-2, lora=4, keep_best=False)
    report = learn.lora_report
    assert 0 < report["trainable_params"] < report["total_params"] / 3
    after = learn.model.state_dict()
    assert set(after) == set(before)                     # merged: the model's own names again
    assert not any(isinstance(m, LoRALinear) for m in learn.model.modules())
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    projections = ("query", "key", "value", "query_proj", "key_proj", "value_proj")
    # the head phase trains the head and, with train_bn, the LayerNorms; the LoRA phase adds the q/k/v updates
    others = {k for k in changed if not (k.startswith("head.") or "LayerNorm" in k or k.split(".")[-2] in projections)}
    assert changed and not others, others
    assert any(k.split(".")[-2] in projections for k in changed)
    assert all(p.requires_grad for p in learn.model.parameters())   # left unfrozen, like fine_tune
    predictor = lk.load_learner(learn.export("lora"), device="cpu")
    torch.testing.assert_close(predictor.predict("the cat sat")[2], learn.predict("the cat sat")[2], atol=1e-5,
                               rtol=0)


def test_merge_lora_counts_and_builtin_bert_has_projections():
    from test_transformer import CONFIG
    from learnkit.text.transformer import TransformerClassifier
    model = TransformerClassifier(CONFIG, n_out=2, pad_id=0)
    wrapped = add_lora(model, rank=2)
    assert len(wrapped) == 3 * CONFIG["num_hidden_layers"]   # query, key, value per layer
    assert merge_lora(model) == len(wrapped)


def test_gradual_unfreezing_walks_the_hf_layer_groups(folders):
    learn = text_classifier_learner(data(), "transformers", weights=folders["distilbert"], progress=False)
    trainable = []

    class Record(lk.Callback):
        def before_fit(self, learn):
            trainable.append([any(p.requires_grad for p in g.parameters() if p.ndim > 1) for g in learn.layer_groups])
    learn.fine_tune(1, base_lr=1e-3, strategy="gradual", freeze_epochs=1, callbacks=[Record()])
    assert trainable == [[False, False, True], [False, True, True], [True, True, True]]


def test_deberta_relative_positions_are_built_once_per_length_and_exports_build_their_own(tmp_path):
    from learnkit.text.hf import RelativePositions
    folder = write_hf_model(tmp_path / "deberta-v3", "deberta-v2", **DEBERTA_V3)
    learn = text_classifier_learner(data(), "transformers", weights=folder, max_len=12, progress=False, path=tmp_path)
    model, block = learn.model.eval(), learn.data.x_block
    inner = model.encoder.encoder
    (keep,) = [h for h in inner._forward_pre_hooks.values() if isinstance(h, RelativePositions)]
    batches = [block.collate([block.encode(t) for t in texts])
               for texts in (["the cat", "a"], ["a"], ["the cat sat on the mat ! ! ! !"] * 3)]
    with torch.inference_mode():  # tables first built here (a Predictor's mode) still serve training below
        kept = [model(ids) for ids in batches]
    with torch.no_grad():
        tables = dict(keep.tables)
        again = [model(ids) for ids in batches]
        hooks = dict(inner._forward_pre_hooks)
        inner._forward_pre_hooks.clear()  # the encoder building its table in every forward, as transformers does
        rebuilt = [model(ids) for ids in batches]
        inner._forward_pre_hooks.update(hooks)
    lengths = sorted({ids.shape[1] for ids in batches})
    assert len(lengths) == 3 and sorted(k[0] for k in tables) == lengths
    assert all(keep.tables[k] is t for k, t in tables.items())  # built once: the second pass reused them
    for a, b, c in zip(kept, again, rebuilt):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not any(t.is_inference() for t in keep.tables.values())
    model.train()
    model(batches[0]).sum().backward()  # a training step on a table made under inference mode
    model.eval()
    # an exported program builds the table for the length it is given (not the one it was traced at)
    program = torch.export.load(str(learn.export_torch(tmp_path / "model.pt2"))).module()
    for ids, logits in zip(batches, kept):
        torch.testing.assert_close(program(ids), torch.softmax(logits, -1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["roberta", "modernbert"])
def test_export_of_a_model_without_a_traced_length_bound_uses_its_position_limit(arch, folders, tmp_path):
    """RoBERTa's position ids come from a cumsum, so torch.export leaves the length unbounded (int_oo): the card's
    max_tokens is the model's own limit (64 positions less RoBERTa's offset pad_token_id + 1)."""
    learn = text_classifier_learner(data(), "transformers", weights=folders[arch], max_len=12, progress=False,
                                    path=tmp_path)
    block = learn.data.x_block
    ids = block.collate([block.encode(t) for t in ("the cat sat", "hello world big dog dog", "a")])
    learn.model.eval()
    with torch.no_grad():
        expected = torch.softmax(learn.model(ids), -1)
    program = torch.export.load(str(learn.export_torch(tmp_path / "model.pt2"))).module()
    torch.testing.assert_close(program(ids), expected, atol=1e-5, rtol=0)
    config = learn.model.encoder.config
    limit = config.max_position_embeddings - (config.pad_token_id + 1 if arch == "roberta" else 0)
    assert json.loads((tmp_path / "model.pt2.card.json").read_text())["input"]["max_tokens"] == limit
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    session = ort.InferenceSession(str(learn.export_onnx(tmp_path / "model.onnx")))
    got = session.run(None, {"input_ids": ids.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-4, rtol=0)
