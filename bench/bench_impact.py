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
