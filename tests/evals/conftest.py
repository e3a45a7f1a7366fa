"""Reuse the tiny frozen artifacts of the serving tests."""

from tests.serving.conftest import tiny_artifacts  # noqa: F401  (a fixture)
