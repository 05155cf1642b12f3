"""The listener process's collector settings (`ingest_listener.gc_tuning`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ingest_listener.gc_tuning import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process's settings back afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_young_collections_are_rarer_and_what_exists_is_frozen() -> None:
    _, gen1, gen2 = gc.get_threshold()
    tune_gc()
    assert gc.isenabled()
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert gc.get_freeze_count() > 0
