"""Best-level OFI benchmarks, each kernel beside its baselines in the same run.

    python -m pytest bench/bench_ofi.py --benchmark-only --benchmark-columns=min,median,rounds

Divide the times by extra_info["events"] for ns/event (tools/bench_table.py prints the table).
"""

import numpy as np
import pytest

import ofi_fast
from ofi_fast._ofi import _EmptyCall
from conftest import per_event, quotes

SIZES = [1_000_000, 10_000_000]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"n={n:.0e}")
def data(request):
    return quotes(request.param)


def numpy_l1_ofi(bp, bs, ap, az):
    """CKS eq. 10, vectorized with numpy (the usual pandas/numpy implementation)."""
    e = np.zeros_like(bs)
    db, da = bp[1:], ap[1:]
    pb, pa = bp[:-1], ap[:-1]
    e[1:] = (np.where(db >= pb, bs[1:], 0.0) - np.where(db <= pb, bs[:-1], 0.0)
             + np.where(da >= pa, az[:-1], 0.0) - np.where(da <= pa, az[1:], 0.0))
    return e


@pytest.mark.benchmark(group="l1_ofi batch")
def test_l1_ofi(benchmark, data):
    _, bp, bs, ap, az = data
    per_event(benchmark, len(bp))
    e = benchmark(ofi_fast.l1_ofi, bp, bs, ap, az)
    assert e.shape == bp.shape


@pytest.mark.benchmark(group="l1_ofi batch")
def test_l1_ofi_out(benchmark, data):
    # the same output buffer every call, as the C loop below: no allocation, no page faults
    _, bp, bs, ap, az = data
    per_event(benchmark, len(bp))
    out = np.empty_like(bp)
    benchmark(ofi_fast.l1_ofi, bp, bs, ap, az, out=out)


@pytest.mark.benchmark(group="l1_ofi batch")
def test_c_loop_O2(benchmark, data, c_l1_ofi):
    _, bp, bs, ap, az = data
    per_event(benchmark, len(bp))
    out = np.empty_like(bp)
    benchmark(c_l1_ofi, bp, bs, ap, az, out)
    assert np.array_equal(out, ofi_fast.l1_ofi(bp, bs, ap, az))


@pytest.mark.benchmark(group="l1_ofi batch")
def test_c_loop_O2_allocating(benchmark, data, c_l1_ofi):
    # the C loop with a fresh result array per call, as l1_ofi without out= does
    _, bp, bs, ap, az = data
    per_event(benchmark, len(bp))
    benchmark(lambda: c_l1_ofi(bp, bs, ap, az, np.empty_like(bp)))


@pytest.mark.benchmark(group="l1_ofi batch")
def test_numpy_vectorized(benchmark, data):
    _, bp, bs, ap, az = data
    per_event(benchmark, len(bp))
    e = benchmark(numpy_l1_ofi, bp, bs, ap, az)
    assert np.array_equal(e, ofi_fast.l1_ofi(bp, bs, ap, az))


@pytest.mark.benchmark(group="l1_ofi batch")
def test_numba(benchmark, data):
    numba = pytest.importorskip("numba")

    @numba.njit(cache=False)
    def nb_l1_ofi(bp, bs, ap, az):
        out = np.zeros_like(bs)
        for i in range(1, bp.shape[0]):
            bid = bs[i] if bp[i] >= bp[i - 1] else 0.0
            if bp[i] <= bp[i - 1]:
                bid -= bs[i - 1]
            ask = az[i - 1] if ap[i] >= ap[i - 1] else 0.0
            if ap[i] <= ap[i - 1]:
                ask -= az[i]
            out[i] = bid + ask
        return out
    _, bp, bs, ap, az = data
    nb_l1_ofi(bp[:10], bs[:10], ap[:10], az[:10])
    per_event(benchmark, len(bp))
    e = benchmark(nb_l1_ofi, bp, bs, ap, az)
    assert np.array_equal(e, ofi_fast.l1_ofi(bp, bs, ap, az))


@pytest.mark.benchmark(group="l1_ofi batch")
def test_python_loop(benchmark):
    # a plain Python loop over lists (100k events: the 1e6/1e7 runs would take minutes)
    n = 100_000
    _, bp, bs, ap, az = (a.tolist() for a in quotes(n))
    from ofi_fast.reference import l1_ofi_event

    def loop():
        out = [0.0]
        for i in range(1, n):
            out.append(l1_ofi_event((bp[i - 1], bs[i - 1], ap[i - 1], az[i - 1]),
                                    (bp[i], bs[i], ap[i], az[i])))
        return out
    per_event(benchmark, n)
    benchmark.pedantic(loop, rounds=3)


# --- streaming: OFI.update from Python vs the empty cpdef call floor -----------------------
N_CALLS = 200_000


def _loop(obj, ts, bp, bs, ap, az):
    upd = obj.update
    for i in range(len(ts)):
        upd(ts[i], bp[i], bs[i], ap[i], az[i])


@pytest.fixture(scope="module")
def small():
    return tuple(a.tolist() for a in quotes(N_CALLS))


@pytest.mark.benchmark(group="update from Python (1 s time window)")
def test_update_time_window(benchmark, small):
    per_event(benchmark, N_CALLS)

    def run():
        _loop(ofi_fast.OFI(window_time=1_000_000_000), *small)
    benchmark(run)


@pytest.mark.benchmark(group="update from Python (1 s time window)")
def test_empty_cpdef_floor(benchmark, small):
    per_event(benchmark, N_CALLS)

    def run():
        _loop(_EmptyCall(), *small)
    benchmark(run)


# --- update_many with a rolling window vs l1_ofi --------------------------------------------
# Every variant writes into the same preallocated buffers. The stream's inter-arrival times are
# uniform in [1, 200 us), so the number of events leaving a 1 s window varies from event to
# event; "regular" spaces them 100 us apart (one leaves per event).
GROUP = "update_many 1e7 (rolling out)"


@pytest.fixture(scope="module")
def big():
    return quotes(10_000_000)


def _rolling(benchmark, ts, bp, bs, ap, az, **window):
    per_event(benchmark, len(ts))
    e_out, v_out = np.empty_like(bp), np.empty_like(bp)

    def run():
        ofi_fast.OFI(**window).update_many(ts, bp, bs, ap, az, out=e_out, rolling=True,
                                           rolling_out=v_out)
    benchmark(run)


@pytest.mark.benchmark(group=GROUP)
def test_update_many_rolling(benchmark, big):
    _rolling(benchmark, *big, window_time=1_000_000_000)


@pytest.mark.benchmark(group=GROUP)
def test_update_many_rolling_regular_arrivals(benchmark, big):
    ts = np.arange(len(big[0]), dtype=np.int64) * 100_000
    _rolling(benchmark, ts, *big[1:], window_time=1_000_000_000)


@pytest.mark.benchmark(group=GROUP)
def test_update_many_rolling_count_window(benchmark, big):
    _rolling(benchmark, *big, window=10_000)


@pytest.mark.benchmark(group=GROUP)
def test_update_many_vs_l1_ofi(benchmark, big):
    _, bp, bs, ap, az = big
    per_event(benchmark, len(bp))
    out = np.empty_like(bp)
    benchmark(ofi_fast.l1_ofi, bp, bs, ap, az, out=out)
