"""Bars, RollingOLS and fit_impact: THEORY-DETAIL vectors H and I, differential tests against
reference.py and numpy.linalg.lstsq, numerical stability, bad input, pickling, real data."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import special_rows
from ofi_fast import reference as ref
from ofi_fast._impact import (
    RollingOLS, bar_mid, bars, event_bars, fit_impact, volume_bars,
)
from ofi_fast.errors import CapacityError, NonFiniteError, OFIError, TimeOrderError

# ---------------------------------------------------------------------------------------------
# Test vector I (THEORY-DETAIL 9.1)
# ---------------------------------------------------------------------------------------------
XI = [1.0, 2.0, 3.0, 4.0]
YI = [2.0, 4.0, 5.0, 8.0]


def test_vector_I_fit_impact():
    f = fit_impact(XI, YI, lags=1)
    assert f.beta == pytest.approx(1.9, abs=1e-12)
    assert f.alpha == pytest.approx(0.0, abs=1e-12)
    assert f.r2 == pytest.approx(90.25 / 93.75, abs=1e-12)
    assert f.se_beta == pytest.approx(math.sqrt(0.35 / 5), abs=1e-12)
    assert f.t_beta == pytest.approx(7.1813, abs=1e-4)
    assert f.se_beta_robust == pytest.approx(0.119164, abs=1e-6)
    assert f.t_beta_robust == pytest.approx(15.9444, abs=1e-4)
    assert f.n == 4 and f.lags == 1
    f2 = fit_impact(XI, YI, lags=1, small_sample=True)
    assert f2.se_beta_robust == pytest.approx(0.168523, abs=1e-6)
    assert f2.t_beta_robust == pytest.approx(11.2744, abs=1e-4)
    # lags=0 is White's HC0: sum u^2 = 0.515
    f0 = fit_impact(XI, YI, lags=0)
    assert f0.t_beta_robust == pytest.approx(1.9 / (math.sqrt(0.515) / 5), rel=1e-12)
    assert f0.t_beta_hc == f0.t_beta_robust


def test_vector_I_rolling():
    o = RollingOLS(window=3)
    for x, y in zip(XI[:3], YI[:3]):
        o.update(x, y)
    assert o.beta == pytest.approx(1.5, abs=1e-12)
    assert o.alpha == pytest.approx(2 / 3, abs=1e-12)
    assert o.r2 == pytest.approx(0.964286, abs=1e-6)
    assert o.update(XI[3], YI[3]) == 3
    assert o.beta == pytest.approx(2.0, abs=1e-12)
    assert o.alpha == pytest.approx(-1 / 3, abs=1e-12)
    assert o.r2 == pytest.approx(0.923077, abs=1e-6)
    m = o.moments()
    assert m["n"] == 3
    assert m["mean_x"][0] == pytest.approx(3.0, abs=1e-12)
    assert m["mean_y"] == pytest.approx(17 / 3, abs=1e-12)
    assert m["cxx"][0, 0] == pytest.approx(2.0, abs=1e-12)
    assert m["cxy"][0] == pytest.approx(4.0, abs=1e-12)
    assert o.predict(5.0) == pytest.approx(-1 / 3 + 10.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# fit_impact
# ---------------------------------------------------------------------------------------------
def test_fit_impact_vs_lstsq_and_reference(rng):
    x = rng.normal(size=500) * 30
    y = 0.04 * x + rng.normal(size=500)
    f = fit_impact(x, y)
    a = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    assert f.beta == pytest.approx(coef[1], rel=1e-10)
    assert f.alpha == pytest.approx(coef[0], rel=1e-8, abs=1e-12)
    r = ref.fit_impact(list(x), list(y))
    for k in ("beta", "alpha", "r2", "t_beta", "t_alpha", "t_beta_hc", "t_beta_robust"):
        assert getattr(f, k) == pytest.approx(r[k], rel=1e-9, abs=1e-12), k
    assert f.lags == r["lags"] == math.floor(4 * (500 / 100) ** (2 / 9))


def test_fit_impact_edge_cases():
    nan = float("nan")
    f = fit_impact([1.0], [2.0])
    assert f.n == 1 and math.isnan(f.beta)
    f = fit_impact([0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 1.0])     # constant OFI
    assert math.isnan(f.beta) and math.isnan(f.t_beta)
    f = fit_impact([1.0, 2.0, 3.0], [1.0, 1.0, 1.0])               # constant dmid
    assert f.beta == 0.0 and math.isnan(f.r2)
    f = fit_impact([1.0, 2.0], [1.0, 3.0])                         # n = 2: no t
    assert f.beta == pytest.approx(2.0) and math.isnan(f.t_beta)
    f = fit_impact([1.0, nan, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, nan, 8.0])
    assert f.n == 3 and f.n_skipped == 2
    with pytest.raises(NonFiniteError) as ei:
        fit_impact([1.0, math.inf, 2.0], [1.0, 2.0, 3.0])
    assert ei.value.field == "ofi" and ei.value.index == 1
    with pytest.raises(OFIError):
        fit_impact([1.0, 2.0], [1.0])


def test_fit_impact_large_offsets(rng):
    # Centred two-pass sums: a 1e9 offset in both variables must not change beta.
    x = rng.normal(size=200)
    y = 0.5 * x + 0.1 * rng.normal(size=200)
    f0 = fit_impact(x, y)
    f1 = fit_impact(x + 1e9, y + 1e9)
    assert f1.beta == pytest.approx(f0.beta, rel=1e-6)
    assert f1.r2 == pytest.approx(f0.r2, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# RollingOLS
# ---------------------------------------------------------------------------------------------
def _lstsq(x, y):
    a = np.column_stack([np.ones(len(y)), x])
    c, *_ = np.linalg.lstsq(a, y, rcond=None)
    return c[1:], c[0]


@pytest.mark.parametrize("p", [1, 3, 5])
def test_rolling_vs_refit_each_window(rng, p):
    n, w = 300, 40
    x = rng.normal(size=(n, p)) * rng.uniform(1, 50, size=p)
    y = x @ rng.normal(size=p) + rng.normal(size=n)
    o = RollingOLS(window=w, n_features=p)
    for i in range(n):
        o.update(x[i] if p > 1 else float(x[i, 0]), y[i])
        if i >= p + 2:
            lo = max(0, i + 1 - w)
            b, a = _lstsq(x[lo:i + 1], y[lo:i + 1])
            assert np.allclose(np.atleast_1d(o.beta), b, rtol=1e-8, atol=1e-10)
            assert o.alpha == pytest.approx(a, rel=1e-8, abs=1e-9)
            assert o.n == i + 1 - lo


def test_rolling_time_window_vs_reference(rng):
    n = 400
    ts = np.cumsum(rng.integers(0, 5, n))
    x = rng.normal(size=(n, 2))
    y = x @ [1.0, -2.0] + rng.normal(size=n)
    o = RollingOLS(window_time=30, n_features=2, capacity=8, grow=True)
    r = ref.RollingOLS(window_time=30, n_features=2)
    for i in range(n):
        assert o.update(x[i], y[i], ts=int(ts[i])) == r.update(x[i], y[i], ts=int(ts[i]))
        if i % 7 == 0:
            rb = r.beta
            if isinstance(rb, list) and not math.isnan(rb[0]):
                assert np.allclose(o.beta, rb, rtol=1e-8, atol=1e-10)
                assert o.r2 == pytest.approx(r.r2, rel=1e-8, abs=1e-10)


def test_rolling_drift_1e6_updates():
    # 10^6 add/remove updates; the result must match a fresh fit within 1e-9 relative.
    rng = np.random.default_rng(7)
    n, w = 1_000_000, 500
    x = rng.normal(size=n) * 100 + 5000.0
    y = 0.03 * x + rng.normal(size=n)
    o = RollingOLS(window=w)
    o.update_many(x, y)
    b, a = _lstsq(x[-w:], y[-w:])
    assert o.beta == pytest.approx(b[0], rel=1e-9)
    assert o.alpha == pytest.approx(a, rel=1e-9)
    f = RollingOLS(window=w)
    f.update_many(x[-w:], y[-w:])
    assert o.r2 == pytest.approx(f.r2, rel=1e-9)


def test_rolling_large_prices_no_cancellation(rng):
    # |mean| / std = 1e8: raw sums (sum x^2 - n mx^2) would lose every digit.
    n, w = 5000, 100
    x = 1e8 + rng.normal(size=n)
    y = 2e8 + 0.7 * (x - 1e8) + 0.01 * rng.normal(size=n)
    o = RollingOLS(window=w)
    for i in range(n):
        o.update(float(x[i]), y[i])
    xs, ys = x[-w:] - 1e8, y[-w:] - 2e8     # exact shift, then a well-conditioned fit
    b, _ = _lstsq(xs, ys)
    assert o.beta == pytest.approx(b[0], rel=1e-6)
    assert not o.singular


def test_rolling_singular_and_ridge():
    o = RollingOLS(window=5, n_features=2)
    for i in range(5):
        o.update([float(i), 2.0 * i], float(i))            # collinear
    assert o.singular and np.all(np.isnan(o.beta)) and math.isnan(o.alpha)
    assert math.isnan(o.predict([1.0, 2.0]))
    o1 = RollingOLS(window=4)
    for v in [3.0, 3.0, 3.0, 3.0]:
        o1.update(v, v + 1)
    assert o1.singular and math.isnan(o1.beta) and math.isnan(o1.r2)
    # ridge: (Cxx + lam I) beta = Cxy
    rg = RollingOLS(window=5, n_features=2, ridge=0.5)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [3.0, 5.0], [1.0, 1.0]])
    y = np.array([1.0, 2.0, 0.0, 4.0, 1.0])
    rg.update_many(x, y)
    xc, yc = x - x.mean(0), y - y.mean()
    b = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(2), xc.T @ yc)
    assert np.allclose(rg.beta, b, rtol=1e-12)
    r = ref.RollingOLS(window=5, n_features=2, ridge=0.5)
    for i in range(5):
        r.update(x[i], y[i])
    assert np.allclose(rg.beta, r.beta, rtol=1e-12)
    assert rg.r2 == pytest.approx(r.r2, rel=1e-12)


@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50), st.integers(0, 3)),
                min_size=1, max_size=80),
       st.integers(1, 12), st.lists(st.integers(1, 9), min_size=1, max_size=10))
def test_one_by_one_equals_chunks_equals_reference(rows, w, chunks):
    x = np.array([r[0] for r in rows], dtype=float)
    y = np.array([r[1] for r in rows], dtype=float)
    ts = np.cumsum([r[2] for r in rows])
    a = RollingOLS(window=w)
    fa = []
    for i in range(len(x)):
        fa.append(a.predict(x[i]))
        a.update(float(x[i]), y[i], ts=int(ts[i]))
    b = RollingOLS(window=w)
    fb, i = [], 0
    k = 0
    while i < len(x):
        j = min(len(x), i + chunks[k % len(chunks)])
        fb.extend(b.update_many(x[i:j], y[i:j], ts[i:j], forecast=True))
        i, k = j, k + 1
    np.testing.assert_array_equal(np.array(fa), np.array(fb))     # bitwise
    assert (a.beta == b.beta) or (math.isnan(a.beta) and math.isnan(b.beta))
    r = ref.RollingOLS(window=w)
    for i in range(len(x)):
        r.update(x[i], y[i])
    rb = r.beta
    if math.isnan(rb):
        # the reference is singular exactly when x is constant in the window
        assert a.singular
    else:
        assert a.beta == pytest.approx(rb, rel=1e-9, abs=1e-9)
        assert a.alpha == pytest.approx(r.alpha, rel=1e-9, abs=1e-9)


@given(st.integers(0, 2**32 - 1), st.integers(1, 250), st.integers(1, 3),
       st.sampled_from(["count", "time"]), st.integers(1, 40), st.integers(1, 4),
       st.integers(1, 50))
def test_ring_wraps_and_grows_holds_the_window(seed, n, p, kind, win, cap, chunk):
    """The ring (count window: wraps every `win` pairs, one regressor on the in-place slide;
    time window from `cap` slots with grow=True: several doublings while wrapped) holds exactly
    the pairs of the window, oldest first, x row then y; an exact recompute from it gives the
    reference's moments and fit."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-20, 21, (n, p)).astype(float)
    y = rng.integers(-20, 21, n).astype(float)
    ts = np.cumsum(rng.integers(0, 4, n)).astype(np.int64)
    kw = ({"window": win} if kind == "count"
          else {"window_time": win, "capacity": cap, "grow": True})
    a = RollingOLS(n_features=p, **kw)
    for s in range(0, n, chunk):
        a.update_many(x[s:s + chunk] if p > 1 else x[s:s + chunk, 0], y[s:s + chunk],
                      ts[s:s + chunk])
    keep = (np.arange(n) >= n - win) if kind == "count" else (ts > ts[-1] - win)
    rts, rxs, rys = a.__reduce__()[2]["ring"]
    np.testing.assert_array_equal(rts, ts[keep])
    np.testing.assert_array_equal(rxs, x[keep])
    np.testing.assert_array_equal(rys, y[keep])
    assert a.n == keep.sum()
    if kind == "time":    # doubled whenever a pair found the ring full (after evictions)
        c = cap
        for i in range(n):
            c *= 2 if (ts[: i + 1] > ts[i] - win).sum() > c else 1
        assert a.capacity == c
    a.recompute()
    m = a.moments()
    xk, yk = x[keep], y[keep]
    np.testing.assert_allclose(m["mean_x"], xk.mean(axis=0), rtol=1e-13, atol=1e-13)
    assert m["mean_y"] == pytest.approx(yk.mean(), rel=1e-13, abs=1e-13)
    dx, dy = xk - xk.mean(axis=0), yk - yk.mean()
    np.testing.assert_allclose(m["cxx"], dx.T @ dx, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(m["cxy"], dx.T @ dy, rtol=1e-12, atol=1e-9)
    assert m["cyy"] == pytest.approx(dy @ dy, rel=1e-12, abs=1e-9)
    r = ref.RollingOLS(n_features=p, **{k: v for k, v in kw.items() if k.startswith("window")})
    for i in range(n):
        r.update(x[i] if p > 1 else float(x[i, 0]), y[i], ts=int(ts[i]))
    rb = r.beta
    if not a.singular and not np.any(np.isnan(np.atleast_1d(rb))):
        np.testing.assert_allclose(np.atleast_1d(a.beta), np.atleast_1d(rb),
                                   rtol=1e-7, atol=1e-9)


def test_pickle_mid_stream(rng):
    x = rng.normal(size=(200, 3))
    y = rng.normal(size=200)
    ts = np.cumsum(rng.integers(0, 3, 200))
    o = RollingOLS(window_time=25, n_features=3, capacity=16, grow=True, ridge=0.1)
    o.update_many(x[:120], y[:120], ts[:120])
    c = pickle.loads(pickle.dumps(o))
    fo = o.update_many(x[120:], y[120:], ts[120:], forecast=True)
    fc = c.update_many(x[120:], y[120:], ts[120:], forecast=True)
    np.testing.assert_array_equal(fo, fc)
    np.testing.assert_array_equal(o.beta, c.beta)
    assert o.n == c.n and o.n_updates == c.n_updates and c.ridge == 0.1


def test_bad_input_state_unchanged():
    o = RollingOLS(window=3)
    o.update(1.0, 2.0, ts=5)
    o.update(2.0, 3.0, ts=6)
    before = (o.beta, o.alpha, o.n)
    with pytest.raises(NonFiniteError) as ei:
        o.update(float("nan"), 1.0, ts=7)
    assert ei.value.field == "x"
    with pytest.raises(NonFiniteError) as ei:
        o.update(1.0, float("inf"), ts=7)
    assert ei.value.field == "y"
    with pytest.raises(TimeOrderError) as ei:
        o.update(1.0, 1.0, ts=4)
    assert ei.value.field == "ts"
    assert (o.beta, o.alpha, o.n) == before
    with pytest.raises(NonFiniteError) as ei:
        o.update_many([1.0, 2.0, np.nan], [1.0, 1.0, 1.0], [7, 8, 9])
    assert ei.value.index == 2 and o.n == 3
    with pytest.raises(OFIError):
        RollingOLS(window=3, n_features=2).update([1.0], 1.0)
    t = RollingOLS(window_time=10, capacity=2)
    t.update(1.0, 1.0, ts=0)
    t.update(2.0, 1.0, ts=1)
    with pytest.raises(CapacityError) as ei:
        t.update(3.0, 1.0, ts=2)
    assert t.n == 2 and ei.value.needed == 3
    with pytest.raises(OFIError):
        t.update(3.0, 1.0)          # time window needs ts
    with pytest.raises(OFIError):
        RollingOLS(window=3, window_time=3)


def test_reset_and_no_window(rng):
    x = rng.normal(size=1000)
    y = 2 * x + rng.normal(size=1000)
    o = RollingOLS()
    o.update_many(x, y)
    b, a = _lstsq(x, y)
    assert o.beta == pytest.approx(b[0], rel=1e-10) and o.n == 1000 and o.capacity == 0
    o.reset()
    assert o.n == 0 and math.isnan(o.beta)


# ---------------------------------------------------------------------------------------------
# Bars and test vector H (THEORY-DETAIL 8.2)
# ---------------------------------------------------------------------------------------------
H_TS = [500, 3000, 9990, 10000, 15000, 31000]      # ms
H_E = [0.0, 5.0, 4.0, 11.0, -8.0, -4.0]
H_MID = [100.5, 100.5, 100.5, 101.5, 101.0, 100.5]


def test_vector_H_right_closed():
    b = bars(H_TS, H_E, every=10_000, closed="right")
    assert list(b.sum) == [20.0, -8.0, 0.0, -4.0]
    assert list(b.start) == [0, 10_000, 20_000, 30_000]
    m = bar_mid(H_TS, H_MID, every=10_000, closed="right", tick_size=1.0)
    assert list(m["mid"]) == [101.5, 101.0, 101.0, 100.5]
    assert list(m["dmid_ticks"]) == [1.0, -0.5, 0.0, -0.5]
    # predictive pairing X_k -> y_{k+1}: (20 -> -0.5), (-8 -> 0.0), (0 -> -0.5)
    assert list(zip(b.sum[:-1], m["dmid"][1:])) == [(20.0, -0.5), (-8.0, 0.0), (0.0, -0.5)]


def test_vector_H_left_closed():
    b = bars(H_TS, H_E, every=10_000)
    assert list(b.sum) == [9.0, 3.0, 0.0, -4.0]
    assert list(b.count) == [3, 2, 0, 1]
    m = bar_mid(H_TS, H_MID, every=10_000, tick_size=0.5)
    assert list(m["mid"]) == [100.5, 101.0, 101.0, 100.5]
    assert list(m["dmid"]) == [0.0, 0.5, 0.0, -0.5]
    assert list(m["dmid_ticks"]) == [0.0, 1.0, 0.0, -1.0]


def _eq(a, b):
    a = np.asarray(a, dtype=float)
    b = np.array([np.nan if v is None else v for v in b], dtype=float)
    np.testing.assert_array_equal(a, b)


@given(st.lists(st.tuples(st.integers(0, 25), st.integers(-9, 9)), min_size=1, max_size=60),
       st.integers(1, 30), st.sampled_from(["left", "right"]))
def test_bars_vs_reference(rows, every, closed):
    ts = np.cumsum([r[0] for r in rows]) - 40          # negative ts too
    v = [float(r[1]) for r in rows]
    b = bars(ts, v, every=every, closed=closed)
    r = ref.bars(list(map(int, ts)), v, every=every, closed=closed)
    for k in ("start", "sum", "count", "first", "last"):
        _eq(getattr(b, k), r[k])
    m = bar_mid(ts, v, every=every, closed=closed)
    rm = ref.bar_mid(list(map(int, ts)), v, every=every, closed=closed)
    _eq(m["mid"], rm["mid"])
    _eq(m["dmid"], rm["dmid"])


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(-9, 9)), min_size=0, max_size=60),
       st.integers(1, 10))
def test_event_and_volume_bars_vs_reference(rows, every):
    vol = [float(r[0]) for r in rows]
    v = [float(r[1]) for r in rows]
    ts = list(range(0, 3 * len(rows), 3))
    for fast, slow in ((event_bars(v, every=every, ts=ts), ref.event_bars(v, every=every, ts=ts)),
                       (volume_bars(vol, v, every=every), ref.volume_bars(vol, v, every=every))):
        for k in ("start", "sum", "count", "first", "last"):
            _eq(getattr(fast, k), slow[k])


@given(st.lists(st.floats(-1e6, 1e6, width=64) | st.sampled_from([0.0, -0.0, 1e-300, -5e-324]),
                max_size=400),
       st.integers(1, 60) | st.just(10**30))
def test_event_bars_float_sums_bit_for_bit(v, every):
    # the per-bar kernel sums each bar in order from 0.0, as the reference (Python's sum) does:
    # the same bits, signed zeros included, for full bars, a partial last bar and every >= n
    fast = event_bars(np.array(v, dtype=np.float64), every=every)
    slow = ref.event_bars(v, every=every)
    for k in ("start", "sum", "count", "first", "last"):
        assert np.asarray(getattr(fast, k), dtype=float).tobytes() == \
            np.asarray(slow[k], dtype=float).tobytes(), k


def test_bars_bad_input():
    with pytest.raises(TimeOrderError) as ei:
        bars([0, 5, 3, 100], [1.0, 1.0, 1.0, 1.0], every=10)
    assert ei.value.index == 2 and ei.value.field == "ts"
    with pytest.raises(TimeOrderError) as ei:
        bars([0, 50, 3, 10], [1.0, 1.0, 1.0, 1.0], every=10)   # jumps past the last bar
    assert ei.value.index == 2
    with pytest.raises(NonFiniteError) as ei:
        bars([0, 100, 5], [1.0, np.nan, 1.0], every=10)        # NaN before the unsorted ts
    assert ei.value.index == 1
    with pytest.raises(NonFiniteError) as ei:
        bars([0, 1, 2], [1.0, np.nan, 1.0], every=10)
    assert ei.value.index == 1 and ei.value.field == "values"
    with pytest.raises(OFIError):
        bars([0, 1], [1.0, 1.0], every=10, closed="middle")
    with pytest.raises(OFIError) as ei:
        volume_bars([1.0, -1.0], [1.0, 1.0], every=2)
    assert ei.value.field == "volume" and ei.value.index == 1
    b = volume_bars([5.0, 0.5, 0.0], [1.0, 2.0, 3.0], every=2)   # 5 closes two buckets at once
    assert list(b.count) == [1, 2] and list(b.sum) == [1.0, 5.0]


def test_volume_bars_beyond_int64_numbering_are_an_error():
    """Bar numbers floor(V_i / every) past 2**62 (or an infinite cumulative volume) cannot
    be stored in int64: named at the first such event, not wrapped around silently."""
    for vol, every, at in [([1.0, 1e300, 1.0, 1.0], 1.0, 2), ([1e308, 1e308, 1.0], 1e300, 2),
                           ([5.0, 2.0 ** 63, 1.0], 1.0, 2)]:
        with pytest.raises(OFIError) as ei:
            volume_bars(vol, np.ones(len(vol)), every=every)
        assert ei.value.field == "volume" and ei.value.index == at, vol
        assert "too many to number" in str(ei.value)
    b = volume_bars([2.0 ** 61, 1.0], [1.0, 2.0], every=1.0)      # 2**61 bars: fine
    assert b.count.tolist() == [1, 1]


@pytest.mark.parametrize("kind", ["clock", "clock_last", "event", "volume"])
def test_finite_values_whose_bar_sum_overflows_are_an_error(kind):
    """1e308 + 1e308 is inf though both values are finite: the bar's sum cannot be stored,
    so the call names the bar's first event (bar 1 starts at event 2) instead of returning an
    inf bar, or (clock bars, before) silently stopping with the later bars left at zero."""
    big = np.array([1.0, 2.0, 1e308, 1e308, 5.0, 6.0])
    with pytest.raises(OFIError) as ei:
        if kind == "clock":
            bars([0, 1, 10, 11, 20, 21], big, every=10)
        elif kind == "clock_last":
            bars([0, 1, 10, 11, 11, 11], big, every=10)     # the overflowing bar is the last
        elif kind == "event":
            event_bars(big, every=2)
        else:
            volume_bars(np.ones(6), big, every=2)
    assert ei.value.field == "values" and ei.value.index == 2
    assert "overflows float64" in str(ei.value)
    # the largest finite sums are kept exactly
    b = bars([0, 1, 10, 11], [1e308, -1e308, 8e307, 8e307], every=10)
    assert b.sum.tolist() == [0.0, 1.6e308]


@given(st.lists(st.tuples(st.integers(-3, 20), st.sampled_from([1.0, 2.0, np.nan, np.inf])),
                min_size=1, max_size=40), st.integers(1, 15))
def test_bars_first_error_matches_reference_order(rows, every):
    # the error names the first bad event in stream order, whatever the kind
    ts = np.cumsum([r[0] for r in rows])
    v = [r[1] for r in rows]
    first = None
    for i in range(len(rows)):
        if i and ts[i] < ts[i - 1]:
            first = ("ts", i)
            break
        if not np.isfinite(v[i]):
            first = ("values", i)
            break
    if first is None:
        bars(ts, v, every=every)
        return
    with pytest.raises(OFIError) as ei:
        bars(ts, v, every=every)
    assert (ei.value.field, ei.value.index) == first


def test_x_input_forms_agree(rng):
    X = np.asfortranarray(rng.normal(size=(50, 3)))
    y = rng.normal(size=50)
    fits = []
    for conv in (lambda r: r, lambda r: list(r), lambda r: tuple(r), lambda r: r.astype(np.float32),
                 lambda r: np.ascontiguousarray(r)):
        o = RollingOLS(window=20, n_features=3)
        for i in range(50):
            o.update(conv(X[i]), y[i])           # X[i] is a strided row of a Fortran array
        fits.append(o.beta)
    o = RollingOLS(window=20, n_features=3)
    o.update_many(X, y)
    for b in fits[:3] + fits[4:]:
        np.testing.assert_array_equal(b, o.beta)
    np.testing.assert_allclose(fits[3], o.beta, rtol=1e-5)
    one = RollingOLS(window=5)
    for v in (1, np.float64(2.0), np.array([3.0]), [4.0], np.float32(5.0)):
        one.update(v, 1.0)
    np.testing.assert_array_equal(one.mean_x, 3.0)


@pytest.mark.parametrize("kw", [{}, {"window": 7}, {"window_time": 9}])
def test_pickle_every_window_kind(rng, kw):
    p = 2
    x = rng.normal(size=(60, p))
    y = rng.normal(size=60)
    ts = np.cumsum(rng.integers(0, 3, 60))
    o = RollingOLS(n_features=p, **kw)
    o.update_many(x[:30], y[:30], ts[:30])
    c = pickle.loads(pickle.dumps(o))
    o.update_many(x[30:], y[30:], ts[30:])
    c.update_many(x[30:], y[30:], ts[30:])
    np.testing.assert_array_equal(o.beta, c.beta)
    assert o.r2 == c.r2 or (math.isnan(o.r2) and math.isnan(c.r2))


@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-20, 20), st.integers(-20, 20),
                          st.integers(0, 4)), min_size=1, max_size=60),
       st.integers(2, 20), st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_multi_regressor_time_window_chunks_bitwise(rows, wt, chunks):
    a_ = np.array(rows, dtype=float)
    x, y, ts = a_[:, :2], a_[:, 2], np.cumsum(a_[:, 3]).astype(np.int64)
    a = RollingOLS(window_time=wt, n_features=2, capacity=4, grow=True)
    fa = []
    for i in range(len(y)):
        fa.append(a.predict(x[i]))
        a.update(x[i], y[i], ts=int(ts[i]))
    b = RollingOLS(window_time=wt, n_features=2, capacity=4, grow=True)
    fb, i, k = [], 0, 0
    while i < len(y):
        j = min(len(y), i + chunks[k % len(chunks)])
        fb.extend(b.update_many(x[i:j], y[i:j], ts[i:j], forecast=True))
        i, k = j, k + 1
    np.testing.assert_array_equal(np.array(fa), np.array(fb))
    r = ref.RollingOLS(window_time=wt, n_features=2)
    for i in range(len(y)):
        r.update(x[i], y[i], ts=int(ts[i]))
    assert a.n == r.n
    if not isinstance(r.beta, list) or not math.isnan(r.beta[0]):
        if not a.singular:
            np.testing.assert_allclose(a.beta, r.beta, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ["count1", "time1", "count2"])
def test_window_that_becomes_constant_is_singular_not_tiny_variance(kind):
    # (0, 1, 1) then 1: the sliding update leaves rounding noise (~1e-17) in the centred
    # variance of x; the fit must see the window (1, 1, 1) as constant (hypothesis found it)
    xs = [0.0, 1.0, 1.0, 1.0]
    if kind == "count2":
        r = RollingOLS(window=3, n_features=2)
        for i, x in enumerate(xs):
            r.update([x, float(i)], 0.5 * i)
    elif kind == "time1":
        r = RollingOLS(window_time=3)
        for i, x in enumerate(xs):
            r.update(x, 0.5 * i, ts=i)
    else:
        r = RollingOLS(window=3)
        for i, x in enumerate(xs):
            r.update(x, 0.5 * i)
    assert r.singular and math.isnan(r.predict([1.0, 4.0] if kind == "count2" else 1.0))
    r.update([2.0, 4.0] if kind == "count2" else 2.0, 2.0, **({"ts": 4} if kind == "time1" else {}))
    assert not r.singular   # a varying regressor again: a fit


# ---- the branch-free fast paths of the bar kernels (issue 13, helper trades3) ---------------
def _fbits(x):
    return np.array([np.nan if e is None else e for e in x], dtype=float).view(np.int64).tolist()


BAR_SPECIAL = [("values", math.nan, 0), ("values", math.inf, 0), ("values", -math.inf, 0),
               (None, -0.0, 0), (None, 5e-324, 0), (None, -1e300, 0), ("ts", None, -1)]


@pytest.mark.parametrize("closed", ["left", "right"])
def test_every_special_value_at_every_bar_position_is_judged_like_the_reference(closed):
    # one event k carries a special value (or goes back in time) at the start, inside, at the
    # first and last event of a bar, at the end; float values over several decades so that the
    # sums' rounding shows: clean input gives the reference's bars bit for bit (the same
    # left-to-right sums), bad input the first bad event's field and index
    rng = np.random.default_rng(9)
    n = 80
    base_ts = np.cumsum(rng.integers(0, 4, n)).astype(np.int64) - 20
    base_v = (rng.random(n) - 0.5) * 10.0 ** rng.integers(-3, 4, n)
    every = 7
    for k, field, (x,), ts, (v,) in special_rows(
            list(range(10)) + [39, 40, 41, n - 2, n - 1], BAR_SPECIAL, base_ts, base_v):
        if field is None:
            b = bars(ts, v, every=every, closed=closed)
            r = ref.bars(list(map(int, ts)), v.tolist(), every=every, closed=closed)
            for key in ("sum", "first", "last"):
                assert _fbits(getattr(b, key)) == _fbits(r[key]), (k, x, key)
            assert b.count.tolist() == r["count"] and b.start.tolist() == r["start"]
            for fast, slow in ((event_bars(v, every=5), ref.event_bars(v.tolist(), every=5)),
                               (volume_bars(np.minimum(np.abs(v), 9.0), v, every=3.0),
                                ref.volume_bars(np.minimum(np.abs(v), 9.0).tolist(), v.tolist(),
                                                every=3.0))):
                for key in ("sum", "first", "last"):
                    assert _fbits(getattr(fast, key)) == _fbits(slow[key]), (k, x, key)
                assert fast.count.tolist() == slow["count"]
            continue
        with pytest.raises(OFIError) as ei:
            bars(ts, v, every=every, closed=closed)
        assert (ei.value.field, ei.value.index) == (field, k), (k, field, x)
        if field == "values":
            for call in (lambda: event_bars(v, every=5),
                         lambda: volume_bars(np.ones(n), v, every=3.0)):
                with pytest.raises(NonFiniteError) as ei:
                    call()
                assert (ei.value.field, ei.value.index) == ("values", k)
