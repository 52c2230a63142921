"""Tokenizer rules, Vocab, TextBlock and the text loaders (LM streams, length buckets, padding)."""
import pytest
import torch

from learnkit.text.data import (LMLoader, LMLoss, TextBlock, TextDataBunch, pad_batch,
                                read_text_file)
from learnkit.text.tokenizer import Tokenizer
from learnkit.text.vocab import Vocab


def test_tokenizer_rules():
    tok = Tokenizer()
    assert tok("I LOVE it!!!! Don't you?") == ["xxbos", "xxmaj", "i", "xxup", "love", "it", "xxrep", "4", "!",
                                              "xxmaj", "do", "n't", "you", "?"]
    assert tok("go go go now") == ["xxbos", "xxwrep", "3", "go", "now"]
    assert tok("a &amp; b<br />c") == ["xxbos", "a", "&", "b", "c"]
    assert tok("it's 3.14 and/or #1") == ["xxbos", "it", "'s", "3.14", "and", "/", "or", "#", "1"]
    assert Tokenizer(add_bos=False, add_eos=True)("Hi") == ["xxmaj", "hi", "xxeos"]
    with pytest.raises(TypeError, match="expected a str"):
        tok(3)


def test_tokenizer_decode_round_trips_for_display():
    tok = Tokenizer()
    text = "I LOVE it!!!! Don't you? The end."
    assert Tokenizer.decode(tok(text)) == text
    assert Tokenizer.decode(tok("go go go now")) == "go go go now"


def test_parallel_tokenization_and_cache(tmp_path):
    tok = Tokenizer()
    texts = [f"Document number {i} says HELLO!!!!" for i in range(5000)]
    serial = [tok(t) for t in texts]
    assert tok.tokenize_texts(texts, n_workers=2, chunk_size=1000) == serial
    first = tok.tokenize_texts(texts, cache_dir=tmp_path, n_workers=1)
    files = list(tmp_path.glob("tokens-*.txt.gz"))
    assert first == serial and len(files) == 1
    assert tok.tokenize_texts(texts, cache_dir=tmp_path) == serial  # read back from the cache
    tok.tokenize_texts(texts[:10], cache_dir=tmp_path, n_workers=1)
    assert len(list(tmp_path.glob("tokens-*.txt.gz"))) == 2  # other content, other key
    assert Tokenizer(lower=False).cache_key(texts) != tok.cache_key(texts)


def test_vocab_order_min_freq_and_json(tmp_path):
    docs = [["b", "a", "a", "c", "c", "c", "rare"]]
    v = Vocab.build(docs, min_freq=2)
    assert v.itos[:9] == ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]
    assert v.itos[9:11] == ["c", "a"] and "rare" not in v.stoi and len(v) % 8 == 0
    assert v.numericalize(["a", "rare"]).tolist() == [10, 0]
    assert Vocab.build(docs, min_freq=1, max_vocab=10).itos[9:10] == ["c"]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == v.itos
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="bad.json: not a learnkit vocab"):
        Vocab.load(tmp_path / "bad.json")


def _texts(n=120):
    words = ["alpha", "beta", "gamma", "delta"]
    return [" ".join(words[(i + j) % 4] for j in range(3 + i % 17)) for i in range(n)], \
        ["pos" if i % 3 else "neg" for i in range(n)]


def test_classifier_batches_are_length_bucketed_padded_and_longest_first():
    texts, labels = _texts()
    data = TextDataBunch.from_lists(texts, labels, seed=0, batch_size=8, min_freq=1, device="cpu")
    assert data.classes == ["neg", "pos"]
    batches = list(data.train_dl)
    lengths = [(b[0] != 1).sum(1) for b in batches]
    assert lengths[0].max() == max(l.max() for l in lengths)          # largest batch first
    spans = [int(l.max() - l.min()) for l in lengths]
    assert sum(spans) / len(spans) <= 2                                  # buckets of similar lengths
    for (ids, y), l in zip(batches, lengths):
        assert ids.shape[1] == l.max() and y.dtype == torch.long
        assert all((row[:n] != 1).all() and (row[n:] == 1).all() for row, n in zip(ids, l.tolist()))  # right pad
    valid = [b[0].shape[1] for b in data.valid_dl]
    assert valid == sorted(valid, reverse=True)
    assert sorted(i for b in data.train_dl.batch_sampler for i in b) == list(range(len(data.train_dl.dataset)))


def test_max_len_truncates_with_warning_and_empty_docs_are_errors():
    texts, labels = _texts()
    with pytest.warns(UserWarning, match="longer than max_len=5"):
        data = TextDataBunch.from_lists(texts, labels, seed=0, batch_size=8, min_freq=1, device="cpu", max_len=5)
    assert max(b[0].shape[1] for b in data.train_dl) == 5
    with pytest.raises(ValueError, match=r"(?s)2 empty or unreadable documents:\n  text 1: empty.*\n  text 3: empty"
                                         r".*on_bad='skip'"):
        TextDataBunch.from_lists(["a b", " ", "c d", ""], ["x", "y", "x", "y"], device="cpu")
    with pytest.warns(UserWarning, match="skipped 1 empty"):
        data = TextDataBunch.from_lists(texts + [""], labels + ["pos"], on_bad="skip", device="cpu", min_freq=1)
    assert data.skipped == [(f"text {len(texts)}", "empty document (no tokens)")]
    assert len(data.texts) == len(texts)
    with pytest.warns(DeprecationWarning, match="drop_empty"):  # the older spelling still works
        TextDataBunch.from_lists(texts + [""], labels + ["pos"], drop_empty=True, device="cpu", min_freq=1)


def test_unseen_validation_label_is_named():
    texts, labels = _texts(20)
    labels[5] = "surprise"
    with pytest.raises(ValueError, match="'surprise'"):
        TextDataBunch.from_lists(texts, labels, valid_idx=[5, 6, 7], device="cpu", min_freq=1)


def test_language_model_stream_shift_and_jitter():
    docs = [torch.arange(i * 100, i * 100 + 50 + i) for i in range(20)]
    g = torch.Generator().manual_seed(0)
    loader = LMLoader(docs, batch_size=4, bptt=10, shuffle=True, generator=g)
    batches = list(loader)
    assert len(batches) == len(loader)
    lengths = {x.shape[1] for x, _ in batches}
    assert len(lengths) > 2                                   # random window lengths
    rows = torch.cat([x for x, _ in batches], 1)
    targets = torch.cat([y for _, y in batches], 1)
    assert torch.equal(rows[:, 1:], targets[:, :-1])          # y is x shifted by one, across batches
    first_epoch = rows.clone()
    second = torch.cat([x for x, _ in loader], 1)
    assert not torch.equal(first_epoch, second)               # documents reshuffled every epoch
    assert sorted(torch.cat(docs).tolist())[:10] == sorted(rows.flatten().tolist())[:10]
    valid = LMLoader(docs, batch_size=4, bptt=10, shuffle=False)
    assert [x.shape[1] for x, _ in valid][:-1] == [10] * (len(valid) - 1)
    with pytest.raises(ValueError, match="smaller batch_size"):
        LMLoader([torch.arange(5)], batch_size=8)


def test_lm_databunch_and_loss():
    texts, _ = _texts()
    data = TextDataBunch.from_lists(texts, is_lm=True, seed=0, batch_size=4, bptt=8, min_freq=1, device="cpu")
    x, y = data.one_batch()
    assert x.shape[0] == 4 and torch.equal(x[:, 1:], y[:, :-1])
    assert isinstance(data.loss_fn(), LMLoss)
    pred = torch.randn(4, x.shape[1], len(data.x_block.vocab))
    assert torch.isclose(data.loss_fn()(pred, y), torch.nn.functional.cross_entropy(pred.transpose(1, 2), y))


def test_from_csv_and_folder(tmp_path):
    (tmp_path / "d.csv").write_text("text,label,is_valid\nhello there,a,0\nbye now,b,0\nhello again,a,1\n"
                                    "bye again,b,1\nhello you,a,0\nbye you,b,0\n")
    data = TextDataBunch.from_csv(tmp_path / "d.csv", min_freq=1, device="cpu", batch_size=2)
    assert len(data.valid_dl.dataset) == 2 and data.classes == ["a", "b"]
    with pytest.raises(KeyError, match="no column"):
        TextDataBunch.from_csv(tmp_path / "d.csv", text_col="body", device="cpu")
    for split in ("train", "valid"):
        for label in ("x", "y"):
            (tmp_path / "f" / split / label).mkdir(parents=True)
            for i in range(3):
                (tmp_path / "f" / split / label / f"{i}.txt").write_bytes(f"{label} doc {i} ".encode() + b"\xff")
    # undecodable bytes are never replaced silently: one error listing the files, with the option to pass
    with pytest.raises(ValueError, match=r"(?s)12 files that cannot be read.*0.txt: not valid UTF-8.*"
                                         r"encoding='latin-1'"):
        TextDataBunch.from_folder(tmp_path / "f", min_freq=1, device="cpu", batch_size=2)
    data = TextDataBunch.from_folder(tmp_path / "f", min_freq=1, device="cpu", batch_size=2, encoding="latin-1")
    assert len(data.train_dl.dataset) == 6 and data.classes == ["x", "y"]
    assert data.texts[0].endswith("\u00ff")
    assert read_text_file(tmp_path / "f" / "train" / "x" / "0.txt") == ("x doc 0 \ufffd", 1)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        TextDataBunch.from_folder(tmp_path / "nope", device="cpu")


def test_test_dl_and_block_config_round_trip():
    texts, labels = _texts()
    data = TextDataBunch.from_lists(texts, labels, seed=0, batch_size=8, min_freq=1, device="cpu")
    (ids,) = next(iter(data.test_dl(["alpha beta", "gamma gamma delta beta alpha"])))
    assert ids.shape == (2, 6) and ids[0, -1].item() == 1
    from learnkit.data import block_from_config
    again = block_from_config(data.x_block.to_config())
    assert isinstance(again, TextBlock) and torch.equal(again.encode("alpha beta"), data.x_block.encode("alpha beta"))
    assert data.x_block.decode(data.x_block.encode("Alpha beta")) == "Alpha beta"
    assert pad_batch([torch.tensor([5]), torch.tensor([])], 1).tolist() == [[5], [1]]


def test_subword_batches_pad_to_a_multiple_so_their_lengths_take_few_values():
    from types import SimpleNamespace

    from learnkit.text.data import SubwordTextBlock, graph_pad_multiple
    ids = [torch.arange(2, 2 + n) for n in (3, 17, 9)]
    assert pad_batch(ids, 0, multiple=8).shape == (3, 24)
    assert pad_batch(ids, 0, multiple=8, max_len=20).shape == (3, 20)  # never past max_len...
    assert pad_batch(ids, 0, multiple=8, max_len=12).shape == (3, 17)  # ...nor shorter than the longest
    padded = pad_batch(ids, 0, multiple=8)
    assert padded[0, :3].tolist() == [2, 3, 4] and (padded[0, 3:] == 0).all()
    assert [graph_pad_multiple(m) for m in (12, 128, 256, 512)] == [8, 16, 32, 64] and graph_pad_multiple(None) is None
    assert SubwordTextBlock(SimpleNamespace(pad_id=0)).collate([torch.ones(5, dtype=torch.long)]).shape == (1, 5)
    block = SubwordTextBlock(SimpleNamespace(pad_id=0), max_len=128, pad_multiple=16)
    lengths = {block.collate([torch.ones(n, dtype=torch.long)]).shape[1] for n in range(1, 129)}
    assert lengths == set(range(16, 129, 16))  # eight shapes: a CUDA graph each
