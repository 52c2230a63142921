"""learnkit.text.transformer on a tiny random BERT written to a tmp folder in Hugging Face's layout."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from learnkit import create_model, save_tensors
from learnkit.core.registry import model_spec
from learnkit.text.transformer import (BertConfig, BertEncoder, TransformerClassifier, WordPieceTokenizer,
                                       hf_bert_state_dict, layer_groups, load_bert, load_hf_weights,
                                       transformer_classifier_from_dir)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat", "un", "##aff",
         "##able", "play", "##ing", "##ed", "hello", "world", "cafe", "naive", ".", ",", "!", "?", "'", "s", "t",
         "don", "中", "文", "##s", "1", "##2", "##3", "$", "-", "big", "##ger"]
CONFIG = {"vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "hidden_act": "gelu", "max_position_embeddings": 16, "type_vocab_size": 2,
          "layer_norm_eps": 1e-12, "pad_token_id": 0, "model_type": "bert", "architectures": ["BertModel"]}


def hf_tensors(config: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """A random state dict under Hugging Face's BertModel names (written out here, independent of the mapping)."""
    h, i, n = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    shapes = {"embeddings.word_embeddings.weight": (config["vocab_size"], h),
              "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
              "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
              "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
              "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,)}
    for k in range(n):
        p = f"encoder.layer.{k}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (h, h), (h,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (i, h), (i,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (h, i), (h,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (h,), (h,)
    g = torch.Generator().manual_seed(0)
    out = {prefix + k: torch.randn(s, generator=g) * 0.2 + (1.0 if "LayerNorm.weight" in k else 0.0)
           for k, s in shapes.items()}
    out[prefix + "embeddings.position_ids"] = torch.arange(config["max_position_embeddings"])[None]
    return out


def write_model_dir(path, tensors=None, config=CONFIG, vocab=VOCAB, tokenizer_config=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    if tokenizer_config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    save_tensors(hf_tensors(config) if tensors is None else tensors, path / "model.safetensors")
    return path


@pytest.fixture
def model_dir(tmp_path):
    return write_model_dir(tmp_path / "tiny-bert")


@pytest.fixture
def tok():
    return WordPieceTokenizer(VOCAB)


def pad(seqs, pad_id=0):
    width = max(map(len, seqs))
    return torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])


# ----------------------------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("text, tokens", [
    ("The cat sat on the mat.", ["the", "cat", "sat", "on", "the", "mat", "."]),
    ("Unaffable!", ["un", "##aff", "##able", "!"]),
    ("  playing\tPLAYED\n", ["play", "##ing", "play", "##ed"]),
    ("Café naïve", ["cafe", "naive"]),                         # NFD, accents dropped, lower-cased
    ("don't", ["don", "'", "t"]),                              # punctuation splits words
    ("$1-23", ["$", "1", "-", "[UNK]"]),                       # '23': no word-initial '2' in the vocab
    ("中文s", ["中", "文", "s"]),                                # CJK characters stand alone
    ("bigger dogs", ["big", "##ger", "dog", "##s"]),           # greedy longest match first, '##' continues
    ("cat[SEP]dog [MASK]", ["cat", "[SEP]", "dog", "[MASK]"]),  # spelled-out special tokens stay whole
    ("", []), (" \t\n ", []), ("\x00\x07\ufffd", []),
])
def test_tokenize(tok, text, tokens):
    assert tok.tokenize(text) == tokens


def test_long_and_unknown_words_become_unk(tok):
    assert tok.tokenize("zebra") == ["[UNK]"]
    assert tok.tokenize("cat" + "s" * 97) == ["cat"] + ["##s"] * 97  # 100 characters: still split
    assert tok.tokenize("cat" + "s" * 98) == ["[UNK]"]  # 101 characters: [UNK] without trying
    assert tok.tokenize("catx") == ["[UNK]"]  # one unmatchable piece makes the whole word unknown


def test_encode_decode_and_truncation(tok):
    ids = tok.encode("Hello, world!")
    assert ids == [tok.cls_id, 18, 23, 19, 24, tok.sep_id]
    assert tok.decode(ids) == "hello , world !"
    assert tok.decode(torch.tensor(tok.encode("playing bigger") + [tok.pad_id] * 3)) == "playing bigger"
    assert tok.encode("cat " * 50, max_len=6) == [tok.cls_id, 7, 7, 7, 7, tok.sep_id]
    assert tok.encode("") == [tok.cls_id, tok.sep_id]
    assert (tok.pad_id, tok.unk_id, tok.mask_id, len(tok)) == (0, 1, 4, len(VOCAB))
    with pytest.raises(ValueError, match="max_len=1000"):
        tok.encode("cat", max_len=1000)


def test_tokenizer_config_round_trip_and_from_dir(tmp_path, tok):
    cfg = json.loads(json.dumps(tok.to_config()))
    again = WordPieceTokenizer.from_config(cfg)
    assert again.vocab == VOCAB and again.to_config() == tok.to_config()
    text = "Unaffable cats, 中文 [MASK]!"
    assert again.encode(text) == tok.encode(text)

    folder = write_model_dir(tmp_path / "cased", tokenizer_config={"do_lower_case": False, "model_max_length": 8,
                                                                   "pad_token": {"content": "[PAD]"}})
    cased = WordPieceTokenizer.from_dir(folder)
    assert cased.tokenize("Cat cat") == ["[UNK]", "cat"] and cased.model_max_length == 8
    with pytest.raises(ValueError, match="not in the vocab"):
        WordPieceTokenizer(["a", "b"])


def test_matches_reference_tokenizers_library(tok):
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.Tokenizer(tokenizers.models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    ref.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    ref.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    ref.post_processor = tokenizers.processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    ref.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    for text in ["The cat sat on the mat.", "Unaffable!", "Café naïve", "don't", "$1-23", "中文s", "bigger dogs",
                 "cat[SEP]dog [MASK]", "", " \t\n ", "PLAYED\x07play\u00a0ing", "ΣΑΣ", "a" * 120 + " cat"]:
        assert tok.encode(text) == ref.encode(text).ids, text


# ----------------------------------------------------------------------------------------------- loading
def test_load_bert_round_trip(model_dir):
    encoder, tok, config = load_bert(model_dir)
    tensors = hf_tensors(CONFIG)
    assert not encoder.training and tok.vocab == VOCAB
    assert config == BertConfig.from_dict(CONFIG).to_dict() and json.loads(json.dumps(config)) == config
    assert torch.equal(encoder.layers[1].attention.query.weight, tensors["encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(encoder.layers[0].ffn_norm.bias, tensors["encoder.layer.0.output.LayerNorm.bias"])
    assert torch.equal(encoder.embeddings.word.weight, tensors["embeddings.word_embeddings.weight"])
    assert encoder(pad([tok.encode("the cat sat")])).shape == (1, 5, 32)


def test_state_dict_mapping_prefix_heads_and_errors():
    ours = hf_bert_state_dict(hf_tensors(CONFIG))
    assert set(ours) == set(BertEncoder(CONFIG).state_dict())
    # A BertFor* checkpoint: 'bert.' prefix, task heads outside it are left out, old gamma/beta names work.
    prefixed = hf_tensors(CONFIG, prefix="bert.")
    prefixed["cls.predictions.bias"] = torch.zeros(len(VOCAB))
    prefixed["bert.embeddings.LayerNorm.gamma"] = prefixed.pop("bert.embeddings.LayerNorm.weight")
    assert set(hf_bert_state_dict(prefixed)) == set(ours)

    encoder = BertEncoder(CONFIG)
    broken = hf_tensors(CONFIG)
    del broken["encoder.layer.1.output.dense.bias"]
    with pytest.raises(ValueError, match=r"missing \['layers.1.ffn_out.bias'\]"):
        load_hf_weights(encoder, broken)
    with pytest.raises(ValueError, match="encoder.layer.0.attention.self.rotary"):
        hf_bert_state_dict({**hf_tensors(CONFIG), "encoder.layer.0.attention.self.rotary.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected \['layers.2"):  # a 3-layer file for a 2-layer config
        load_hf_weights(encoder, hf_tensors({**CONFIG, "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"embeddings.word.weight: \(41, 32\) in the file, \(40, 32\)"):
        load_hf_weights(encoder, hf_tensors({**CONFIG, "vocab_size": 41}))


@pytest.mark.parametrize("missing", ["config.json", "vocab.txt", "model.safetensors"])
def test_missing_files_are_named(model_dir, missing):
    (model_dir / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {missing}.*must contain config.json, vocab.txt, "
                                                "model.safetensors"):
        load_bert(model_dir)


def test_missing_folder_and_pickle_only_folder(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError, match="config.json, vocab.txt, model.safetensors: a BERT model folder"):
        load_bert(tmp_path / "nope")
    (model_dir / "model.safetensors").rename(model_dir / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin, a pickle"):
        transformer_classifier_from_dir(model_dir, n_out=2)


def test_config_rejects_what_is_not_implemented():
    with pytest.raises(ValueError, match="model_type='roberta'"):
        BertConfig.from_dict({**CONFIG, "model_type": "roberta"})
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        BertConfig.from_dict({**CONFIG, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="16 positions"):
        BertEncoder(CONFIG)(torch.ones(1, 17, dtype=torch.long))


# ----------------------------------------------------------------------------------------------- model
def test_padding_does_not_leak(model_dir):
    encoder, tok, _ = load_bert(model_dir)
    short, long = tok.encode("the cat sat"), tok.encode("hello world , the dog sat on a big mat !")
    ids = pad([short, long], tok.pad_id)
    with torch.no_grad():
        alone = encoder(torch.tensor([short]))
        batched = encoder(ids, ids != tok.pad_id)
        no_mask = encoder(torch.tensor([short]), None)
    torch.testing.assert_close(batched[0, :len(short)], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(no_mask, alone, atol=0, rtol=0)
    model = TransformerClassifier(CONFIG, n_out=3, pad_id=tok.pad_id).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], model(torch.tensor([short]))[0], atol=1e-5, rtol=0)


def test_layer_matches_torch_transformer_encoder_layer(model_dir):
    encoder, _, _ = load_bert(model_dir)
    layer = encoder.layers[0]
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", layer_norm_eps=1e-12,
                                     batch_first=True).eval()
    with torch.no_grad():
        a = layer.attention
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.query.weight, a.key.weight, a.value.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.query.bias, a.key.bias, a.value.bias]))
        for theirs, ours in [(ref.self_attn.out_proj, a.out), (ref.linear1, layer.ffn_in), (ref.linear2, layer.ffn_out),
                             (ref.norm1, layer.attention_norm), (ref.norm2, layer.ffn_norm)]:
            theirs.load_state_dict(ours.state_dict())
        x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
        is_pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
        expected = ref(x, src_key_padding_mask=is_pad)
        got = layer(x, (~is_pad)[:, None, None, :])
    torch.testing.assert_close(got[~is_pad], expected[~is_pad], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_shapes_and_gradients(tok, pooling):
    torch.manual_seed(0)
    model = TransformerClassifier(CONFIG, n_out=3, pad_id=tok.pad_id, pooling=pooling)
    ids = pad([tok.encode("the cat sat"), tok.encode("a dog"), tok.encode("hello world !")])
    out = model(ids)
    assert out.shape == (3, 3) and model.pool(ids).shape == (3, 32)
    out.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    with pytest.raises(ValueError, match="pooling='max'"):
        TransformerClassifier(CONFIG, n_out=3, pad_id=0, pooling="max")


@pytest.mark.parametrize("n_layers, n_groups", [(2, 3), (3, 4), (4, 4)])
def test_layer_groups_cover_every_parameter_once(n_layers, n_groups):
    model = TransformerClassifier({**CONFIG, "num_hidden_layers": n_layers}, n_out=2, pad_id=0)
    groups = layer_groups(model)
    assert len(groups) == n_groups and groups[0] is model.encoder.embeddings and groups[-1] is model.head
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_create_model_round_trip(tok):
    model = create_model("bert_classifier", config=BertConfig.from_dict(CONFIG).to_dict(), n_out=3,
                         pad_id=tok.pad_id, pooling="cls", dropout=0.2)
    spec = json.loads(json.dumps(model_spec(model)))
    again = create_model(spec["name"], **spec["kwargs"])
    again.load_state_dict(model.state_dict())
    ids = pad([tok.encode("the cat"), tok.encode("a dog sat")])
    model.eval(), again.eval()
    assert isinstance(again, TransformerClassifier) and again.pooling == "cls"
    assert torch.equal(model(ids), again(ids))


def test_classifier_from_dir_loads_the_encoder(model_dir):
    model, tok = transformer_classifier_from_dir(model_dir, n_out=4)
    encoder, _, config = load_bert(model_dir)
    assert model_spec(model) == {"name": "bert_classifier", "kwargs": {
        "config": config, "n_out": 4, "pad_id": 0, "pooling": "mean", "dropout": 0.1}}
    for (name, p), (_, q) in zip(model.encoder.state_dict().items(), encoder.state_dict().items()):
        assert torch.equal(p, q), name
    assert model(pad([tok.encode("the cat")])).shape == (1, 4)
