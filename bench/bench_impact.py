"""Prediction benchmarks: RollingOLS.update per event beside the empty-cpdef floor, bars on
1e7 events beside numpy/pandas, and the CKS day (features + per-window fits) end to end.

    python -m pytest bench/bench_impact.py --benchmark-only --benchmark-columns=min,median,rounds

Each benchmark stores extra_info["events"]; divide the times by it for ns/event.
Self-contained (no bench/conftest.py fixtures needed).
"""

from pathlib import Path

import numpy as np
import pytest

import ofi_fast
from ofi_fast import reference as ref
from ofi_fast._impact import RollingOLS, _EmptyOLSCall
from ofi_fast._ofi import _EmptyCall

N_CALLS = 200_000
N_BARS = 10_000_000
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lobster"


def per_event(benchmark, n):
    benchmark.extra_info["events"] = n


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=N_CALLS) * 50
    y = 0.04 * x + rng.normal(size=N_CALLS)
    return x.tolist(), y.tolist(), rng.normal(size=(N_CALLS, 5))


def _loop1(update, xs, ys):
    for i in range(len(xs)):
        update(xs[i], ys[i])


# --- RollingOLS.update, one regressor: the same Python loop around each callee ------------
@pytest.mark.benchmark(group="RollingOLS.update p=1 (per call)")
def test_ols_update_p1(benchmark, pairs):
    xs, ys, _ = pairs
    o = RollingOLS(window=180)
    per_event(benchmark, len(xs))
    benchmark(_loop1, o.update, xs, ys)
    assert o.n == 180


@pytest.mark.benchmark(group="RollingOLS.update p=1 (per call)")
def test_empty_cpdef_same_signature(benchmark, pairs):
    xs, ys, _ = pairs
    per_event(benchmark, len(xs))
    benchmark(_loop1, _EmptyOLSCall().update, xs, ys)


@pytest.mark.benchmark(group="RollingOLS.update p=1 (per call)")
def test_empty_cpdef_ofi_signature(benchmark, pairs):
    xs, ys, _ = pairs
    u = _EmptyCall().update

    def loop():
        for i in range(len(xs)):
            u(i, xs[i], ys[i], 1.0, 1.0)
    per_event(benchmark, len(xs))
    benchmark(loop)


@pytest.mark.benchmark(group="RollingOLS.update p=1 (per call)")
def test_python_welford_class(benchmark, pairs):
    """Plain-Python baseline: the same Welford add/remove over a deque."""
    from collections import deque
    xs, ys, _ = pairs

    class Welford:
        def __init__(self, w):
            self.w, self.q = w, deque()
            self.n = 0
            self.mx = self.my = self.cxx = self.cxy = 0.0

        def update(self, x, y):
            if len(self.q) == self.w:
                xa, ya = self.q.popleft()
                self.n -= 1
                dx = xa - self.mx
                self.mx -= dx / self.n
                self.my -= (ya - self.my) / self.n
                self.cxx -= dx * (xa - self.mx)
                self.cxy -= dx * (ya - self.my)
            self.q.append((x, y))
            self.n += 1
            dx = x - self.mx
            self.mx += dx / self.n
            self.my += (y - self.my) / self.n
            self.cxx += dx * (x - self.mx)
            self.cxy += dx * (y - self.my)
            return self.n
    w = Welford(180)
    per_event(benchmark, len(xs))
    benchmark(_loop1, w.update, xs, ys)
    o = RollingOLS(window=180)
    o.update_many(np.array(xs), np.array(ys))
    assert w.cxy / w.cxx == pytest.approx(o.beta, rel=1e-9)


@pytest.mark.benchmark(group="RollingOLS.update p=1 (per call)")
def test_reference_rolling_ols(benchmark, pairs):
    xs, ys, _ = pairs
    n = 20_000
    r = ref.RollingOLS(window=180)
    per_event(benchmark, n)
    benchmark.pedantic(_loop1, args=(r.update, xs[:n], ys[:n]), rounds=3)


# --- five regressors --------------------------------------------------------------------------
@pytest.mark.benchmark(group="RollingOLS.update p=5 (per call)")
def test_ols_update_p5_ndarray(benchmark, pairs):
    _, ys, X = pairs
    rows = list(X)
    o = RollingOLS(window=180, n_features=5)
    per_event(benchmark, len(rows))
    benchmark(_loop1, o.update, rows, ys)


@pytest.mark.benchmark(group="RollingOLS.update p=5 (per call)")
def test_ols_update_p5_list(benchmark, pairs):
    _, ys, X = pairs
    rows = X.tolist()
    o = RollingOLS(window=180, n_features=5)
    per_event(benchmark, len(rows))
    benchmark(_loop1, o.update, rows, ys)


@pytest.mark.benchmark(group="RollingOLS.update p=5 (per call)")
def test_empty_cpdef_p5(benchmark, pairs):
    _, ys, X = pairs
    rows = list(X)
    per_event(benchmark, len(rows))
    benchmark(_loop1, _EmptyOLSCall().update, rows, ys)


# --- batch: update_many with forecasts vs pandas rolling --------------------------------------
@pytest.mark.benchmark(group="rolling beta batch 1e6 (p=1)")
def test_update_many_forecast(benchmark):
    rng = np.random.default_rng(1)
    x = rng.normal(size=1_000_000)
    y = 0.5 * x + rng.normal(size=1_000_000)
    per_event(benchmark, len(x))
    benchmark(lambda: RollingOLS(window=180).update_many(x, y, forecast=True))


@pytest.mark.benchmark(group="rolling beta batch 1e6 (p=1)")
def test_pandas_rolling_cov_var(benchmark):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    x = rng.normal(size=1_000_000)
    y = 0.5 * x + rng.normal(size=1_000_000)
    sx, sy = pd.Series(x), pd.Series(y)
    per_event(benchmark, len(x))
    b = benchmark(lambda: sx.rolling(180).cov(sy) / sx.rolling(180).var())
    o = RollingOLS(window=180)
    o.update_many(x, y)
    assert b.iloc[-1] == pytest.approx(o.beta, rel=1e-9)


# --- bars on 1e7 events -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(2)
    ts = np.cumsum(rng.integers(0, 200_000, N_BARS)).astype(np.int64)   # ~10k events/s, ns
    v = rng.integers(-500, 500, N_BARS).astype(np.float64)
    return ts, v


EVERY = 10_000_000_000   # 10 s


@pytest.mark.benchmark(group="bars 1e7 events (10 s clock bars)")
def test_bars(benchmark, events):
    ts, v = events
    per_event(benchmark, len(ts))
    b = benchmark(ofi_fast.bars, ts, v, every=EVERY)
    assert b.count.sum() == len(ts)


def numpy_bars(ts, v, every):
    """numpy baseline: bar index by floor division, then bincount for sum/count and
    first/last by the positions where the index changes."""
    k = ts // every
    k -= k[0]
    nb = int(k[-1]) + 1
    s = np.bincount(k, weights=v, minlength=nb)
    c = np.bincount(k, minlength=nb)
    chg = np.flatnonzero(np.diff(k)) + 1
    first = np.full(nb, np.nan)
    last = np.full(nb, np.nan)
    first[k[np.r_[0, chg]]] = v[np.r_[0, chg]]
    last[k[np.r_[chg - 1, len(k) - 1]]] = v[np.r_[chg - 1, len(k) - 1]]
    return s, c, first, last


@pytest.mark.benchmark(group="bars 1e7 events (10 s clock bars)")
def test_numpy_bincount(benchmark, events):
    ts, v = events
    per_event(benchmark, len(ts))
    s, c, f, l = benchmark(numpy_bars, ts, v, EVERY)
    b = ofi_fast.bars(ts, v, every=EVERY)
    assert np.array_equal(s, b.sum) and np.array_equal(l, b.last, equal_nan=True)


@pytest.mark.benchmark(group="bars 1e7 events (10 s clock bars)")
def test_pandas_groupby(benchmark, events):
    pd = pytest.importorskip("pandas")
    ts, v = events
    df = pd.DataFrame({"k": ts // EVERY, "v": v})
    per_event(benchmark, len(ts))
    g = benchmark.pedantic(lambda: df.groupby("k")["v"].agg(["sum", "count", "first", "last"]),
                           rounds=3)
    assert g["count"].sum() == len(ts)



# --- event and volume bars on 1e7 events beside numpy (issue 13, helper trades4) ------------
# _segment_fast (trades3's branch-free kernel) behind event_bars / volume_bars; the numpy rows
# are np.add.reduceat over the bar starts (event bars) and floor(volume before / every) +
# bincount (volume bars), checked equal to ours.
EVERY_EVENTS = 100
EVERY_VOLUME = 50_000.0


def numpy_event_bars(v, every):
    starts = np.arange(0, len(v), every)
    s = np.add.reduceat(v, starts)
    c = np.diff(np.r_[starts, len(v)])
    return s, c, v[starts], v[np.r_[starts[1:] - 1, len(v) - 1]]


def numpy_volume_bars(vol, v, every):
    before = np.r_[0.0, np.cumsum(vol[:-1])]
    k = np.floor(before / every).astype(np.int64)
    chg = np.r_[0, np.flatnonzero(np.diff(k)) + 1]        # bars are never empty
    s = np.add.reduceat(v, chg)
    c = np.diff(np.r_[chg, len(v)])
    return s, c, v[chg], v[np.r_[chg[1:] - 1, len(v) - 1]]


@pytest.fixture(scope="module")
def volumes(events):
    rng = np.random.default_rng(3)
    return rng.integers(0, 1_000, N_BARS).astype(np.float64)


@pytest.mark.benchmark(group="event bars 1e7 events (100 events a bar)")
def test_event_bars(benchmark, events):
    _, v = events
    per_event(benchmark, len(v))
    b = benchmark(ofi_fast.event_bars, v, every=EVERY_EVENTS)
    assert b.count.sum() == len(v)


@pytest.mark.benchmark(group="event bars 1e7 events (100 events a bar)")
def test_numpy_reduceat_event_bars(benchmark, events):
    _, v = events
    per_event(benchmark, len(v))
    s, c, f, l = benchmark(numpy_event_bars, v, EVERY_EVENTS)
    b = ofi_fast.event_bars(v, every=EVERY_EVENTS)
    assert np.array_equal(s, b.sum) and np.array_equal(c, b.count)
    assert np.array_equal(f, b.first) and np.array_equal(l, b.last)


@pytest.mark.benchmark(group="volume bars 1e7 events (50,000 a bar)")
def test_volume_bars(benchmark, events, volumes):
    _, v = events
    per_event(benchmark, len(v))
    b = benchmark(ofi_fast.volume_bars, volumes, v, every=EVERY_VOLUME)
    assert b.count.sum() == len(v)


@pytest.mark.benchmark(group="volume bars 1e7 events (50,000 a bar)")
def test_numpy_reduceat_volume_bars(benchmark, events, volumes):
    _, v = events
    per_event(benchmark, len(v))
    s, c, f, l = benchmark(numpy_volume_bars, volumes, v, EVERY_VOLUME)
    b = ofi_fast.volume_bars(volumes, v, every=EVERY_VOLUME)
    assert np.array_equal(s, b.sum) and np.array_equal(c, b.count)
    assert np.array_equal(f, b.first) and np.array_equal(l, b.last)

# --- the CKS day end to end -------------------------------------------------------------------
@pytest.mark.benchmark(group="CKS day: features + 13 window fits")
def test_cks_features_and_fits(benchmark):
    from ofi_fast.analysis import features, impact_fits, read_lobster_zip
    path = DATA / "LOBSTER_SampleFile_AAPL_2012-06-21_1.zip"
    if not path.exists():
        pytest.skip(f"no data: {path}")
    q = read_lobster_zip(path)

    def run():
        t = features(q["ts"], q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"],
                     every=10 * 10**9, closed="right", tick_size=100.0, lot_size=100.0,
                     trades=(q["trade_ts"], q["trade_size"], q["trade_sign"]), frame=False)
        return impact_fits(t["start"], t["ofi"], t["dmid_ticks"], window=1800 * 10**9,
                           frame=False)
    per_event(benchmark, len(q["ts"]))
    fits = benchmark(run)
    assert len(fits["beta"]) == 13


# --- features end to end on the GOOG 10-level day ---------------------------------------------
@pytest.fixture(scope="module")
def goog10():
    from ofi_fast.analysis import read_lobster_zip
    path = DATA / "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"
    if not path.exists():
        pytest.skip(f"no data: {path}")
    return read_lobster_zip(path, level=10)


def _ml_features(q):
    """The real API: (n, 10) books in, ofi_1..ofi_10, depth-normalised OFIs, imbalances out."""
    from ofi_fast.analysis import features
    return features(q["ts"], q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"],
                    every=10 * 10**9, closed="right", tick_size=100.0, lot_size=100.0,
                    frame=False)


@pytest.mark.benchmark(group="features GOOG 10-level day (10 per-level OFIs, 10 s bars)")
def test_features_goog10(benchmark, goog10):
    per_event(benchmark, len(goog10["ts"]))
    t = benchmark(_ml_features, goog10)
    assert len(t["start"]) == 2340


def _numpy_e(bp, bs, ap, az):
    bp = np.where(np.isnan(bp), -np.inf, bp)
    ap = np.where(np.isnan(ap), np.inf, ap)
    e = np.zeros_like(bs)
    e[1:] = (np.where(bp[1:] >= bp[:-1], bs[1:], 0.0) - np.where(bp[1:] <= bp[:-1], bs[:-1], 0.0)
             - np.where(ap[1:] <= ap[:-1], az[1:], 0.0) + np.where(ap[1:] >= ap[:-1], az[:-1], 0.0))
    return e


@pytest.mark.benchmark(group="features GOOG 10-level day (10 per-level OFIs, 10 s bars)")
def test_pandas_features_goog10(benchmark, goog10):
    """pandas baseline: per-level e_n vectorised with numpy, mid, then one groupby per bar."""
    pd = pytest.importorskip("pandas")
    q = goog10

    def run():
        cols = {f"ofi_{m + 1}": _numpy_e(q["bid_px"][:, m], q["bid_sz"][:, m], q["ask_px"][:, m],
                                         q["ask_sz"][:, m]) / 100.0 for m in range(10)}
        cols["mid"] = 0.5 * (q["bid_px"][:, 0] + q["ask_px"][:, 0])
        cols["k"] = -((-q["ts"]) // (10 * 10**9)) - 1        # right-closed bars
        df = pd.DataFrame(cols)
        g = df.groupby("k")
        agg = g[[f"ofi_{m + 1}" for m in range(10)]].sum()
        agg["mid"] = g["mid"].last()
        agg["n_events"] = g.size()
        full = agg.reindex(range(agg.index[0], agg.index[-1] + 1))
        full["mid"] = full["mid"].ffill()
        full["dmid_ticks"] = full["mid"].diff() / 100.0
        return full.fillna(0.0)
    per_event(benchmark, len(q["ts"]))
    out = benchmark(run)
    t = _ml_features(q)
    np.testing.assert_allclose(out["ofi_3"].to_numpy(), t["ofi_3"], atol=1e-9)
