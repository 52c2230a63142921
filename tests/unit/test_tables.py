"""learnkit.data.tables and the from_csv constructors on real files: labels never merge through undecodable bytes
(café / cafè in a latin-1 file), a UTF-8 BOM is no part of the first column's name, and missing labels ('', 'nan',
'None', ...) never become a class of their own (issue 14)."""
import warnings

import numpy as np
import pytest
from PIL import Image

from learnkit.data.tables import MISSING_LABELS, is_missing, missing_labels, read_csv
from learnkit.text.data import TextDataBunch
from learnkit.vision.data import ImageDataBunch

LATIN1 = "text,label\n" + "".join(f"{w} {i},{lab}\n" for i in range(6) for w, lab in
                                   [("hot drink", "café"), ("old song", "cafè")])


def test_latin1_bytes_are_an_error_naming_the_lines_and_the_encoding(tmp_path):
    table = tmp_path / "drinks.csv"
    table.write_bytes(LATIN1.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        read_csv(table)
    message = str(err.value)
    assert message.startswith(f"{table}: not valid UTF-8 at line(s) 2, 3, 4, 5, 6 and more (byte 0xe9 at offset 26")
    assert "pass encoding='latin-1'" in message and "'café' and 'cafè'" in message
    header, rows = read_csv(table, encoding="latin-1")
    assert header == ["text", "label"] and len(rows) == 12
    assert sorted({r[1] for r in rows}) == ["cafè", "café"]  # two labels, not one 'caf\ufffd'
    assert [r.line for r in rows[:3]] == [2, 3, 4]


def test_cp1252_is_suggested_when_the_bytes_read_as_cp1252(tmp_path):
    table = tmp_path / "quotes.csv"
    table.write_bytes("text,label\n\u201cquoted\u201d,a\nplain,b\n".encode("cp1252"))  # curly quotes: 0x93, 0x94
    with pytest.raises(ValueError, match=r"at line\(s\) 2 \(byte 0x93.*pass encoding='cp1252' \(the bytes read as "
                                         r"cp1252\)"):
        read_csv(table)
    assert read_csv(table, encoding="cp1252")[1][0] == ["\u201cquoted\u201d", "a"]
    with pytest.raises(ValueError, match="encoding='klingon' is not a known encoding"):
        read_csv(table, encoding="klingon")
    with pytest.raises(ValueError, match=r"not valid ascii at line\(s\) 2 .*pass encoding='cp1252'"):
        read_csv(table, encoding="ascii")  # an explicit encoding is strict too


def test_a_utf8_bom_is_accepted_and_lines_count_quoted_newlines(tmp_path):
    table = tmp_path / "bom.csv"
    table.write_bytes(b"\xef\xbb\xbftext,label\n\"two\nlines\",a\n\nlast,b\n")
    header, rows = read_csv(table)
    assert header == ["text", "label"]  # never '\ufefftext'
    assert rows == [["two\nlines", "a"], ["last", "b"]] and [r.line for r in rows] == [2, 5]  # blank line 4 skipped
    assert read_csv(table, encoding="utf-8")[0] == ["text", "label"]
    with pytest.raises(FileNotFoundError, match="no such CSV file"):
        read_csv(tmp_path / "none.csv")


def test_missing_labels_are_whole_cells_and_found_by_line(tmp_path):
    assert MISSING_LABELS == {"", "nan", "NaN", "NAN", "None", "null", "NULL"}
    assert all(is_missing(c) for c in ["", "  ", "nan", " NaN ", "None", "null", None])
    assert not any(is_missing(c) for c in ["nano", "None of these", "0", "n/a"])
    table = tmp_path / "t.csv"
    table.write_text("text,label\na,x\nb,\nc,nan\nd,None\ne\nf,null\ng,y\n")
    header, rows = read_csv(table)
    assert missing_labels(rows, header.index("label")) == [3, 4, 5, 6, 7]  # line 6 has no label cell at all


def test_text_from_csv_refuses_merged_labels_and_missing_ones(tmp_path):
    table = tmp_path / "drinks.csv"
    table.write_bytes(LATIN1.encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8 .*encoding='latin-1'"):
        TextDataBunch.from_csv(table, min_freq=1, device="cpu", batch_size=2)
    data = TextDataBunch.from_csv(table, encoding="latin-1", min_freq=1, device="cpu", batch_size=2, seed=0)
    assert data.classes == ["cafè", "café"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbftext,label\n" + b"".join(b"doc %d,%s\n" % (i, b"ab"[i % 2:i % 2 + 1])
                                                          for i in range(8)) + b"lost,nan\nalso lost,\n")
    with pytest.raises(ValueError, match=r"(?s)2 rows without a label.*bom.csv line 10: no label in column 'label' "
                                         r"\(cell 'nan'\).*bom.csv line 11: .*\(cell ''\).*on_bad='skip'"):
        TextDataBunch.from_csv(bom, min_freq=1, device="cpu", batch_size=2)
    with pytest.warns(UserWarning, match=r"(?s)skipped 2 rows without a label.*line 10.*line 11"):
        data = TextDataBunch.from_csv(bom, on_bad="skip", min_freq=1, device="cpu", batch_size=2, seed=0)
    assert data.classes == ["a", "b"] and len(data.texts) == 8 and "lost" not in data.texts


def test_image_from_csv_refuses_merged_labels_and_missing_ones(tmp_path):
    for i in range(8):
        Image.fromarray(np.full((4, 4, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.png")
    rows = "".join(f"{i}.png,{'café' if i % 2 else 'cafè'}\n" for i in range(8))
    (tmp_path / "labels.csv").write_bytes(("name,label\n" + rows).encode("latin-1"))
    with pytest.raises(ValueError, match="labels.csv: not valid UTF-8 at line.*encoding='latin-1'"):
        ImageDataBunch.from_csv(tmp_path, device="cpu", verbose=False)
    data = ImageDataBunch.from_csv(tmp_path, encoding="latin-1", device="cpu", seed=0, verbose=False)
    assert data.classes == ["cafè", "café"]
    (tmp_path / "labels.csv").write_text("\ufeffname,label\n" + rows + "7.png,NaN\n6.png,None\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"(?s)2 rows without a file or a label.*7.png: no label \('NaN'\) in .*"
                                         r"labels.csv line 10.*6.png: no label \('None'\) in .*line 11"):
        ImageDataBunch.from_csv(tmp_path, fn_col="name", device="cpu", verbose=False)  # 'name': the BOM is gone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = ImageDataBunch.from_csv(tmp_path, on_bad="skip", device="cpu", seed=0, verbose=False)
    assert data.classes == ["cafè", "café"] and data.train_dl.n_items + data.valid_dl.n_items == 8
