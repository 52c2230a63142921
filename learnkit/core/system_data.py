"""Files of the Debian packages learnkit reads (dataset-fashion-mnist, fortunes, bible-kjv): found at their system
path, or, where they were unpacked without root (`./run data`: `apt-get download` + `dpkg -x`), under
`$LEARNKIT_HOME/debian` (default ~/.learnkit/debian) at the same path. The one lookup for such paths: the dataset
registry, the text corpora and the tests all call `system_data_path`.

Example:
    >>> system_data_path("/usr/share/games/fortunes")              # doctest: +SKIP
    PosixPath('/home/me/.learnkit/debian/usr/share/games/fortunes')
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

__all__ = ["DEBIAN_PACKAGES", "FETCH_COMMAND", "system_data_root", "system_data_path", "how_to_install"]

# The packages and what of each learnkit reads; `./run data` fetches exactly these (bible-kjv-text holds bible.data).
DEBIAN_PACKAGES = {"dataset-fashion-mnist": "/usr/share/datasets/fashion-mnist",
                   "fortunes": "/usr/share/games/fortunes", "bible-kjv": "/usr/bin/bible",
                   "bible-kjv-text": "/usr/lib/bible.data"}
FETCH_COMMAND = "./run data"  # in a source checkout: downloads and unpacks them without root


def system_data_root() -> Path:
    """Where `./run data` unpacks the packages: `$LEARNKIT_HOME/debian`, else ~/.learnkit/debian."""
    return Path(os.environ.get("LEARNKIT_HOME") or "~/.learnkit").expanduser() / "debian"


def system_data_path(path: str | os.PathLike, needs: Sequence[str] = ()) -> Path:
    """`path` when it exists (and holds every relative path in `needs`); else the same absolute path under
    `system_data_root()` when that does; else `path` unchanged (so a caller's "missing" error names the system path).

    `needs` matters for folders: another package may own the same folder (fortune-mod's `fortunes-min` puts one
    file in /usr/share/games/fortunes), so a folder counts only when it holds what the caller reads.

    Example:
        >>> system_data_path("/usr/share/games/fortunes", needs=["work", "science"])   # doctest: +SKIP
        PosixPath('/home/me/.learnkit/debian/usr/share/games/fortunes')
    """
    path = Path(path)
    if not path.is_absolute():
        return path
    for candidate in (path, system_data_root() / path.relative_to(path.anchor)):
        if candidate.exists() and all((candidate / n).exists() for n in needs):
            return candidate
    return path


def how_to_install(package: str) -> str:
    """The sentence that says how to get a package's files: with root, or without (into system_data_root())."""
    return (f"Install it with `apt-get install {package}` (root), or without root run `{FETCH_COMMAND}` in a learnkit "
            f"checkout (apt-get download + dpkg -x into {system_data_root()})")
