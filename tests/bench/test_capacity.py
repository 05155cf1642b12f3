"""The sizing arithmetic of the capacity bench, on round figures."""

from __future__ import annotations

import pytest

from bench.sizing import Capacity, needed, per_core, size

CAP = Capacity(
    listener_per_core=10_000,
    worker_per_core={"plain": 40_000, "mix": 25_000},
    copy_rows_per_s=300_000,
    rows_per_message=2.5,
    db_msg_per_core=50_000,
    entry_bytes=200,
    redis_xadd_per_s=80_000,
)


def test_needed_rounds_up_and_is_never_zero() -> None:
    assert needed(10_000, 10_000, 0.5) == 2
    assert needed(10_001, 10_000, 1.0) == 2
    assert needed(0, 10_000, 0.5) == 1


def test_needed_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError):
        needed(1, 0, 0.5)
    with pytest.raises(ValueError):
        needed(1, 1, 0)
    with pytest.raises(ValueError):
        per_core(1, 0)


def test_per_core_divides_units_by_cpu_seconds() -> None:
    assert per_core(30_000, 3.0) == 10_000


def test_size_applies_each_formula() -> None:
    s = size(50_000, CAP, headroom=0.5, margin_s=3600, node_gb=16)
    assert s.listeners == 10  # 50,000 / (10,000 × 0.5)
    assert s.run_workers == 4  # ceil(50,000 / 12,500)
    assert s.shards == 10  # max(listeners, run workers)
    assert s.redis_gb == pytest.approx(36.0)  # 50,000 × 3,600 s × 200 B
    assert s.redis_nodes == 3  # ceil(36 / (16 × 0.8)) against ceil(50,000 / 40,000)
    assert s.db_rows_per_s == 125_000
    assert s.db_cores == 1  # ceil(125,000 / 150,000)
    assert s.db_cores_stages == 2  # ceil(50,000 / 25,000)


def test_size_by_format_and_by_writes() -> None:
    assert size(50_000, CAP, mix="plain").run_workers == 3  # ceil(50,000 / 20,000)
    small = size(200_000, CAP, margin_s=1, node_gb=1_000)
    assert small.redis_nodes == 5  # memory needs one; 200,000 / 40,000 XADD/s need five
