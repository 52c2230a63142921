"""learnkit.text.corpora on synthetic fortune files and a fake `bible` program (no Debian packages needed)."""
from __future__ import annotations

import csv
import stat
import sys
from pathlib import Path

import pytest

from learnkit.text.corpora import (bible_kjv_text, bible_kjv_verses, fortunes_classification, parse_fortune_file,
                                   read_fortune_file, write_fortunes_csv)


def write_fortunes(path: Path, entries: list[str]) -> Path:
    path.write_text("\n%\n".join(entries) + "\n%\n", encoding="utf-8")
    return path


def make_root(tmp_path: Path, sizes: dict[str, int], shared: dict[str, list[str]] | None = None) -> Path:
    """One fortune file per category with `n` distinct entries, plus the `shared` extra entries."""
    root = tmp_path / "fortunes"
    root.mkdir()
    for name, n in sizes.items():
        entries = [f"{name} saying number {i}\n\t\t-- someone" for i in range(n)] + (shared or {}).get(name, [])
        write_fortunes(root / name, entries)
    return root


def test_separators_stripping_and_empty_entries(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"first line\nsecond line\n%\n\n  padded  \n\n%\n%\n   \n%\n"
                     b"50% off\n %\n%%\nlast\r\n%\r\ncrlf entry")
    assert read_fortune_file(path) == ["first line\nsecond line", "padded",
                                       "50% off\n %\n%%\nlast", "crlf entry"]


def test_overstrikes_are_removed(tmp_path):
    path = tmp_path / "f"
    path.write_bytes("_\bx marks, a\b\u0430 cyrillic, b\bbo\bol\bld\bd, *___\b\b\bnot*\n%\n\bstray\n"
                     .encode("utf-8"))
    parsed = parse_fortune_file(path)
    assert parsed.entries == ["x marks, \u0430 cyrillic, bold, *not*", "stray"]
    assert parsed.overstrikes == 1 + 1 + 4 + 3
    assert parsed.undecodable_bytes == 0 and parsed.replacement_chars == 0


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "f"
    # \xff and \xfe: two invalid bytes, two U+FFFD; \xe2\x82: a truncated 3-byte sequence, one U+FFFD;
    # the file's own (valid) U+FFFD is not a replacement.
    path.write_bytes(b"caf\xc3\xa9 \xff\xfe\n%\nend \xe2\x82\n%\nreal \xef\xbf\xbd")
    parsed = parse_fortune_file(path)
    assert parsed.entries == ["caf\u00e9 \ufffd\ufffd", "end \ufffd", "real \ufffd"]
    assert parsed.undecodable_bytes == 4
    assert parsed.replacement_chars == 3


def test_missing_file_and_folder_name_the_path_and_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent.*apt-get install fortunes"):
        read_fortune_file(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*apt-get install fortunes"):
        fortunes_classification(tmp_path / "nowhere", ("a",), min_entries=1)
    root = make_root(tmp_path, {"a": 5})
    with pytest.raises(FileNotFoundError, match=r"fortunes/b.*apt-get install fortunes"):
        fortunes_classification(root, ("a", "b"), min_entries=1)


def test_too_small_category_names_it_and_its_count(tmp_path):
    root = make_root(tmp_path, {"big": 30, "small": 12})
    with pytest.raises(ValueError, match=r"'small' has 12 entries.*fewer than the 20"):
        fortunes_classification(root, ("big", "small"), min_entries=20)


def test_duplicates_across_categories_are_removed_from_all(tmp_path):
    shared = {"a": ["Shared joke.", "Only in a, twice.", "Only in a, twice.", "Spaced   OUT\ttext"],
              "b": ["Shared joke.", "spaced out text"],
              "c": ["Shared joke."]}
    root = make_root(tmp_path, {"a": 20, "b": 20, "c": 20}, shared)
    rows = fortunes_classification(root, ("a", "b", "c"), min_entries=20)
    texts = [r["text"] for r in rows]
    assert "Shared joke." not in texts
    assert not any("spaced" in t.lower() for t in texts)  # same text up to whitespace and case
    assert texts.count("Only in a, twice.") == 1           # repeats inside one category: kept once
    assert {r["label"]: 0 for r in rows}.keys() == {"a", "b", "c"}
    assert [sum(r["label"] == k for r in rows) for k in "abc"] == [21, 20, 20]
    labels_of: dict[str, set] = {}
    for r in rows:
        labels_of.setdefault(r["text"], set()).add(r["label"])
    assert all(len(v) == 1 for v in labels_of.values())


def test_split_is_stratified_and_deterministic(tmp_path):
    root = make_root(tmp_path, {"a": 50, "b": 31, "c": 20})
    rows = fortunes_classification(root, ("a", "b", "c"), seed=7, valid_pct=0.2, min_entries=20)
    assert rows == fortunes_classification(root, ("a", "b", "c"), seed=7, valid_pct=0.2, min_entries=20)
    for label, n in (("a", 50), ("b", 31), ("c", 20)):
        assert sum(r["is_valid"] for r in rows if r["label"] == label) == round(n * 0.2)
    other = fortunes_classification(root, ("a", "b", "c"), seed=8, valid_pct=0.2, min_entries=20)
    assert [r["text"] for r in other] == [r["text"] for r in rows]  # same rows in the same order
    assert [r["is_valid"] for r in other] != [r["is_valid"] for r in rows]  # a different split
    assert all(set(r) == {"text", "label", "is_valid"} and isinstance(r["is_valid"], bool) for r in rows)
    with pytest.raises(ValueError, match="valid_pct"):
        fortunes_classification(root, ("a",), valid_pct=1.5, min_entries=20)


def test_csv_round_trip_and_stable_bytes(tmp_path):
    rows = [{"text": 'Line one,\n"quoted" line two', "label": "x", "is_valid": False},
            {"text": "caf\u00e9\ttab", "label": "y", "is_valid": True}]
    write_fortunes_csv(rows, tmp_path / "a.csv")
    write_fortunes_csv(rows, tmp_path / "b.csv")
    data = (tmp_path / "a.csv").read_bytes()
    assert data == (tmp_path / "b.csv").read_bytes()
    assert data.startswith(b"text,label,is_valid\n") and b"\r" not in data
    with open(tmp_path / "a.csv", encoding="utf-8", newline="") as f:
        back = list(csv.DictReader(f))
    assert [(r["text"], r["label"], r["is_valid"]) for r in back] == [(rows[0]["text"], "x", "False"),
                                                                       (rows[1]["text"], "y", "True")]


def fake_bible(tmp_path: Path, output: str, status: int = 0) -> str:
    """An executable that prints `output` whatever its arguments, like `bible` does."""
    (tmp_path / "out.txt").write_text(output, encoding="utf-8")
    script = tmp_path / "fake-bible"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(tmp_path / 'out.txt')!r}).read())\n"
                      f"sys.exit({status})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.skipif(sys.platform == "win32", reason="uses an executable script as the fake command")
def test_bible_verses_are_parsed_from_the_program_output(tmp_path):
    text = ("\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth.\n"
            "\n1 Samuel 3\n\n  10 And the LORD came.\n\nSong of Solomon 1\n\n  1 The song of songs.\n")
    command = fake_bible(tmp_path, text)
    assert bible_kjv_text(command) == text
    assert bible_kjv_verses(command) == ["In the beginning.", "And the earth.", "And the LORD came.",
                                         "The song of songs."]
    (tmp_path / "out.txt").write_text("\nGenesis 1\n\n  1 Fine.\nsomething odd\n")
    with pytest.raises(ValueError, match="unexpected line 5.*something odd"):
        bible_kjv_verses(command)


@pytest.mark.skipif(sys.platform == "win32", reason="uses an executable script as the fake command")
def test_bible_errors_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install bible-kjv"):
        bible_kjv_text(str(tmp_path / "no-such-bible"))
    failing = fake_bible(tmp_path, "Cannot open data file bible.data\n", status=255)
    with pytest.raises(RuntimeError, match=r"exit status 255.*Cannot open data file.*apt-get install bible-kjv"):
        bible_kjv_text(failing)
