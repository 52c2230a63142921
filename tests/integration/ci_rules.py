"""The one rule for tests that need data or packages from outside the repo: skip on a laptop that lacks
them, but fail in CI (env CI set), where a skip would go unnoticed."""
import os

import pytest


def in_ci() -> bool:
    """CI systems set CI (GitHub: CI=true); an empty value or 0/false means "not CI"."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(message: str) -> None:
    if in_ci():
        pytest.fail(message + " (CI is set, so this test fails instead of skipping.)", pytrace=False)
    pytest.skip(message)
