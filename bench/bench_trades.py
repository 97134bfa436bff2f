"""Benchmarks of ofi_fast._trades beside numpy / pandas / plain-Python baselines, same run.

    python -m pytest bench/bench_trades.py --benchmark-only --benchmark-columns=min,median

Per-event cost = time / N (N in each test's name). Targets (issue 3): update_many and
classify_trades (tick, quote, lee_ready, emo) <= 5 ns/trade; TradeFlow.update from Python
<= 1.5x the empty-cpdef floor (_EmptyTradeCall.update, same signature) measured here.
Issue 13 rows: the branch-free C loops of bench/cloop.c doing the same work ("limit") and a
numba VPIN bucket loop ("peer"); `python tools/bench_table.py JSON` prints the ratios.
"""

import numpy as np
import pytest

from conftest import per_event
from ofi_fast._trades import TradeFlow, _EmptyTradeCall, classify_trades, trade_flow, vpin

N = 1_000_000          # batch kernels
N_CALL = 100_000       # Python-level calls
N_PY = 20_000          # plain-Python loops (slow)


def _stream(n, seed=7):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
    mid2 = 200_000 + np.cumsum(rng.integers(-1, 2, n))             # twice the mid, in ticks
    spread = rng.integers(1, 4, n)
    bid = ((mid2 - spread) // 2).astype(float)
    ask = bid + spread
    # trades at the bid, the ask, the mid or inside
    px = np.where(rng.random(n) < 0.5, bid, ask) + rng.integers(0, 2, n) * (ask > bid + 1)
    size = rng.integers(1, 100, n).astype(float)
    side = rng.integers(-1, 2, n).astype(np.int8)
    return ts, px.astype(float), size, side, bid, ask


TS, PX, SIZE, SIDE, BID, ASK = _stream(N)


# ---- classification -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tick", "quote", "lee_ready", "emo"])
def test_classify_ofi_fast_1e6(benchmark, method):
    benchmark.group = f"classify {method} (N=1e6)"
    per_event(benchmark, N, "ours")
    out = benchmark(classify_trades, PX, method=method, bid_px=BID, ask_px=ASK)
    np.testing.assert_array_equal(out, _np_classify(PX, BID, ASK, method))


def _np_tick(p):
    s = np.zeros(len(p), dtype=np.int8)
    s[1:] = np.sign(np.diff(p))
    idx = np.where(s != 0, np.arange(len(p)), 0)
    np.maximum.accumulate(idx, out=idx)
    return s[idx]


def _np_classify(p, b, a, method):
    tick = _np_tick(p)
    if method == "tick":
        return tick
    valid = b < a
    if method == "emo":
        q = np.where(p == a, 1, np.where(p == b, -1, tick))
        return np.where(valid, q, tick).astype(np.int8)
    q = np.sign(2 * p - (a + b)).astype(np.int8)
    if method == "lee_ready":
        q = np.where(q == 0, tick, q)
    return np.where(valid, q, tick).astype(np.int8)


@pytest.mark.parametrize("method", ["tick", "quote", "lee_ready", "emo"])
def test_classify_numpy_1e6(benchmark, method):
    benchmark.group = f"classify {method} (N=1e6)"
    per_event(benchmark, N, "peer")
    benchmark(_np_classify, PX, BID, ASK, method)


def _py_lee_ready(p, b, a):
    out, last, prev = [], 0, None
    for pi, bi, ai in zip(p, b, a):
        if prev is not None and pi != prev:
            last = 1 if pi > prev else -1
        prev = pi
        m2 = bi + ai
        out.append(1 if 2 * pi > m2 else (-1 if 2 * pi < m2 else last))
    return out


def test_classify_lee_ready_python_loop_2e4(benchmark):
    benchmark.group = "classify lee_ready (N=1e6)"
    per_event(benchmark, N_PY)
    p, b, a = PX[:N_PY].tolist(), BID[:N_PY].tolist(), ASK[:N_PY].tolist()
    benchmark(_py_lee_ready, p, b, a)


# ---- trade flow -----------------------------------------------------------------------------
@pytest.mark.parametrize("window", [None, 1000])
def test_tradeflow_update_many_1e6(benchmark, window):
    benchmark.group = f"TradeFlow.update_many window={window} (N=1e6)"
    per_event(benchmark, N, "ours")

    def run():
        return TradeFlow(window=window).update_many(TS, PX, SIZE, SIDE)
    benchmark(run)


def test_tradeflow_update_many_classify_lee_ready_1e6(benchmark):
    benchmark.group = "TradeFlow.update_many window=None (N=1e6)"
    per_event(benchmark, N)
    zero = np.zeros(N, dtype=np.int8)

    def run():
        return TradeFlow(classify="lee_ready").update_many(TS, PX, SIZE, zero, bid_px=BID,
                                                           ask_px=ASK)
    benchmark(run)


def _np_flow(size, side, window):
    sv = side * size
    if window is None:
        b = np.cumsum(np.where(side == 1, size, 0.0))
        s = np.cumsum(np.where(side == -1, size, 0.0))
    else:
        import pandas as pd
        b = pd.Series(np.where(side == 1, size, 0.0)).rolling(window, min_periods=1).sum()
        s = pd.Series(np.where(side == -1, size, 0.0)).rolling(window, min_periods=1).sum()
        b, s = b.to_numpy(), s.to_numpy()
    tot = b + s
    with np.errstate(invalid="ignore", divide="ignore"):
        imb = np.where(tot > 0, (b - s) / tot, 0.0)
    return sv, imb


@pytest.mark.parametrize("window", [None, 1000])
def test_tradeflow_numpy_pandas_1e6(benchmark, window):
    benchmark.group = f"TradeFlow.update_many window={window} (N=1e6)"
    per_event(benchmark, N, "peer")
    benchmark(_np_flow, SIZE, SIDE, window)


@pytest.mark.parametrize("window", [None, 1000])
def test_tradeflow_rolling_ofi_fast_1e6(benchmark, window):
    benchmark.group = f"TradeFlow.update_many window={window} (N=1e6)"
    per_event(benchmark, N)
    sv, imb = benchmark(trade_flow, TS, PX, SIZE, SIDE, window=window, rolling=True)
    want = _np_flow(SIZE, SIDE, window)
    np.testing.assert_array_equal(sv, want[0])
    np.testing.assert_allclose(imb, want[1], rtol=1e-9, atol=1e-12)


def test_update_from_python_1e5(benchmark):
    benchmark.group = "TradeFlow.update from Python (N=1e5)"
    per_event(benchmark, N_CALL, "ours")
    ts, px, sz, sd = TS[:N_CALL].tolist(), PX[:N_CALL].tolist(), SIZE[:N_CALL].tolist(), \
        SIDE[:N_CALL].tolist()

    def run():
        upd = TradeFlow().update
        for i in range(N_CALL):
            upd(ts[i], px[i], sz[i], sd[i])
    benchmark(run)


def test_update_floor_empty_cpdef_1e5(benchmark):
    benchmark.group = "TradeFlow.update from Python (N=1e5)"
    per_event(benchmark, N_CALL, "limit")
    ts, px, sz, sd = TS[:N_CALL].tolist(), PX[:N_CALL].tolist(), SIZE[:N_CALL].tolist(), \
        SIDE[:N_CALL].tolist()

    def run():
        upd = _EmptyTradeCall().update
        for i in range(N_CALL):
            upd(ts[i], px[i], sz[i], sd[i])
    benchmark(run)


# ---- VPIN -----------------------------------------------------------------------------------
V, NB = 5000.0, 50


def test_vpin_ofi_fast_1e6(benchmark):
    benchmark.group = "vpin (N=1e6, V=5000, n=50)"
    per_event(benchmark, N, "ours")
    r = benchmark(vpin, TS, SIZE, SIDE, bucket_volume=V, n_buckets=NB)
    want = _np_vpin(TS, SIZE, SIDE, V, NB)
    np.testing.assert_array_equal(r.ts, want[0])
    np.testing.assert_allclose(r.vpin, want[1], rtol=1e-9, atol=1e-12)


def _np_vpin(ts, size, side, V, nb):
    """Vectorised VPIN: buy volume is piecewise linear in cumulative volume, so the buy volume
    at each bucket boundary k V is an interpolation; bucket closes at the trade that reaches it."""
    cum = np.concatenate([[0.0], np.cumsum(size)])
    cumb = np.concatenate([[0.0], np.cumsum(size * 0.5 * (side + 1))])
    k = np.arange(1, int(cum[-1] // V) + 1) * V
    bb = np.diff(np.concatenate([[0.0], np.interp(k, cum, cumb)]))
    imb = np.abs(V - 2 * bb)
    c = np.concatenate([[0.0], np.cumsum(imb)])
    v = np.full(len(k), np.nan)
    v[nb - 1:] = (c[nb:] - c[:-nb]) / (nb * V)
    close = np.searchsorted(cum, k, side="left") - 1
    return ts[close], v


def test_vpin_numpy_1e6(benchmark):
    benchmark.group = "vpin (N=1e6, V=5000, n=50)"
    per_event(benchmark, N)
    benchmark(_np_vpin, TS, SIZE, SIDE, V, NB)


# ---- issue 13: the limits (branch-free C loops of bench/cloop.c doing the same work, numba) --
# The C loops do the package's work without validation: the same compensated (TwoSum) sums by
# side, the same ring and window, the signed volume out; tools/check_branches.py checks that
# their inner loops (and the package's kernels) have no conditional jump but the loop's own.
W_TIME = 1000          # ts units; TS advances 0-4 per trade: ~500 trades in the window


def _cfun(lib, name, argtypes):
    import ctypes
    f = getattr(lib, name)
    f.argtypes = [ctypes.c_void_p if a == "p" else (ctypes.c_long if a == "l" else
                  (ctypes.c_int64 if a == "i" else ctypes.c_double)) for a in argtypes]
    f.restype = None
    return f


@pytest.fixture(scope="module", params=["-O2", "-O3"])
def cl(request, cloop_O2, cloop_O3):
    return (cloop_O2 if request.param == "-O2" else cloop_O3), request.param


@pytest.mark.parametrize("method", ["tick", "lee_ready"])
def test_classify_c_limit_1e6(benchmark, cl, method):
    lib, opt = cl
    benchmark.group = f"classify {method} (N=1e6)"
    per_event(benchmark, N, "limit")
    out = np.empty(N, dtype=np.int8)
    if method == "tick":
        f = _cfun(lib.lib, "classify_tick_c", "ppl")
        benchmark(f, PX.ctypes.data, out.ctypes.data, N)
    else:
        f = _cfun(lib.lib, "classify_lee_ready_c", "ppppl")
        benchmark(f, PX.ctypes.data, BID.ctypes.data, ASK.ctypes.data, out.ctypes.data, N)
    np.testing.assert_array_equal(out, _np_classify(PX, BID, ASK, method))


def _c_flow(lib, kind, out):
    vol, comp, cnt = np.zeros(3), np.zeros(3), np.zeros(3, dtype=np.int64)
    if kind is None:
        f = _cfun(lib, "tradeflow_plain_c", "ppppppl")
        args = (SIZE.ctypes.data, SIDE.ctypes.data, out.ctypes.data, vol.ctypes.data,
                comp.ctypes.data, cnt.ctypes.data, N)
    else:
        cap = 1000 if kind == "count" else 65536
        keep = np.empty(cap, np.int64), np.empty(cap), np.empty(cap, np.int8)
        common = (TS.ctypes.data, SIZE.ctypes.data, SIDE.ctypes.data, out.ctypes.data,
                  vol.ctypes.data, comp.ctypes.data, cnt.ctypes.data, N)
        ring = tuple(a.ctypes.data for a in keep)
        if kind == "count":
            f = _cfun(lib, "tradeflow_count_c", "pppppppllppp")
            args = common + (1000,) + ring
        else:
            f = _cfun(lib, "tradeflow_time_c", "ppppppplipppl")
            args = common + (W_TIME,) + ring + (cap,)
    # the ring arrays ride along in args' owner tuple: only their addresses are in args
    return f, args, (vol, comp, cnt, keep if kind else ())


def _flow_kw(kind):
    return {None: {}, "count": {"window": 1000}, "time": {"window_time": W_TIME}}[kind]


@pytest.mark.parametrize("kind", [None, "count", "time"])
def test_tradeflow_ofi_fast_issue13_1e6(benchmark, kind):
    benchmark.group = f"issue 13 TradeFlow.update_many {kind or 'no'} window (N=1e6)"
    per_event(benchmark, N, "ours")
    out = np.empty(N)

    def run():
        tf = TradeFlow(**_flow_kw(kind))
        tf.update_many(TS, PX, SIZE, SIDE, out=out)
        return tf
    tf = benchmark(run)
    assert tf.n_events == N


@pytest.mark.parametrize("kind", [None, "count", "time"])
def test_tradeflow_c_limit_1e6(benchmark, cl, kind):
    lib, opt = cl
    benchmark.group = f"issue 13 TradeFlow.update_many {kind or 'no'} window (N=1e6)"
    per_event(benchmark, N, "limit")
    out = np.empty(N)
    f, args, (vol, comp, cnt, _keep) = _c_flow(lib.lib, kind, out)
    benchmark(f, *args)
    tf = TradeFlow(**_flow_kw(kind))
    want = tf.update_many(TS, PX, SIZE, SIDE)
    np.testing.assert_array_equal(out, want)         # the same work: the same signed volume
    assert (vol[2] + comp[2], vol[0] + comp[0], vol[1] + comp[1]) == \
        (tf.buy_volume, tf.sell_volume, tf.unknown_volume)


def _numba_vpin():
    numba = pytest.importorskip("numba")

    @numba.njit(cache=False)
    def run(ts, size, side, V, nb, imb, ots, ov):
        fill = 0.0
        buy = 0.0
        s = 0.0
        c = 0.0
        head = 0
        closed = 0
        for i in range(len(size)):
            q = size[i]
            f = 0.5 * (side[i] + 1)
            while q > 0.0:
                room = V - fill
                if q < room:
                    fill += q
                    buy += q * f
                    break
                b = buy + room * f
                q -= room
                x = abs(V - 2.0 * b)
                if closed >= nb:
                    y = -imb[head]
                    t = s + y
                    z = t - s
                    c += (s - (t - z)) + (y - z)
                    s = t
                t = s + x
                z = t - s
                c += (s - (t - z)) + (x - z)
                s = t
                imb[head] = x
                head += 1
                if head == nb:
                    head = 0
                ots[closed] = ts[i]
                closed += 1
                ov[closed - 1] = (s + c) / (nb * V) if closed >= nb else np.nan
                fill = 0.0
                buy = 0.0
        return closed
    return run


def test_vpin_numba_bucket_loop_1e6(benchmark):
    benchmark.group = "vpin (N=1e6, V=5000, n=50)"
    per_event(benchmark, N, "peer")
    run = _numba_vpin()
    cap = int(SIZE.sum() // V) + 16
    imb, ots, ov = np.empty(NB), np.empty(cap, np.int64), np.empty(cap)
    run(TS[:10], SIZE[:10], SIDE[:10], V, NB, imb, ots, ov)      # compile outside the timing
    k = benchmark(run, TS, SIZE, SIDE, V, NB, imb, ots, ov)
    r = vpin(TS, SIZE, SIDE, bucket_volume=V, n_buckets=NB)
    np.testing.assert_array_equal(ots[:k], r.ts)
    np.testing.assert_array_equal(ov[:k], r.vpin)          # the same loop: the same bits
