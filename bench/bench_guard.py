"""Issue 14: what the per-object thread guard costs on the single-thread path.

The guard adds one load and an untaken branch to every GIL-holding call (``update``) and a
lock acquire/release around every GIL-released batch (``update_many``). Run this file against
the build before the guard and the build with it, alternately, and compare (RESULTS.md #14):

    PYTHONPATH=/path/to/old/checkout python -m pytest bench/bench_guard.py --benchmark-only \
        --benchmark-columns=min,median,rounds -p no:cacheprovider
    python -m pytest bench/bench_guard.py --benchmark-only --benchmark-columns=min,median,rounds

Only public names (and ``_EmptyCall``, the call floor), so the file runs on both builds.
"""

import numpy as np
import pytest

import ofi_fast
from ofi_fast._ofi import _EmptyCall
from conftest import per_event, quotes

N_CALLS = 200_000
N_BATCH = 1_000_000


@pytest.fixture(scope="module")
def small():
    return tuple(a.tolist() for a in quotes(N_CALLS))


@pytest.fixture(scope="module")
def batch():
    return quotes(N_BATCH)


def _loop(obj, ts, bp, bs, ap, az):
    upd = obj.update
    for i in range(len(ts)):
        upd(ts[i], bp[i], bs[i], ap[i], az[i])


@pytest.mark.benchmark(group="guard: update from Python")
def test_ofi_update(benchmark, small):
    per_event(benchmark, N_CALLS)
    benchmark(lambda: _loop(ofi_fast.OFI(), *small))


@pytest.mark.benchmark(group="guard: update from Python")
def test_empty_cpdef_floor(benchmark, small):
    per_event(benchmark, N_CALLS)
    benchmark(lambda: _loop(_EmptyCall(), *small))


@pytest.mark.benchmark(group="guard: update from Python")
def test_rolling_ols_update(benchmark, small):
    per_event(benchmark, N_CALLS)
    x, y = small[2], small[4]

    def run():
        o = ofi_fast.RollingOLS(window=1000)
        upd = o.update
        for i in range(N_CALLS):
            upd(x[i], y[i])
    benchmark(run)


@pytest.mark.benchmark(group="guard: update_many 1e6")
def test_ofi_update_many_count_window(benchmark, batch):
    ts, bp, bs, ap, az = batch
    e = np.empty(N_BATCH)
    v = np.empty(N_BATCH)
    per_event(benchmark, N_BATCH)
    benchmark(lambda: ofi_fast.OFI(window=1000).update_many(
        ts, bp, bs, ap, az, out=e, rolling=True, rolling_out=v))


@pytest.mark.benchmark(group="guard: update_many 1e6")
def test_ofi_update_many_small_chunks(benchmark, batch):
    # 1,000 calls of 1,000 events: the per-call lock is paid 1,000 times
    ts, bp, bs, ap, az = batch
    e = np.empty(1000)
    per_event(benchmark, N_BATCH)

    def run():
        o = ofi_fast.OFI(window=1000)
        for k in range(0, N_BATCH, 1000):
            o.update_many(ts[k:k + 1000], bp[k:k + 1000], bs[k:k + 1000], ap[k:k + 1000],
                          az[k:k + 1000], out=e)
    benchmark(run)


@pytest.mark.benchmark(group="guard: update_many 1e6")
def test_trade_flow_update_many(benchmark, batch):
    ts, bp, bs, _, _ = batch
    side = np.where(bs > 250, 1, -1).astype(np.int8)
    per_event(benchmark, N_BATCH)
    benchmark(lambda: ofi_fast.TradeFlow(window=1000).update_many(ts, bp, bs, side))
