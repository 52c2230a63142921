"""The real text corpora: Debian's `fortunes` (classification set and the committed sample) and `bible-kjv`.

Tests that need a Debian package skip without it, except in CI (env CI set), where they fail with the
`apt-get install` line, so that a missing package cannot go unnoticed.
"""
from __future__ import annotations

import csv
import runpy
import shutil
from collections import Counter
from pathlib import Path

import pytest

from learnkit.text.corpora import (FORTUNE_CATEGORIES, bible_kjv_verses, fortunes_classification,
                                   parse_fortune_file)
from ci_rules import how_to_install, skip_or_fail, system_data_path

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "fortunes-sample"
FORTUNES = system_data_path("/usr/share/games/fortunes", needs=FORTUNE_CATEGORIES)
BIBLE, BIBLE_DATA = system_data_path("/usr/bin/bible"), system_data_path("/usr/lib/bible.data")
COPYRIGHT = system_data_path("/usr/share/doc/fortunes/copyright")


def require_fortunes() -> Path:
    missing = [c for c in FORTUNE_CATEGORIES if not (FORTUNES / c).is_file()]
    if missing:
        skip_or_fail(f"fortune files not found: {FORTUNES} lacks {', '.join(missing)}. {how_to_install('fortunes')}.")
    return FORTUNES


def require_bible() -> None:
    if (shutil.which("bible") is None and not BIBLE.is_file()) or not BIBLE_DATA.is_file():
        skip_or_fail(f"the `bible` program or {BIBLE_DATA} is missing. {how_to_install('bible-kjv')}.")


def read_sample() -> list[dict]:
    with open(SAMPLE / "fortunes.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_categories_are_large_and_clean_before_dedup():
    root = require_fortunes()
    for category in FORTUNE_CATEGORIES:
        parsed = parse_fortune_file(root / category)
        assert len(parsed.entries) >= 580, f"{category}: {len(parsed.entries)} entries"
        assert parsed.undecodable_bytes == 0, f"{category}: {parsed.undecodable_bytes} undecodable bytes"
        assert not any("\x08" in e for e in parsed.entries)


def test_classification_set_has_one_label_per_text_and_a_20pct_split():
    root = require_fortunes()
    rows = fortunes_classification(root, seed=42)
    assert rows == fortunes_classification(root, seed=42)  # deterministic
    labels_of: dict[str, set] = {}
    for r in rows:
        labels_of.setdefault(" ".join(r["text"].split()).casefold(), set()).add(r["label"])
    assert all(len(labels) == 1 for labels in labels_of.values()), "a text carries two labels"
    assert len(labels_of) == len(rows), "a text occurs twice in one category"
    sizes = Counter(r["label"] for r in rows)
    assert set(sizes) == set(FORTUNE_CATEGORIES) and min(sizes.values()) >= 550, sizes
    for category, n in sizes.items():
        n_valid = sum(r["is_valid"] for r in rows if r["label"] == category)
        assert abs(n_valid / n - 0.2) < 0.01, f"{category}: {n_valid} of {n} in valid"


def test_committed_sample_is_balanced():
    sample = read_sample()
    assert Counter((r["label"], r["is_valid"]) for r in sample) == {
        (c, v): n for c in FORTUNE_CATEGORIES for v, n in (("False", 80), ("True", 20))}
    assert len({r["text"] for r in sample}) == len(sample)
    assert "Regents of the University of California" in (SAMPLE / "LICENSE").read_text(encoding="utf-8")


def test_committed_sample_keeps_the_full_split():
    sample = read_sample()
    root = require_fortunes()
    full = {(r["text"], r["label"]): r["is_valid"] for r in fortunes_classification(root, seed=42)}
    assert all(full[r["text"], r["label"]] == (r["is_valid"] == "True") for r in sample)


def test_build_script_reproduces_the_committed_sample(tmp_path):
    root = require_fortunes()
    if not COPYRIGHT.is_file():
        skip_or_fail(f"{COPYRIGHT} is missing. {how_to_install('fortunes')}.")
    build = runpy.run_path(str(REPO / "datasets" / "build_fortunes_sample.py"))["build"]
    build(root, tmp_path, seed=42)
    for name in ("fortunes.csv", "LICENSE"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), (
            f"{name} differs from the committed sample (another `fortunes` version?); "
            "rebuild with `python datasets/build_fortunes_sample.py` and update datasets/README.md")


def test_bible_has_every_verse_in_order():
    require_bible()
    verses = bible_kjv_verses()
    assert len(verses) == 31102
    assert verses[0] == "In the beginning God created the heaven and the earth."
    assert verses[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."


def test_missing_packages_skip_locally_but_fail_in_ci(monkeypatch, tmp_path):
    monkeypatch.setitem(globals(), "FORTUNES", tmp_path / "absent")
    monkeypatch.setitem(globals(), "BIBLE", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `bible` on it
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install fortunes"):
        require_fortunes()
    with pytest.raises(pytest.fail.Exception, match="apt-get install bible-kjv"):
        require_bible()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install fortunes"):
        require_fortunes()
    with pytest.raises(pytest.skip.Exception, match="apt-get install bible-kjv"):
        require_bible()
