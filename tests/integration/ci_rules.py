"""The one rule for tests that need data or packages from outside the repo: skip on a laptop that lacks
them, but fail in CI (env CI set), where a skip would go unnoticed.

Debian's data packages are found with `system_data_path` (the system path first, then the copy that `./run data`
unpacks without root under ~/.learnkit/debian); `how_to_install(package)` is the sentence naming both ways."""
import os

import pytest

from learnkit.core.system_data import how_to_install, system_data_path

__all__ = ["in_ci", "skip_or_fail", "system_data_path", "how_to_install"]


def in_ci() -> bool:
    """CI systems set CI (GitHub: CI=true); an empty value or 0/false means "not CI"."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(message: str) -> None:
    if in_ci():
        pytest.fail(message + " (CI is set, so this test fails instead of skipping.)", pytrace=False)
    pytest.skip(message)
