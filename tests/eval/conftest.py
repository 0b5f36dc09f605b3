"""Shared helpers for the eval tests: where the real fixtures live, and a fake VLM.

The shared data folder sits beside the repository in CI (``<root>/main`` and ``<root>/shared``);
in a developer worktree it is ``/work/shared``. Tests that need the real LLaVA-1.5 outputs skip
(with the reason) only when neither location has them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = (REPO.parent / "shared", Path("/work/shared"))


def shared_dir() -> Path | None:
    for c in _CANDIDATES:
        if (c / "eval-fixtures").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def fixtures13b() -> Path:
    """The folder of real LLaVA-1.5-13B answer files (skips if the shared data is absent)."""
    s = shared_dir()
    if s is None:
        pytest.skip(f"shared eval fixtures not found (looked in {', '.join(str(c) for c in _CANDIDATES)})")
    d = s / "eval-fixtures" / "llava-v1.5-13b"
    if not d.is_dir():
        pytest.skip(f"{d} is missing")
    return d


class FakeVLM:
    """Stands in for ``grace.load(...)``: answers with ``answer(image, query)`` and records calls."""

    family = "llava"
    name = "fake-vlm"

    def __init__(self, answer, fail_after: int | None = None):
        self.answer = answer
        self.calls: list[tuple[object, str, int]] = []
        self.fail_after = fail_after

    def generate(self, image, query, *, max_new_tokens=128, temperature=0.0):
        assert temperature == 0.0
        assert "<image>" not in query
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append((image, query, max_new_tokens))
        return self.answer(image, query)


class FakeBatchVLM(FakeVLM):
    """A fake that also has ``generate_batch``; it records batch sizes."""

    def __init__(self, answer, fail_after: int | None = None):
        super().__init__(answer, fail_after)
        self.batches: list[int] = []

    def generate_batch(self, images, queries, *, max_new_tokens=128):
        assert len(images) == len(queries)
        self.batches.append(len(queries))
        return [" " + self.generate(im, q, max_new_tokens=max_new_tokens) + "\n" for im, q in zip(images, queries, strict=True)]


@pytest.fixture
def fake_vlm():
    return FakeVLM


@pytest.fixture
def fake_batch_vlm():
    return FakeBatchVLM
