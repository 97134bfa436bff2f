"""The simulator: ns per simulated event, the compiled loop beside the numpy block engine it
replaced (same seed, same events: tests/test_simulate.py holds them equal), and flat cost.

Run: python -m pytest bench/bench_simulate.py --benchmark-only --benchmark-columns=min,median

Rows: ``simulate(n)`` (default parameters, 5 levels, all arrays kept) for n = 1e4 .. 1e6;
``simulate_chunks`` for 1e6 .. 3e7 events in 1e6-event chunks, each chunk dropped after it is
made (memory bounded by the chunk; the per-event cost must not grow with n), and 1e6 .. 1e7
with the buffer reuse switched off (every chunk in fresh arrays, whose pages are faulted in:
the cost of a result that is kept); the numpy block engine on 2e5 events (same parameters,
same seed).
"""

import sys
from pathlib import Path

import pytest

from ofi_fast.simulate import LOBSimulator, simulate_chunks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sim_numpy_oracle import NumpyLOBSimulator  # noqa: E402


def run(benchmark, fn, n, rounds=5):
    benchmark.extra_info["events"] = n
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000])
def test_simulate(benchmark, n):
    run(benchmark, lambda: LOBSimulator(0).run(n), n)


@pytest.mark.parametrize("n", [1_000_000, 10_000_000, 30_000_000])
def test_simulate_chunks(benchmark, n):
    def go():
        for _ in simulate_chunks(n, chunk_size=1_000_000, seed=0):
            pass
    run(benchmark, go, n, rounds=3 if n < 30_000_000 else 1)


@pytest.mark.parametrize("n", [1_000_000, 10_000_000])
def test_simulate_chunks_fresh_buffers(benchmark, n, monkeypatch):
    """ofi3: the same without reusing the dropped chunks' buffers (simulate._free_buffers)."""
    import ofi_fast.simulate as S
    monkeypatch.setattr(S, "_free_buffers", lambda held, n: (held.pop(0), None)[1])

    def go():
        for _ in simulate_chunks(n, chunk_size=1_000_000, seed=0):
            pass
    run(benchmark, go, n, rounds=3)


def test_numpy_block_engine(benchmark):
    """The engine before issue 13 (kept as the tests' oracle), 2e5 events."""
    n = 200_000
    run(benchmark, lambda: NumpyLOBSimulator(0).run(n), n, rounds=3)
