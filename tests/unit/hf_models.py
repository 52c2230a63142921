"""Tiny randomly initialised Hugging Face encoders written to a folder exactly as `save_pretrained` does, each with
a fast tokenizer trained here on a few sentences (WordPiece, byte-level BPE or Unigram): real loading code, no
downloads."""
from __future__ import annotations

from pathlib import Path

SENTENCES = ["the cat sat on the mat", "hello world big dog", "a dog and a cat play", "the big dog sat",
             "hello cat, hello dog!", "on the mat the cat is playing"] * 4
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)
ARCHS = ["bert", "roberta", "distilbert", "deberta-v2", "electra", "xlm-roberta", "modernbert"]
# DeBERTa-v3's layout (write_hf_model(folder, "deberta-v2", **DEBERTA_V3)): relative attention with log buckets,
# no absolute positions; the default DebertaV2Config has neither
DEBERTA_V3 = dict(relative_attention=True, position_buckets=8, norm_rel_ebd="layer_norm", share_att_key=True,
                  pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_biased_input=False)
_MODEL = {"bert": "wordpiece", "distilbert": "wordpiece", "electra": "wordpiece", "roberta": "bpe",
          "modernbert": "bpe", "deberta-v2": "unigram", "xlm-roberta": "unigram", "mpnet": "bpe",
          "data2vec-text": "bpe"}


def train_tokenizer(kind: str):
    """A `tokenizers.Tokenizer` of `kind` trained on SENTENCES, adding [CLS] ... [SEP] like BERT."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=SPECIALS)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=SPECIALS, unk_token="[UNK]")
    tok.train_from_iterator(SENTENCES, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def write_hf_model(folder: Path, model_type: str, seed: int = 0, **config) -> Path:
    """`folder` holding config.json, model.safetensors and the tokenizer files of a tiny random `model_type`
    (`config`: fields over the tiny sizes, e.g. dropout probabilities)."""
    import torch
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast
    tok = train_tokenizer(_MODEL[model_type])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    ids = {k: tok.token_to_id(t) for k, t in [("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]")]}
    sizes = dict(SIZES, vocab_size=tok.get_vocab_size(), pad_token_id=ids["pad"])
    if model_type == "distilbert":
        sizes = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
                     vocab_size=tok.get_vocab_size(), pad_token_id=ids["pad"])
    if model_type == "electra":
        sizes["embedding_size"] = 16  # ELECTRA projects smaller embeddings up to the hidden size
    if model_type == "modernbert":
        sizes.update(bos_token_id=ids["cls"], eos_token_id=ids["sep"], cls_token_id=ids["cls"],
                     sep_token_id=ids["sep"], global_attn_every_n_layers=1, local_attention=16)
    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.for_model(model_type, **sizes, **config)).save_pretrained(folder)
    fast.save_pretrained(folder)
    return Path(folder)
