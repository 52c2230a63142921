"""Bad input on the transformers path gets a clear error naming the folder/argument and the fix, never a silently
wrong model: folders without a tokenizer or weights, a tokenizer of another model, decoder and encoder-decoder
models, out-of-range max_len, incomplete cached snapshots, empty documents at predict."""
from __future__ import annotations

import json
import shutil

import pytest

from learnkit.core.hub import ModelNotCached, resolve_model_dir
from learnkit.data.pipeline import PipelineError
from learnkit.text import TextDataBunch, text_classifier_learner
from learnkit.text.hf import TOKENIZER_FILES

transformers = pytest.importorskip("transformers")  # in the dev extra: runs in CI
from hf_models import write_hf_model  # noqa: E402

TEXTS = [("the cat sat on the mat" if i % 2 else "hello world big dog") for i in range(32)]
LABELS = ["cat" if i % 2 else "dog" for i in range(32)]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {arch: write_hf_model(root / arch, arch) for arch in ("bert", "roberta")}


def data():
    return TextDataBunch.from_lists(TEXTS, LABELS, seed=0, batch_size=8, device="cpu", min_freq=1)


def copy_without(folder, tmp_path, names):
    out = tmp_path / f"{folder.name}-copy"
    shutil.copytree(folder, out)
    for name in names:
        (out / name).unlink(missing_ok=True)
    return out


def test_a_folder_without_tokenizer_files_is_an_error_not_an_empty_tokenizer(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path, TOKENIZER_FILES + ("special_tokens_map.json",))
    with pytest.raises(FileNotFoundError, match="no tokenizer file") as info:
        text_classifier_learner(data(), folder, progress=False)
    assert str(folder) in str(info.value) and "save_pretrained" in str(info.value)


def test_a_tokenizer_of_another_model_is_caught_before_its_ids_overflow_the_embeddings(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path, ["tokenizer.json", "tokenizer_config.json"])
    for name in ("tokenizer.json", "tokenizer_config.json"):  # roberta's 300-token BPE on bert's small table
        shutil.copy(folders["roberta"] / name, folder / name)
    with pytest.raises(ValueError, match=r"tokenizer has 300 tokens but config.json's vocab_size is \d+;"):
        text_classifier_learner(data(), folder, progress=False)


def test_a_folder_without_weights_names_them_and_pretrained_false_still_builds(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path, ["model.safetensors"])
    with pytest.raises(FileNotFoundError, match="no weights file.*pretrained=False") as info:
        text_classifier_learner(data(), folder, progress=False)
    assert str(folder) in str(info.value)
    learn = text_classifier_learner(data(), folder, pretrained=False, progress=False)
    assert type(learn.model.encoder).__name__ == "BertModel"


@pytest.mark.parametrize("model_type, kind", [("gpt2", "a decoder"), ("t5", "an encoder-decoder")])
def test_decoder_and_encoder_decoder_models_are_refused_at_build(model_type, kind, tmp_path):
    folder = tmp_path / model_type
    transformers.AutoConfig.for_model(model_type).save_pretrained(folder)  # the check reads config.json first
    with pytest.raises(ValueError, match=kind) as info:
        text_classifier_learner(data(), folder, progress=False)
    assert str(folder) in str(info.value) and f"model_type='{model_type}'" in str(info.value)


@pytest.mark.parametrize("max_len, error, match", [
    (0, ValueError, "at least 3"), (-5, ValueError, "at least 3"), (2, ValueError, "at least 3"),
    (True, TypeError, "whole number"), (12.0, TypeError, "whole number"),
    (65, ValueError, "at most 64 tokens.*max_len=64")])
def test_max_len_outside_what_the_model_takes_is_an_error(max_len, error, match, folders):
    with pytest.raises(error, match=match):
        text_classifier_learner(data(), folders["bert"], max_len=max_len, progress=False)


def test_max_len_defaults_to_the_model_limit_when_smaller_and_counts_robertas_offset(folders):
    learn = text_classifier_learner(data(), folders["bert"], progress=False)  # 64 positions < 256
    assert learn.data.x_block.max_len == 64 and learn.model.max_positions == 64
    learn = text_classifier_learner(data(), folders["roberta"], progress=False)
    config = learn.model.encoder.config
    assert learn.data.x_block.max_len == 64 - (config.pad_token_id + 1) == learn.model.max_positions
    with pytest.raises(ValueError, match=f"at most {learn.model.max_positions} tokens"):
        text_classifier_learner(data(), folders["roberta"], max_len=64, progress=False)
    # the longest text the tokenizer gives fits the position table (RoBERTa's would overflow at 64)
    block = learn.data.x_block
    block.max_len = None
    ids = block.encode(" ".join(["cat"] * 200))
    assert len(ids) == learn.model.max_positions
    learn.model.eval()(ids[None])  # no index error


@pytest.mark.parametrize("model_type", ["mpnet", "data2vec-text"])
def test_positions_counted_from_the_pad_id_set_the_limit_whatever_the_model_type(model_type, tmp_path):
    """MPNet and Data2Vec count positions from pad_token_id + 1 like RoBERTa (their tables' padding_idx says so):
    the default max_len is that limit, a text of that many tokens runs, one more is refused."""
    folder = write_hf_model(tmp_path / model_type, model_type)
    long = " ".join(["the cat sat on the mat"] * 30)
    learn = text_classifier_learner(data(), folder, progress=False)
    table = learn.model.encoder.embeddings.position_embeddings  # MPNet's padding_idx is 1 whatever the config says
    limit = 64 - (table.padding_idx + 1)
    assert learn.model.max_positions == limit == learn.data.x_block.max_len and limit < 64
    assert len(learn.data.x_block.encode(long)) == limit
    assert learn.predict(long)[0] in ("cat", "dog")  # no index error at the limit
    with pytest.raises(ValueError, match=f"at most {limit} tokens"):
        text_classifier_learner(data(), folder, max_len=limit + 1, progress=False)


def test_a_short_tokenizer_model_max_length_does_not_silently_cut_a_longer_max_len(folders, tmp_path):
    folder = copy_without(folders["bert"], tmp_path, [])
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 16}))
    learn = text_classifier_learner(data(), folder, max_len=60, progress=False)
    assert len(learn.data.x_block.encode(" ".join(["the cat sat on the mat"] * 30))) == 60


def test_empty_documents_at_predict_are_errors_not_confident_predictions(folders):
    learn = text_classifier_learner(data(), folders["bert"], max_len=12, progress=False)
    for bad in ("", "   \n", "\u200b", "\ufeff \x00\x01"):  # the block's error, wrapped by the data pipeline
        with pytest.raises(PipelineError, match="ValueError: SubwordTextBlock.encode: an empty document"):
            learn.predict(bad)
    with pytest.raises(PipelineError, match="TypeError: SubwordTextBlock.encode: a document is a string, not int"):
        learn.predict(3)
    assert learn.predict("the cat sat")[0] in ("cat", "dog")
    awd = text_classifier_learner(data(), progress=False)  # the AWD-LSTM's TextBlock too
    with pytest.raises(PipelineError, match="TextBlock.encode: an empty document"):
        awd.predict(" ")


def snapshot_of(folder, tmp_path, keep):
    repo = tmp_path / "hub-cache" / "models--org--tiny"
    snapshot = repo / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    for name in keep:
        shutil.copy(folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("ab" * 20)
    return snapshot


def test_an_incomplete_cached_snapshot_offline_says_what_it_lacks(folders, tmp_path):
    snapshot = snapshot_of(folders["bert"], tmp_path, ["config.json"])
    with pytest.raises(ModelNotCached) as info:
        text_classifier_learner(data(), "org/tiny", progress=False)
    message = str(info.value)
    for part in ("'org/tiny'", "HF_HUB_OFFLINE=1 is set", f"its cached snapshot {snapshot} lacks",
                 "tokenizer.json or", "model.safetensors or", "hf download org/tiny"):
        assert part in message, part


def test_an_incomplete_cached_snapshot_online_is_completed_by_a_download(folders, tmp_path, monkeypatch):
    import huggingface_hub
    monkeypatch.delenv("HF_HUB_OFFLINE")
    snapshot = snapshot_of(folders["bert"], tmp_path, ["config.json"])
    calls = []

    def download(repo_id, **kwargs):  # what huggingface_hub would do: fill the snapshot, return it
        calls.append((repo_id, kwargs["allow_patterns"]))
        shutil.copytree(folders["bert"], snapshot, dirs_exist_ok=True)
        return str(snapshot)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    learn = text_classifier_learner(data(), "org/tiny", progress=False)
    assert [c[0] for c in calls] == ["org/tiny"] and "*.safetensors" in calls[0][1]
    assert type(learn.model.encoder).__name__ == "BertModel"


def test_the_offline_error_names_the_variable_that_is_set(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ModelNotCached, match="TRANSFORMERS_OFFLINE=1 is set"):
        resolve_model_dir("org/absent")
