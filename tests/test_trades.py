"""Tests of ofi_fast._trades: trade-sign rules, trade flow imbalance, BVC, VPIN.

Hand-computed vectors are THEORY-DETAIL.md sections 4-5 (vectors D, E, F, G); the differential
tests compare against ofi_fast.reference; the real-data tests measure classification accuracy
against the true aggressor side (printed with -s and recorded in README.md).
"""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import special_rows
import ofi_fast
from ofi_fast import reference as ref
from ofi_fast._trades import Classifier, TradeFlow, classify_trades, trade_flow
from ofi_fast.errors import NegativeSizeError, NonFiniteError, OFIError, TimeOrderError

METHODS = ("tick", "quote", "lee_ready", "emo")

# ---------------------------------------------------------------------------------------------
# Test vector E (THEORY-DETAIL 4.2): quote constant bid 100, ask 104 (mid 102), prices in ticks.
# ---------------------------------------------------------------------------------------------
E_PRICE = [104, 103, 102, 102, 100, 101]
E_EXPECTED = {
    "tick": [0, -1, -1, -1, -1, 1],
    "quote": [1, 1, 0, 0, -1, -1],
    "lee_ready": [1, 1, -1, -1, -1, -1],
    "emo": [1, -1, -1, -1, -1, 1],
}


@pytest.mark.parametrize("method", METHODS)
def test_vector_e(method):
    n = len(E_PRICE)
    got = classify_trades(E_PRICE, method=method, bid_px=[100] * n, ask_px=[104] * n)
    assert got.dtype == np.int8
    assert got.tolist() == E_EXPECTED[method]
    assert ref.classify_trades(E_PRICE, method=method, bid_px=[100] * n,
                               ask_px=[104] * n) == E_EXPECTED[method]
    c = Classifier(method)
    c.update_quote(0, 100, 104)
    assert [c.update(i, p) for i, p in enumerate(E_PRICE)] == E_EXPECTED[method]


def test_tick_rule_runs_of_zero_ticks():
    # zero ticks before any change stay 0; afterwards they carry the last non-zero sign
    p = [10, 10, 10, 11, 11, 11, 9, 9, 9, 9, 10]
    assert classify_trades(p, method="tick").tolist() == [0, 0, 0, 1, 1, 1, -1, -1, -1, -1, 1]


def test_at_mid_and_outside_quotes():
    # bid 100, ask 102, mid 101: at the mid quote -> 0, LR -> tick; outside the quotes
    p = [99, 101, 103, 101]
    b, a = [100] * 4, [102] * 4
    assert classify_trades(p, method="quote", bid_px=b, ask_px=a).tolist() == [-1, 0, 1, 0]
    assert classify_trades(p, method="lee_ready", bid_px=b, ask_px=a).tolist() == [-1, 1, 1, -1]
    # EMO: outside the quotes is not at the ask/bid -> tick rule
    assert classify_trades(p, method="emo", bid_px=b, ask_px=a).tolist() == [0, 1, 1, -1]


def test_no_locked_crossed_quote_fall_back_to_tick():
    p = [10, 11, 11, 10]
    b = [np.nan, 11, 12, 9]
    a = [np.nan, 11, 11, 11]      # none, locked, crossed, valid (mid 10 -> at mid)
    for m in ("quote", "lee_ready", "emo"):
        got = classify_trades(p, method=m, bid_px=b, ask_px=a).tolist()
        assert got[:3] == [0, 1, 1], m
    c = Classifier("lee_ready")
    for i, (pi, bi, ai) in enumerate(zip(p, b, a)):
        c.update_quote(i, bi, ai)
        c.update(i, pi)
    assert c.n_no_quote == 3 and c.n_crossed == 1


def test_quote_delay():
    # quotes: t=0 (100, 102) mid 101; t=10 (104, 106) mid 105. Trade at t=12, price 103.
    qts, qb, qa = [0, 10], [100.0, 104.0], [102.0, 106.0]
    ts, p = [5, 12, 16], [101.0, 103.0, 103.0]
    # lag 0: trade at 12 sees mid 105 -> sell; lag 5: sees quote at <= 7 (mid 101) -> buy;
    # trade at 16 with lag 5 sees the quote at 10 -> sell.
    got0 = classify_trades(p, method="lee_ready", bid_px=qb, ask_px=qa, ts=ts, quote_ts=qts)
    got5 = classify_trades(p, method="lee_ready", bid_px=qb, ask_px=qa, ts=ts, quote_ts=qts,
                           quote_lag=5)
    assert got0.tolist() == [0, -1, -1]      # first trade at mid 101, no prior tick -> 0
    assert got5.tolist() == [0, 1, -1]
    for lag, want in ((0, got0), (5, got5)):
        assert ref.classify_trades(p, method="lee_ready", bid_px=qb, ask_px=qa, ts=ts,
                                   quote_ts=qts, quote_lag=lag) == want.tolist()
        c = Classifier("lee_ready", quote_lag=lag)      # events fed in time order
        c.update_quote(0, 100, 102)
        s0 = c.update(5, 101.0)
        c.update_quote(10, 104, 106)
        assert [s0, c.update(12, 103.0), c.update(16, 103.0)] == want.tolist()
    # trades before any quote: tick rule
    assert classify_trades([5.0, 6.0], method="quote", bid_px=[1.0], ask_px=[2.0], ts=[0, 1],
                           quote_ts=[100]).tolist() == [0, 1]


def test_tick_size_rounding():
    p = [100.01, 100.02, 100.015000000001]
    got = classify_trades(p, method="tick", tick_size=0.005)
    assert got.tolist() == [0, 1, -1]


def test_classify_bad_input():
    with pytest.raises(NonFiniteError) as e:
        classify_trades([1.0, np.nan], method="tick")
    assert e.value.field == "price" and e.value.index == 1
    for m in METHODS:
        with pytest.raises(NonFiniteError) as e:
            classify_trades([1.0, 2.0, np.inf, np.nan], method=m, bid_px=[0.0] * 4,
                            ask_px=[3.0] * 4)
        assert (e.value.field, e.value.index) == ("price", 2)
    with pytest.raises(NonFiniteError) as e:
        classify_trades([1.0, np.nan], method="emo", bid_px=[0.0], ask_px=[3.0], ts=[0, 1],
                        quote_ts=[0])
    assert (e.value.field, e.value.index) == ("price", 1)
    with pytest.raises(OFIError) as e:
        classify_trades([1.0], method="nope")
    assert e.value.field == "method"
    with pytest.raises(OFIError):
        classify_trades([1.0, 2.0], method="quote", bid_px=[1.0], ask_px=[2.0, 3.0])
    with pytest.raises(TimeOrderError) as e:
        classify_trades([1.0, 2.0], method="quote", bid_px=[1.0], ask_px=[2.0], ts=[3, 2],
                        quote_ts=[0])
    assert e.value.field == "ts" and e.value.index == 1


def _trades_strategy(n_max=60):
    return st.integers(1, n_max).flatmap(lambda n: st.tuples(
        st.lists(st.integers(95, 105), min_size=n, max_size=n),
        st.lists(st.integers(94, 104), min_size=n, max_size=n),
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n)))


@given(_trades_strategy(), st.sampled_from(METHODS))
def test_classify_matches_reference(data, method):
    p, b, spread, missing = data
    a = [bi + s for bi, s in zip(b, spread)]          # spread 0 = locked
    b = [np.nan if m else bi for bi, m in zip(b, missing)]
    got = classify_trades(p, method=method, bid_px=b, ask_px=a).tolist()
    assert got == ref.classify_trades(p, method=method, bid_px=b, ask_px=a)
    c = Classifier(method)
    stream = []
    for i in range(len(p)):
        c.update_quote(i, b[i], a[i])
        stream.append(c.update(i, p[i]))
    assert stream == got


@given(_trades_strategy(), st.integers(0, 5), st.sampled_from(METHODS[1:]))
def test_classify_lagged_matches_reference(data, lag, method):
    p, b, spread, _ = data
    n = len(p)
    a = [bi + s for bi, s in zip(b, spread)]
    rng = np.random.default_rng(len(p) + lag)
    ts = np.cumsum(rng.integers(0, 3, n)).tolist()
    qts = np.cumsum(rng.integers(0, 3, n)).tolist()
    got = classify_trades(p, method=method, bid_px=b, ask_px=a, ts=ts, quote_ts=qts,
                          quote_lag=lag).tolist()
    assert got == ref.classify_trades(p, method=method, bid_px=b, ask_px=a, ts=ts,
                                      quote_ts=qts, quote_lag=lag)
    # the streaming classifier sees quotes and trades merged in time order (quotes first)
    c = Classifier(method, quote_lag=lag)
    events = sorted([(t, 0, j) for j, t in enumerate(qts)] + [(t, 1, i) for i, t in enumerate(ts)])
    stream = [None] * n
    for t, kind, j in events:
        if kind == 0:
            c.update_quote(t, b[j], a[j])
        else:
            stream[j] = c.update(t, p[j])
    assert stream == got


def test_classifier_pickle_continues():
    rng = np.random.default_rng(3)
    p = rng.integers(95, 105, 40).astype(float)
    c = Classifier("emo", quote_lag=2)
    for i in range(20):
        c.update_quote(i, 99.0, 101.0 + i % 2)
        c.update(i, p[i])
    c2 = pickle.loads(pickle.dumps(c))
    for i in range(20, 40):
        c.update_quote(i, 99.0, 101.0 + i % 2)
        c2.update_quote(i, 99.0, 101.0 + i % 2)
        assert c.update(i, p[i]) == c2.update(i, p[i])
    assert c.n_no_quote == c2.n_no_quote


# ---------------------------------------------------------------------------------------------
# Trade flow imbalance. Test vector D (THEORY-DETAIL 4.1).
# ---------------------------------------------------------------------------------------------
def test_vector_d():
    tf = TradeFlow()
    signed = [tf.update(i, 100.0, s, d) for i, (s, d) in enumerate([(5, 1), (3, -1), (2, 1)])]
    assert signed == [5.0, -3.0, 2.0]
    assert (tf.buy_volume, tf.sell_volume, tf.net) == (7.0, 3.0, 4.0)
    assert tf.imbalance == pytest.approx(0.4, abs=1e-15)
    assert (tf.n_buy, tf.n_sell, tf.n_unknown, tf.count) == (2, 1, 0, 3)


def test_empty_and_unknown_volume_kept_apart():
    tf = TradeFlow()
    assert tf.imbalance == 0.0 and tf.net == 0.0 and tf.empty
    assert tf.update(0, 10.0, 4.0, 0) == 0.0
    assert tf.imbalance == 0.0 and tf.empty
    assert tf.unknown_volume == 4.0 and tf.n_unknown == 1 and tf.count == 1


def test_windows_hand_computed():
    # count window 2: after trades (5,+1),(3,-1),(2,+1): window holds (3,-1),(2,+1)
    tf = TradeFlow(window=2)
    for i, (s, d) in enumerate([(5, 1), (3, -1), (2, 1)]):
        tf.update(i, 1.0, s, d)
    assert (tf.buy_volume, tf.sell_volume, tf.imbalance) == (2.0, 3.0, -0.2)
    # time window 10: ts 0, 5, 10, 15 -> at 15 the window (5, 15] holds ts 10 and 15
    tf = TradeFlow(window_time=10)
    for t, s, d in [(0, 1, 1), (5, 2, -1), (10, 4, 1), (15, 8, -1)]:
        tf.update(t, 1.0, s, d)
    assert (tf.buy_volume, tf.sell_volume, tf.count) == (4.0, 8.0, 2)


def test_volume_window_hand_computed():
    # V = 6 over (5, +1), (3, -1), (2, +1): the window is 2 buy + 3 sell + 1 of the 5 buy
    tf = TradeFlow(window_volume=6)
    for i, (s, d) in enumerate([(5, 1), (3, -1), (2, 1)]):
        tf.update(i, 1.0, s, d)
    assert (tf.buy_volume, tf.sell_volume, tf.imbalance, tf.count) == (3.0, 3.0, 0.0, 3)
    tf.update(3, 1.0, 4, -1)                 # 4 sell + 2 buy: the 3-sell and the 5-buy leave
    assert (tf.buy_volume, tf.sell_volume, tf.count) == (2.0, 4.0, 2)
    tf.update(4, 1.0, 10, 0)                 # one trade larger than the window: 6 of it
    assert (tf.buy_volume, tf.sell_volume, tf.unknown_volume, tf.count) == (0.0, 0.0, 6.0, 1)
    with pytest.raises(OFIError):
        TradeFlow(window=3, window_volume=5)
    with pytest.raises(OFIError):
        TradeFlow(window_volume=0)


def test_classify_side_zero_with_quotes():
    # lee_ready: quote (100, 102); trade at 101.5 (above mid) side 0 -> buy; known sides kept
    tf = TradeFlow(classify="lee_ready")
    tf.update_quote(0, 100.0, 102.0)
    assert tf.update(0, 101.5, 3.0, 0) == 3.0
    assert tf.update(1, 100.0, 2.0, 1) == 2.0     # given side wins over the quote
    assert tf.update(2, 100.5, 1.0, 0) == -1.0
    assert (tf.buy_volume, tf.sell_volume, tf.n_classified) == (5.0, 1.0, 2)
    # the tick rule's history includes trades whose side was given
    tf = TradeFlow(classify="tick")
    tf.update(0, 10.0, 1.0, -1)
    assert tf.update(1, 11.0, 1.0, 0) == 1.0
    assert tf.update(2, 11.0, 1.0, 0) == 1.0
    assert tf.update(3, 11.0, 1.0, 1) == 1.0
    tf = TradeFlow(classify="tick")
    assert tf.update(0, 10.0, 1.0, 0) == 0.0       # undetermined: stays unknown
    assert tf.unknown_volume == 1.0


def _flow_stream(rng, n, integer=True):
    ts = np.cumsum(rng.integers(0, 4, n)).astype(np.int64)
    price = (100 + np.cumsum(rng.integers(-1, 2, n))).astype(float)
    size = rng.integers(0, 10, n).astype(float)
    if not integer:
        size += rng.random(n)
    side = rng.integers(-1, 2, n).astype(np.int8)
    bid = price - rng.integers(0, 2, n)
    ask = bid + rng.integers(0, 3, n)
    return ts, price, size, side, bid, ask


WINDOWS = [dict(), dict(window=1), dict(window=7), dict(window_time=5), dict(window_time=1),
           dict(window_time=6, capacity=2, grow=True), dict(window_volume=7),
           dict(window_volume=1), dict(window_volume=20, capacity=2, grow=True)]


@given(st.integers(0, 10**6), st.integers(1, 80), st.sampled_from(WINDOWS),
       st.sampled_from([None, *METHODS]), st.lists(st.integers(1, 30), min_size=1, max_size=5))
def test_tradeflow_differential(seed, n, win, classify, chunks):
    rng = np.random.default_rng(seed)
    ts, price, size, side, bid, ask = _flow_stream(rng, n)
    kw = dict(win, classify=classify)
    r = ref.TradeFlow(**kw)
    want, want_imb = r.update_many(ts.tolist(), price.tolist(), size.tolist(), side.tolist(),
                                   bid_px=bid.tolist(), ask_px=ask.tolist())
    # batch
    got, imb = trade_flow(ts, price, size, side, bid_px=bid, ask_px=ask, rolling=True, **kw)
    assert got.tolist() == want and imb.tolist() == want_imb   # exact on integer sizes
    # one by one
    tf = TradeFlow(**kw)
    one = []
    for i in range(n):
        tf.update_quote(ts[i], bid[i], ask[i])
        one.append(tf.update(ts[i], price[i], size[i], side[i]))
    assert one == want
    # random chunks
    tf2 = TradeFlow(**kw)
    parts, i, k = [], 0, 0
    while i < n:
        j = min(n, i + chunks[k % len(chunks)])
        parts.append(tf2.update_many(ts[i:j], price[i:j], size[i:j], side[i:j],
                                     bid_px=bid[i:j], ask_px=ask[i:j]))
        i, k = j, k + 1
    assert np.concatenate(parts).tolist() == want
    for obj in (tf, tf2):
        assert (obj.buy_volume, obj.sell_volume, obj.unknown_volume) == \
            (r.buy_volume, r.sell_volume, r.unknown_volume)
        assert (obj.n_buy, obj.n_sell, obj.n_unknown, obj.count) == \
            (r.n_buy, r.n_sell, r.n_unknown, r.count)
        assert obj.net == r.net and obj.imbalance == r.imbalance
        assert obj.n_classified == r.n_classified


def test_tradeflow_float_sizes_close_to_exact(rng):
    ts, price, size, side, _, _ = _flow_stream(rng, 20000, integer=False)
    tf = TradeFlow(window=500)
    tf.update_many(ts, price, size, side)
    last = slice(20000 - 500, None)
    assert tf.buy_volume == pytest.approx(math.fsum(size[last][side[last] == 1]), rel=1e-12)
    assert tf.sell_volume == pytest.approx(math.fsum(size[last][side[last] == -1]), rel=1e-12)


@pytest.mark.parametrize("win", WINDOWS)
def test_tradeflow_pickle_continues(rng, win):
    ts, price, size, side, bid, ask = _flow_stream(rng, 300)
    a = TradeFlow(classify="emo", **win)
    a.update_many(ts[:150], price[:150], size[:150], side[:150], bid_px=bid[:150],
                  ask_px=ask[:150])
    b = pickle.loads(pickle.dumps(a))
    ra = a.update_many(ts[150:], price[150:], size[150:], side[150:], bid_px=bid[150:],
                       ask_px=ask[150:], rolling=True)
    rb = b.update_many(ts[150:], price[150:], size[150:], side[150:], bid_px=bid[150:],
                       ask_px=ask[150:], rolling=True)
    assert ra[0].tolist() == rb[0].tolist() and ra[1].tolist() == rb[1].tolist()
    assert (a.buy_volume, a.sell_volume, a.n_events, a.count) == \
        (b.buy_volume, b.sell_volume, b.n_events, b.count)


def _snapshot(tf):
    return (tf.buy_volume, tf.sell_volume, tf.unknown_volume, tf.count, tf.n_events,
            tf.n_classified)


@pytest.mark.parametrize("field,value,exc", [
    ("price", np.nan, NonFiniteError), ("price", np.inf, NonFiniteError),
    ("size", np.nan, NonFiniteError), ("size", -1.0, NegativeSizeError),
    ("side", 2, OFIError), ("side", -3, OFIError), ("ts", 0, TimeOrderError)])
def test_tradeflow_bad_input(field, value, exc):
    n = 6
    cols = dict(ts=np.arange(10, 10 + n, dtype=np.int64), price=np.full(n, 100.0),
                size=np.ones(n), side=np.ones(n, dtype=np.int64))
    cols[field] = cols[field].astype(type(value) if field != "ts" else np.int64)
    cols[field][3] = value
    for kw in (dict(), dict(window=2), dict(window_time=3), dict(window_volume=2.5)):
        tf = TradeFlow(classify="tick", **kw)
        with pytest.raises(exc) as e:
            tf.update_many(cols["ts"], cols["price"], cols["size"], cols["side"])
        assert (e.value.field, e.value.index) == (field, 3)
        ok = TradeFlow(classify="tick", **kw)
        ok.update_many(cols["ts"][:3], cols["price"][:3], cols["size"][:3], cols["side"][:3])
        assert _snapshot(tf) == _snapshot(ok)              # events before the bad one applied
        # streaming: the bad event leaves the state unchanged
        before = _snapshot(tf)
        with pytest.raises(exc) as e:
            tf.update(int(cols["ts"][3]), float(cols["price"][3]), float(cols["size"][3]),
                      int(cols["side"][3]))
        assert e.value.field == field
        assert _snapshot(tf) == before
    with pytest.raises(OFIError) as e:
        TradeFlow().update_many(None, [1.0, 2.0], [1.0])
    assert e.value.field == "size"


def test_tradeflow_capacity_and_grow():
    tf = TradeFlow(window_time=100, capacity=2)
    tf.update(0, 1.0, 1.0, 1)
    tf.update(1, 1.0, 1.0, 1)
    with pytest.raises(ofi_fast.CapacityError) as e:
        tf.update(2, 1.0, 1.0, 1)
    assert e.value.field == "ts" and tf.count == 2
    g = TradeFlow(window_time=100, capacity=2, grow=True)
    g.update_many(np.arange(50), np.ones(50), np.ones(50), np.ones(50, dtype=np.int8))
    assert g.count == 50 and g.buy_volume == 50.0 and g.capacity >= 50


# ---------------------------------------------------------------------------------------------
# BVC. Test vector F (THEORY-DETAIL 4.3): V = (100, 200, 100), dP = (+1, 0, -2), sigma = 1.
# ---------------------------------------------------------------------------------------------
from ofi_fast._trades import VPIN, bvc, vpin  # noqa: E402


def test_vector_f():
    # four one-unit bars; last prices 10, 11, 11, 9 give dP = (nan, +1, 0, -2)
    ts = [0, 1, 2, 3]
    price = [10.0, 11.0, 11.0, 9.0]
    size = [50.0, 100.0, 200.0, 100.0]
    b = bvc(ts, price, size, every=1, sigma=1.0)
    assert b.dp[1:].tolist() == [1.0, 0.0, -2.0]
    assert b.buy_fraction[0] == 0.5                     # first bar: no dP
    np.testing.assert_allclose(b.buy_volume[1:], [84.1345, 100.0, 2.2750], atol=5e-5)
    assert b.buy_volume[1:].sum() == pytest.approx(186.4095, abs=1e-4)
    assert b.sell_volume[1:].sum() == pytest.approx(213.5905, abs=1e-4)
    assert classify_trades(price, size, method="bvc", ts=ts, every=1, sigma=1.0).tolist() == \
        b.buy_fraction.tolist()


def test_bvc_trailing_sigma_and_empty_bars():
    # bars of 10: bar 0 (ts 0..9), bar 1 empty, bar 2, bar 3
    ts = [0, 5, 25, 31]
    price = [10.0, 12.0, 13.0, 12.0]
    size = [1.0, 2.0, 3.0, 4.0]
    b = bvc(ts, price, size, every=10, window=5)
    assert b.start.tolist() == [0, 10, 20, 30]
    assert b.volume.tolist() == [3.0, 0.0, 3.0, 4.0]
    assert b.last.tolist() == [12.0, 12.0, 13.0, 12.0]       # empty bar repeats the last price
    assert np.isnan(b.dp[0]) and b.dp[1:].tolist() == [0.0, 1.0, -1.0]
    # bar 3: sigma = std(0, 1, ddof=1) = sqrt(0.5)
    assert b.sigma[3] == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert b.buy_fraction[3] == pytest.approx(ref.normal_cdf(-1 / math.sqrt(0.5)), rel=1e-14)
    assert b.buy_fraction[:3].tolist() == [0.5, 0.5, 0.5]    # fewer than 2 past dP


@given(st.integers(0, 10**6), st.integers(1, 120), st.integers(2, 8))
def test_bvc_matches_reference(seed, n, window):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 5, n))
    price = 100 + np.cumsum(rng.integers(-2, 3, n)).astype(float)
    size = rng.integers(0, 9, n).astype(float)
    got = bvc(ts, price, size, every=3, window=window)
    want = ref.bvc(ts.tolist(), price.tolist(), size.tolist(), every=3, window=window)
    assert got.start.tolist() == want["start"] and got.volume.tolist() == want["volume"]
    np.testing.assert_array_equal(got.dp, want["dp"])
    # sigma: two-pass mean/variance vs statistics.stdev -> within a few ulps
    np.testing.assert_allclose(got.sigma, want["sigma"], rtol=1e-12)
    np.testing.assert_allclose(got.buy_fraction, want["buy_fraction"], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# VPIN. Test vector G (THEORY-DETAIL 5): V = 10, n = 2.
# ---------------------------------------------------------------------------------------------
def test_vector_g():
    size = [4, 8, 10, 3, 5]
    side = [1, -1, 1, -1, 1]
    r = vpin([0, 1, 2, 3, 4], size, side, bucket_volume=10, n_buckets=2)
    assert r.ts.tolist() == [1, 2, 4]
    assert r.buy.tolist() == [4.0, 8.0, 7.0] and r.sell.tolist() == [6.0, 2.0, 3.0]
    assert np.isnan(r.vpin[0]) and r.vpin[1:].tolist() == [0.4, 0.5]
    v = VPIN(10, 2)
    closed = [v.update(t, s, d) for t, s, d in zip(range(5), size, side)]
    assert closed == [0, 1, 1, 0, 1] and v.value == 0.5 and v.open_volume == 0.0


def test_vpin_trade_larger_than_several_buckets():
    # V = 10: buy 3, then a sell of 35 fills 7 + 10 + 10 (3 buckets) and leaves 8 open
    r = vpin([0, 1], [3, 35], [1, -1], bucket_volume=10, n_buckets=2)
    assert r.ts.tolist() == [1, 1, 1]
    assert r.buy.tolist() == [3.0, 0.0, 0.0] and r.sell.tolist() == [7.0, 10.0, 10.0]
    assert np.isnan(r.vpin[0]) and r.vpin[1:].tolist() == [(4 + 10) / 20, 1.0]
    v = VPIN(10, 2)
    v.update(0, 3, 1)
    assert v.update(1, 35, -1) == 3
    assert v.open_volume == 8.0 and v.open_buy == 0.0
    # unknown side splits 50/50; a bucket exactly filled closes with nothing left over
    r = vpin([0, 0], [10, 10], [0, 0], bucket_volume=10, n_buckets=1)
    assert r.vpin.tolist() == [0.0, 0.0] and r.buy.tolist() == [5.0, 5.0]


@given(st.integers(0, 10**6), st.integers(1, 100), st.integers(1, 30), st.integers(1, 5),
       st.booleans(), st.lists(st.integers(1, 25), min_size=1, max_size=4))
def test_vpin_matches_reference(seed, n, V, nb, fractions, chunks):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(0, 3, n))
    size = rng.integers(0, 40, n).astype(float)
    side = rng.integers(-1, 2, n)
    kw = dict(bucket_volume=V, n_buckets=nb)
    if fractions:
        frac = rng.integers(0, 5, n) / 4            # quarters: exact in binary
        got = vpin(ts, size, buy_fraction=frac, **kw)
        want = ref.vpin(ts.tolist(), size.tolist(), buy_fraction=frac.tolist(), **kw)
    else:
        frac = 0.5 * (side + 1)
        got = vpin(ts, size, side, **kw)
        want = ref.vpin(ts.tolist(), size.tolist(), side.tolist(), **kw)
    assert got.ts.tolist() == want[0]
    np.testing.assert_allclose(got.vpin, want[1], rtol=1e-14)   # fsum vs running Neumaier
    assert got.buy.tolist() == want[2] and got.sell.tolist() == want[3]
    # chunks and one-by-one give the same buckets
    v = VPIN(V, nb)
    parts, i, k = [], 0, 0
    while i < n:
        j = min(n, i + chunks[k % len(chunks)])
        parts.append(v.update_many(ts[i:j], size[i:j], buy_fraction=frac[i:j]))
        i, k = j, k + 1
    assert np.concatenate([p.ts for p in parts]).tolist() == want[0]
    np.testing.assert_allclose(np.concatenate([p.vpin for p in parts]), want[1], rtol=1e-14)
    w = VPIN(V, nb)
    for i in range(n):
        w.update_fraction(int(ts[i]), float(size[i]), float(frac[i]))
    assert w.n_closed == len(want[0])
    if want[1]:
        assert (np.isnan(w.value) and np.isnan(want[1][-1])) or \
            w.value == pytest.approx(want[1][-1], rel=1e-14)


def test_vpin_pickle_and_bad_input(rng):
    ts = np.arange(200)
    size = rng.integers(1, 30, 200).astype(float)
    side = rng.integers(-1, 2, 200)
    a = VPIN(25, 5)
    a.update_many(ts[:100], size[:100], side[:100])
    b = pickle.loads(pickle.dumps(a))
    ra = a.update_many(ts[100:], size[100:], side[100:])
    rb = b.update_many(ts[100:], size[100:], side[100:])
    assert ra.vpin.tolist() == rb.vpin.tolist() and a.value == b.value
    for field, value, exc in (("size", np.nan, NonFiniteError), ("size", -1.0, NegativeSizeError),
                              ("side", 3, OFIError), ("ts", -5, TimeOrderError)):
        cols = dict(ts=np.arange(10, 16), size=np.full(6, 7.0), side=np.ones(6))
        cols[field] = cols[field].astype(float if field != "ts" else np.int64)
        cols[field][4] = value
        v = VPIN(10, 2)
        with pytest.raises(exc) as e:
            v.update_many(cols["ts"], cols["size"], cols["side"])
        assert (e.value.field, e.value.index) == (field, 4)
        assert v.n_closed == 2 and v.open_volume == 8.0          # trades 0..3 applied
    with pytest.raises(OFIError):
        VPIN(0, 5)
    with pytest.raises(OFIError) as e:
        vpin([0, 1], [1.0, 1.0], buy_fraction=[0.5, 1.5], bucket_volume=1, n_buckets=1)
    assert (e.value.field, e.value.index) == ("buy_fraction", 1)


# ---------------------------------------------------------------------------------------------
# Real data with the true aggressor side: accuracy of each rule (printed with -s; recorded in
# README.md "Trades"). Small parsers here; the feeds module is written separately.
# ---------------------------------------------------------------------------------------------
import csv  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import zipfile  # noqa: E402

from conftest import data_file  # noqa: E402

ACCURACY = {}


def _binance_trades_quotes(path):
    """Trades (receive ns, exchange ms T, price ticks, qty, true side) and bookTicker quotes
    (receive ns, exchange ms T or -1 when absent (spot), bid ticks, ask ticks)."""
    tr, qu = [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            local, _, body = line.partition(" ")
            if '"btcusdt@trade"' in body:
                d = json.loads(body)["data"]
                # m: buyer is maker => aggressor sell
                tr.append((int(local), d["T"], round(float(d["p"]) * 100), float(d["q"]),
                           -1 if d["m"] else 1))
            elif '"btcusdt@bookTicker"' in body:
                d = json.loads(body)["data"]
                qu.append((int(local), d.get("T", -1), round(float(d["b"]) * 100),
                           round(float(d["a"]) * 100)))
    tr, qu = np.array(tr, dtype=float), np.array(qu, dtype=float)
    return (tr[:, 0].astype(np.int64), tr[:, 1].astype(np.int64), tr[:, 2], tr[:, 3],
            tr[:, 4].astype(np.int8), qu[:, 0].astype(np.int64), qu[:, 1].astype(np.int64),
            qu[:, 2], qu[:, 3])


def _bvc_volume_accuracy(ts, price, size, true_side, every, window=50):
    """Share of volume BVC puts on the right side, bar by bar (Chakrabarty et al. 2012):
    sum_i min(VB_est, VB_true) + min(VS_est, VS_true) over total volume."""
    b = bvc(ts, price, size, every=every, window=window)
    k = (np.asarray(ts) // every) - (ts[0] // every)
    vb_true = np.bincount(k, weights=size * (true_side == 1), minlength=len(b.volume))
    vs_true = b.volume - vb_true
    hit = np.minimum(b.buy_volume, vb_true) + np.minimum(b.sell_volume, vs_true)
    return hit.sum() / b.volume.sum()


def _report(name, truth, signs, extra=None):
    row = {m: float(np.mean(s == truth)) for m, s in signs.items()}
    if extra:
        row.update(extra)
    ACCURACY[name] = row
    cells = "  ".join(f"{m} {v:6.1%}" for m, v in row.items())
    print(f"\n[trade-sign accuracy] {name} (n={len(truth)}): {cells}")
    return row


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_real_binance_accuracy(market):
    """Binance BTCUSDT with the true aggressor side (``m``) and bookTicker quotes.

    Two alignments of quotes to trades: receive time (both markets; the bookTicker stream is
    received ahead of the trade stream, so at lag 0 the "prevailing" quote often already
    reflects the trade; a receive-time quote delay of 5 ms, Lee & Ready's delay idea, undoes
    most of it), and exchange transaction time ``T`` (futures only; the quote stamped strictly
    before the trade's millisecond, quote_lag = 1 ms).
    """
    path = data_file("binance_hftbacktest", market, "btcusdt_20240808.gz")
    t_local, t_ms, px, qty, truth, q_local, q_ms, qb, qa = _binance_trades_quotes(path)
    results = {}
    for label, lag in (("receive time, lag 0", 0), ("receive time, lag 5 ms", 5_000_000)):
        signs = {m: classify_trades(px, method=m, bid_px=qb, ask_px=qa, ts=t_local,
                                    quote_ts=q_local, quote_lag=lag) for m in METHODS}
        extra = {"bvc (volume, 1 s bars)": _bvc_volume_accuracy(t_ms, px, qty, truth, 1000)}
        results[label] = _report(f"binance {market} BTCUSDT 2024-08-08, quotes by {label}",
                                 truth, signs, extra)
    # the streaming classifier fed in receive order agrees with the batch path
    c = Classifier("lee_ready", quote_lag=5_000_000)
    events = sorted([(t, 0, j) for j, t in enumerate(q_local)] +
                    [(t, 1, j) for j, t in enumerate(t_local)])
    stream = np.zeros(len(px), np.int8)
    for t, kind, j in events:
        if kind == 0:
            c.update_quote(t, qb[j], qa[j])
        else:
            stream[j] = c.update(t, px[j])
    lr5 = classify_trades(px, method="lee_ready", bid_px=qb, ask_px=qa, ts=t_local,
                          quote_ts=q_local, quote_lag=5_000_000)
    assert np.array_equal(stream, lr5)
    assert results["receive time, lag 5 ms"]["lee_ready"] > 0.70
    if market == "usdm":
        assert np.all(np.diff(q_ms) >= 0)
        signs = {m: classify_trades(px, method=m, bid_px=qb, ask_px=qa, ts=t_ms, quote_ts=q_ms,
                                    quote_lag=1) for m in METHODS}
        row = _report("binance usdm BTCUSDT 2024-08-08, quotes by exchange time T, lag 1 ms",
                      truth, signs)
        assert row["lee_ready"] > 0.70
    # trade flow from the true sides equals a direct numpy computation
    tf = TradeFlow()
    tf.update_many(t_ms, px, qty, truth)
    assert tf.buy_volume == pytest.approx(qty[truth == 1].sum(), rel=1e-12)
    assert tf.sell_volume == pytest.approx(qty[truth == -1].sum(), rel=1e-12)


def _lobster(name):
    zpath = data_file("lobster", f"LOBSTER_SampleFile_{name}_2012-06-21_1.zip")
    with zipfile.ZipFile(zpath) as z:
        msg = np.loadtxt(z.open(f"{name}_2012-06-21_34200000_57600000_message_1.csv"),
                         delimiter=",")
        book = np.loadtxt(z.open(f"{name}_2012-06-21_34200000_57600000_orderbook_1.csv"),
                          delimiter=",")
    return msg, book


@pytest.mark.parametrize("name", ["AAPL", "AMZN", "GOOG"])
def test_real_lobster_accuracy(name):
    msg, book = _lobster(name)
    ex = np.flatnonzero((msg[:, 1] == 4) | (msg[:, 1] == 5))
    ex = ex[ex > 0]                                  # the quote is the book row before
    px = msg[ex, 4] / 100.0                           # ticks of $0.01
    ask, bid = book[ex - 1, 0] / 100.0, book[ex - 1, 2] / 100.0
    bid[book[ex - 1, 3] == 0] = np.nan                # empty side (dummy price)
    ask[book[ex - 1, 1] == 0] = np.nan
    truth = -msg[ex, 5].astype(np.int8)               # execution of a sell limit = buyer-initiated
    visible = msg[ex, 1] == 4                         # type 5 (hidden): direction not reliable
    signs = {m: classify_trades(px, method=m, bid_px=bid, ask_px=ask)[visible] for m in METHODS}
    ts_ns = np.round(msg[ex, 0] * 1e9).astype(np.int64)
    bvc_acc = _bvc_volume_accuracy(ts_ns[visible], px[visible], msg[ex, 3][visible],
                                   truth[visible], every=60 * 10**9)
    row = _report(f"LOBSTER {name} 2012-06-21 visible executions", truth[visible], signs,
                  {"bvc (volume, 1 min bars)": bvc_acc})
    assert row["lee_ready"] > 0.70


def test_real_tick_rule_tardis_bitstamp():
    p = data_file("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    with open(p) as f:
        rows = list(csv.DictReader(f))
    px = np.array([float(r["price"]) for r in rows])
    truth = np.array([1 if r["side"] == "buy" else -1 for r in rows], np.int8)
    _report("tardis binance BTCUSDT 2019-12-01 (tick only, no quotes)", truth,
            {"tick": classify_trades(px, method="tick", tick_size=0.01)})
    p = data_file("bitstamp_ob_analytics", "trades.csv")
    with open(p) as f:
        rows = list(csv.DictReader(f))
    px = np.array([float(r["price"]) for r in rows])
    truth = np.array([1 if r["side"] == "buy" else -1 for r in rows], np.int8)
    row = _report("bitstamp BTCUSD 2026-05-02 (tick only)", truth,
                  {"tick": classify_trades(px, method="tick", tick_size=1.0)})
    assert row["tick"] > 0.5


def test_vpin_output_grows_when_guess_is_short():
    # the NaN makes the total volume unusable as a row estimate: the 1000 buckets closed by
    # trade 0 overflow the first guess, the output grows, then trade 1 is rejected
    v = VPIN(1, 3)
    with pytest.raises(NonFiniteError) as e:
        v.update_many([0, 1], [1000.0, np.nan], [1, 1])
    assert (e.value.field, e.value.index) == ("size", 1)
    assert v.n_closed == 1000 and v.value == 1.0


def test_reference_parity_names():
    # every public name of this module has a pure-Python twin in reference.py
    for name in ("classify_trades", "Classifier", "TradeFlow", "trade_flow", "bvc", "vpin",
                 "VPIN"):
        assert hasattr(ref, name), name
        assert hasattr(ofi_fast, name), name


def test_vpin_streaming_matches_reference_class(rng):
    v, r = VPIN(7, 3), ref.VPIN(7, 3)
    for i in range(60):
        s, d = float(rng.integers(0, 12)), int(rng.integers(-1, 2))
        assert v.update(i, s, d) == r.update(i, s, d)
    assert v.n_closed == r.n_closed
    assert v.value == pytest.approx(r.value, rel=1e-14)


def test_classifier_pending_quotes_grow_and_errors():
    # lag 1000 with 500 quotes inside the lag: the pending ring grows past its 64 slots
    rng = np.random.default_rng(11)
    qts = np.arange(0, 5000, 2)
    qb = 100.0 + rng.integers(-3, 3, len(qts))
    qa = qb + rng.integers(1, 3, len(qts))
    ts = np.arange(1, 5000, 2)
    px = 100.0 + rng.integers(-4, 5, len(ts))
    want = classify_trades(px, method="lee_ready", bid_px=qb, ask_px=qa, ts=ts, quote_ts=qts,
                           quote_lag=1000)
    c = Classifier("lee_ready", quote_lag=1000)
    got = []
    for i in range(len(ts)):
        c.update_quote(int(qts[i]), qb[i], qa[i])
        got.append(c.update(int(ts[i]), px[i]))
        if i == 1200:
            c = pickle.loads(pickle.dumps(c))       # mid-stream with 500 pending quotes
    assert got == want.tolist()
    with pytest.raises(TimeOrderError):
        c.update_quote(0, 1.0, 2.0)
    with pytest.raises(TimeOrderError):
        c.update(0, 1.0)
    with pytest.raises(NonFiniteError) as e:
        c.update(10**6, np.nan)
    assert e.value.field == "price"
    assert c.n_trades == len(ts)                     # failed calls changed nothing


def test_inputs_read_only_and_unmodified(rng):
    ts, price, size, side, bid, ask = _flow_stream(rng, 200)
    cols = [ts, price, size, side, bid, ask]
    copies = [c.copy() for c in cols]
    for c in cols:
        c.flags.writeable = False
    for m in METHODS:
        classify_trades(price, method=m, bid_px=bid, ask_px=ask)
    classify_trades(price, method="lee_ready", bid_px=bid, ask_px=ask, ts=ts, quote_ts=ts,
                    quote_lag=3)
    trade_flow(ts, price, size, side, window=5, classify="emo", bid_px=bid, ask_px=ask,
               rolling=True)
    trade_flow(ts[::2], price[::2], size[::2], side[::2].astype(np.int64))   # strided, int64
    vpin(ts, size, side, bucket_volume=10, n_buckets=3)
    bvc(ts, price, size, every=5)
    for c, k in zip(cols, copies):
        assert np.array_equal(c, k)


def test_real_binance_vpin_true_sides_vs_bvc():
    path = data_file("binance_hftbacktest", "usdm", "btcusdt_20240808.gz")
    _, t_ms, px, qty, truth, *_ = _binance_trades_quotes(path)
    V = qty.sum() / 100                                  # ~100 buckets over the capture
    true_v = vpin(t_ms, qty, truth, bucket_volume=V, n_buckets=10)
    b = bvc(t_ms, px, qty, every=1000, window=50)        # 1 s bars fed as trades to VPIN
    bvc_v = vpin(b.start, b.volume, buy_fraction=b.buy_fraction, bucket_volume=V,
                 n_buckets=10)
    assert len(true_v.ts) == int(qty.sum() // V) or len(true_v.ts) == int(qty.sum() // V) - 1
    assert np.all(true_v.buy + true_v.sell == pytest.approx(V, rel=1e-9))
    ok = ~np.isnan(true_v.vpin)
    assert np.all((true_v.vpin[ok] >= 0) & (true_v.vpin[ok] <= 1))
    k = min(len(true_v.vpin), len(bvc_v.vpin))
    both = ok[:k] & ~np.isnan(bvc_v.vpin[:k])
    corr = np.corrcoef(true_v.vpin[:k][both], bvc_v.vpin[:k][both])[0, 1]
    print(f"\n[vpin] binance usdm, V={V:.3f} BTC, n=10: true-side VPIN mean "
          f"{np.nanmean(true_v.vpin):.3f}, BVC (1 s bars) VPIN mean {np.nanmean(bvc_v.vpin):.3f}, "
          f"correlation {corr:.2f}")


@given(_trades_strategy(), st.sampled_from(METHODS), st.integers(0, 3),
       st.lists(st.integers(1, 20), min_size=1, max_size=4))
def test_classifier_update_many_chunks(data, method, lag, chunks):
    p, b, spread, missing = data
    n = len(p)
    a = [bi + s for bi, s in zip(b, spread)]
    b = [np.nan if m else bi for bi, m in zip(b, missing)]
    # distinct times: with ties, the batch path lets every quote stamped at a trade's time
    # prevail, the stream only those fed before the trade
    ts = np.cumsum(1 + np.arange(n) % 3)
    want = classify_trades(p, method=method, bid_px=b, ask_px=a, ts=ts, quote_ts=ts,
                           quote_lag=lag)
    c = Classifier(method, quote_lag=lag)
    parts, i, k = [], 0, 0
    while i < n:
        j = min(n, i + chunks[k % len(chunks)])
        parts.append(c.update_many(ts[i:j], p[i:j], b[i:j], a[i:j]))
        i, k = j, k + 1
    assert np.concatenate(parts).tolist() == want.tolist()


def test_classifier_update_many_bad_row_changes_nothing():
    c = Classifier("lee_ready", quote_lag=5)
    with pytest.raises(NonFiniteError) as e:
        c.update_many([0, 1, 2], [1.0, 2.0, np.nan], [0.0, 0.0, 9.0], [3.0, 3.0, 10.0])
    assert (e.value.field, e.value.index) == ("price", 2)
    assert c.n_trades == 2
    d = pickle.loads(pickle.dumps(c))
    assert d.update_many([3], [5.0]).tolist() == c.update_many([3], [5.0]).tolist()
    with pytest.raises(TimeOrderError) as e:
        c.update_many([4, 1], [1.0, 1.0])
    assert (e.value.field, e.value.index) == ("ts", 1)


# ---------------------------------------------------------------------------------------------
# Issue 13: the branch-free batch kernels (blocks of 1,024 trades validated by one mask pass,
# then a kernel per window kind; a block with a bad row goes through the per-trade step).
# ---------------------------------------------------------------------------------------------
TF_BLOCK = 1024
KERNEL_WINDOWS = [dict(), dict(window=1), dict(window=5), dict(window=1500),
                  dict(window_time=3), dict(window_time=40), dict(window_time=40, capacity=64),
                  dict(window_time=40, capacity=8, grow=True)]
TINY = 5e-324


def _flow_state(tf):
    return (tf.buy_volume, tf.sell_volume, tf.unknown_volume, tf.n_buy, tf.n_sell,
            tf.n_unknown, tf.count, tf.imbalance)


def _bits(x):
    return np.asarray(x, dtype=np.float64).view(np.int64).tolist()


def _one_by_one(kw, ts, px, sz, sd):
    """TradeFlow.update per trade: signed volumes and imbalances until the first error."""
    tf = TradeFlow(**kw)
    sv, imb, err = [], [], None
    for i in range(len(px)):
        try:
            sv.append(tf.update(int(ts[i]), px[i], sz[i], int(sd[i])))
        except OFIError as exc:
            err = (type(exc), exc.field, i)
            break
        imb.append(tf.imbalance)
    return tf, sv, imb, err


@pytest.mark.parametrize("kw", KERNEL_WINDOWS, ids=str)
def test_tradeflow_kernels_across_blocks_bit_for_bit(kw):
    # float sizes (the compensation matters), several blocks, chunks that cut blocks anywhere:
    # batch == one-by-one update == the reference, to the bit, volumes and counts included
    rng = np.random.default_rng(13)
    n = 3 * TF_BLOCK + 77
    ts = np.cumsum(rng.integers(0, 4, n)).astype(np.int64)
    px = 100.0 + rng.integers(-3, 4, n)
    sz = rng.random(n) * 10.0 ** rng.integers(-3, 4, n)
    sz[rng.random(n) < 0.05] = 0.0
    sd = rng.integers(-1, 2, n).astype(np.int8)
    sd[:300] = 1                        # a side empty for a while (the exact-zero reset)
    tf1, sv1, imb1, err = _one_by_one(kw, ts, px, sz, sd)
    assert err is None
    for cuts in ([n], [1, 1023, 1, 2000, n], [TF_BLOCK - 1, 2, 5000]):
        tf = TradeFlow(**kw)
        sv, imb, i = [], [], 0
        for c in cuts:
            j = min(n, i + c)
            a, b = tf.update_many(ts[i:j], px[i:j], sz[i:j], sd[i:j], rolling=True)
            sv += a.tolist()
            imb += b.tolist()
            i = j
            if i == n:
                break
        assert _bits(sv) == _bits(sv1) and _bits(imb) == _bits(imb1), cuts
        assert _flow_state(tf) == _flow_state(tf1)
    r = ref.TradeFlow(**{k: v for k, v in kw.items() if k != "capacity" and k != "grow"})
    want, want_imb = r.update_many(ts.tolist(), px.tolist(), sz.tolist(), sd.tolist())
    assert sv1 == want
    np.testing.assert_allclose(imb1, want_imb, rtol=1e-12, atol=1e-15)


SPECIAL_TRADES = [  # (field, price, size, side, ts offset); None: the clean row's value
    ("price", math.nan, None, None, 0), ("price", math.inf, None, None, 0),
    ("price", -math.inf, None, None, 0), (None, -0.0, None, None, 0),
    (None, TINY, None, None, 0), ("size", None, math.nan, None, 0),
    ("size", None, math.inf, None, 0), ("size", None, -math.inf, None, 0),
    ("size", None, -1.0, None, 0), ("size", None, -TINY, None, 0),
    (None, None, -0.0, None, 0), (None, None, 0.0, None, 0), (None, None, TINY, None, 0),
    ("side", None, None, 2, 0), ("side", None, None, -2, 0), ("side", None, None, -128, 0),
    ("side", None, None, 127, 0), ("ts", None, None, None, -1),
]


@pytest.mark.parametrize("kw", [dict(), dict(window=3), dict(window_time=4)], ids=str)
def test_every_special_trade_in_every_lane_is_judged_like_update(kw):
    # One row k carries a special value; the block validation must accept exactly what the
    # per-trade check accepts, compute the same bits, leave the same state (rows 0..k-1
    # applied) and name the same field and index
    n = TF_BLOCK + 6
    rng = np.random.default_rng(5)
    base_ts = np.cumsum(rng.integers(1, 3, n)).astype(np.int64)
    base_sz = rng.integers(1, 9, n).astype(float)
    base_sd = rng.integers(-1, 2, n).astype(np.int8)
    lanes = (0, 1, 2, 3, 7, 8, 511, TF_BLOCK - 1, TF_BLOCK, TF_BLOCK + 1, n - 1)
    for k, field, (p, q, s), ts, (px, sz, sd) in special_rows(
            lanes, SPECIAL_TRADES, base_ts, np.full(n, 100.0), base_sz, base_sd):
        tf1, sv1, imb1, err1 = _one_by_one(kw, ts, px, sz, sd)
        assert (err1 is None) == (field is None), (k, field)
        if err1:
            assert err1[1:] == (field, k)
        tf = TradeFlow(**kw)
        out = np.full(n, 7.0)
        rol = np.full(n, 7.0)
        try:
            tf.update_many(ts, px, sz, sd, out=out, rolling=True, rolling_out=rol)
            err = None
        except OFIError as exc:
            err = (type(exc), exc.field, exc.index)
        assert err == err1, (k, field, p, q, s)
        m = len(sv1)
        assert _bits(out[:m]) == _bits(sv1) and _bits(rol[:m]) == _bits(imb1), (k, field)
        assert _flow_state(tf) == _flow_state(tf1), (k, field)
        # and the object goes on like the one-by-one one
        t_next = int(max(ts)) + 5
        more = tf.update_many([t_next], [100.0], [3.0], [-1])
        assert more.tolist() == [tf1.update(t_next, 100.0, 3.0, -1)]
        assert _flow_state(tf) == _flow_state(tf1), (k, field)


@pytest.mark.parametrize("has_ts", [True, False])
@pytest.mark.parametrize("has_side", [True, False])
def test_block_check_at_every_vector_position_names_the_first_bad_row(has_ts, has_side):
    # helper edge5: the plain kernel's block check runs four trades a step (price, size, ts)
    # and sixteen (side), then scalar tails; a special row at every position of a 37-trade
    # block (every lane of both step widths, the tails), also behind an earlier update, with
    # ts or side absent (no test: every trade at the last ts / side 0): the same error, field
    # and index as TradeFlow.update, the rows before it applied, the same bits
    n = 37
    rng = np.random.default_rng(11)
    base_ts = np.cumsum(rng.integers(0, 3, n)).astype(np.int64) + 10
    base_sz = rng.random(n) * 10.0
    base_sd = rng.integers(-1, 2, n).astype(np.int8)
    specials = [s for s in SPECIAL_TRADES
                if (has_side or s[0] != "side") and (has_ts or s[0] != "ts")]
    for k, field, _, ts, (px, sz, sd) in special_rows(
            range(n), specials, base_ts, np.full(n, 100.0), base_sz, base_sd):
        for warm in (False, True):
            tf1, tf = TradeFlow(), TradeFlow()
            if warm:                      # the block's first ts is checked against this one
                for t in (tf1, tf):
                    t.update(int(ts[0]), 100.0, 1.0, 1)
            sd_used = sd if has_side else np.zeros(n, np.int8)
            ts_used = ts if has_ts else np.full(n, int(ts[0]) if warm else 0, np.int64)
            sv1, err1 = [], None
            for i in range(n):
                try:
                    sv1.append(tf1.update(int(ts_used[i]), px[i], sz[i], int(sd_used[i])))
                except OFIError as exc:
                    err1 = (type(exc), exc.field, i)
                    break
            assert (err1 is None) == (field is None), (k, field)
            out = np.full(n, 7.0)
            try:
                tf.update_many(ts if has_ts else None, px, sz, sd if has_side else None,
                               out=out)
                err = None
            except OFIError as exc:
                err = (type(exc), exc.field, exc.index)
            assert err == err1, (k, field, warm)
            assert _bits(out[:len(sv1)]) == _bits(sv1), (k, field, warm)
            assert _flow_state(tf) == _flow_state(tf1), (k, field, warm)


@pytest.mark.parametrize("method", METHODS)
def test_every_special_price_and_quote_in_every_lane_classifies_like_update(method):
    # the per-method loops of classify_trades against the streaming Classifier, row by row
    n = 40
    rng = np.random.default_rng(3)
    specials = [math.nan, math.inf, -math.inf, -0.0, 0.0, TINY, 1e308]
    for k in range(n):
        for where in ("price", "bid_px", "ask_px"):
            for x in specials:
                px = 100.0 + rng.integers(-2, 3, n)
                bid = px - rng.integers(0, 2, n)
                ask = bid + rng.integers(0, 3, n)         # locked and crossed quotes too
                {"price": px, "bid_px": bid, "ask_px": ask}[where][k] = x
                c = Classifier(method)
                want, err = [], None
                for i in range(n):
                    try:
                        c.update_quote(i, bid[i], ask[i])
                        want.append(c.update(i, px[i]))
                    except OFIError as exc:
                        err = (type(exc), exc.field, i)
                        break
                try:
                    got = classify_trades(px, method=method, bid_px=bid, ask_px=ask).tolist()
                    got_err = None
                except OFIError as exc:
                    got, got_err = None, (type(exc), exc.field, exc.index)
                if method == "tick" and where != "price":
                    assert got_err is None     # the tick rule never reads the quotes
                    continue
                assert got_err == err, (k, where, x)
                if err is None:
                    assert got == want, (k, where, x)


# classify_trades(method="lee_ready") runs trd_lee_ready (issue 13, helper trades4): trade 0 and
# the tail one at a time, the rest 16 trades a step in vector lanes with the tick rule's carry as
# a prefix over the step. The lane test above covers every lane of two steps; these hold the
# carry across steps and the flags to the reference.
@pytest.mark.parametrize("run", [1, 15, 16, 17, 33, 100])
def test_lee_ready_tick_carry_across_steps_matches_reference(run):
    # runs of `run` equal prices inside locked, crossed or missing quotes: every such trade is
    # signed by a price change up to `run` trades (several 16-trade steps) back
    rng = np.random.default_rng(run)
    n = 16 * 12 + 5
    steps = rng.choice([-1.0, 0.0, 1.0], n // run + 1)
    px = 100.0 + np.cumsum(np.repeat(steps, run)[:n])
    bid = px - rng.integers(0, 2, n)
    ask = bid + rng.integers(0, 3, n)
    bid[rng.random(n) < 0.3] += 5                                 # crossed
    ask[rng.random(n) < 0.3] = np.nan                             # no quote
    got = classify_trades(px, method="lee_ready", bid_px=bid, ask_px=ask)
    want = ref.classify_trades(px.tolist(), method="lee_ready", bid_px=bid.tolist(),
                               ask_px=ask.tolist())
    assert got.tolist() == list(want)
    # after the first price change the tick rule always has a sign: no 0 from there on
    first = np.flatnonzero(np.diff(px))
    if first.size:
        assert (got[first[0] + 1:] != 0).all()


@pytest.mark.parametrize("k", [0, 1, 15, 16, 17, 31, 32, 200, 206])
@pytest.mark.parametrize("where, x", [("price", math.nan), ("price", -math.inf),
                                      ("bid_px", math.inf), ("ask_px", -math.inf)])
def test_lee_ready_bad_value_in_any_step_is_named(k, where, x):
    n = 207                     # trade 0, 12 steps of 16, a tail of 14
    px = np.full(n, 100.0)
    bid, ask = px - 1, px + 1
    {"price": px, "bid_px": bid, "ask_px": ask}[where][k] = x
    with pytest.raises(NonFiniteError) as exc:
        classify_trades(px, method="lee_ready", bid_px=bid, ask_px=ask)
    assert (exc.value.field, exc.value.index) == (where, k)


# ---------------------------------------------------------------------------------------------
# VPIN.update_many's kernel (issue 13, helper trades3): trades that close no bucket run in one
# branch-free loop, the closing trade through the per-trade step; a bad row found by the loop's
# checks sends the rows from the loop's start through the per-trade step. These tests hold it to
# the one-by-one streaming object, bit for bit, and to its errors.
# ---------------------------------------------------------------------------------------------
VPIN_MODES = ("side", "frac", "half")


def _vpin_state(v):
    d = v.__reduce__()[2]
    written = d["imb"][:min(d["n_closed"], v.n_buckets)]     # slots never closed: unset
    return (_bits(d["open"]), _bits(written), d["head"], d["n_closed"], _bits(d["sum"]),
            d["last"])


def _vpin_one_by_one(mode, V, nb, ts, sz, sd, fr):
    """The streaming object trade by trade: buckets (ts, vpin, buy, sell bits), state, error."""
    v = VPIN(V, nb)
    rows, err = [], None
    for i in range(len(sz)):
        before = v.n_closed
        try:
            if mode == "side":
                v.update(int(ts[i]), float(sz[i]), int(sd[i]))
            elif mode == "frac":
                v.update_fraction(int(ts[i]), float(sz[i]), float(fr[i]))
            else:
                v.update(int(ts[i]), float(sz[i]), 0)
        except OFIError as exc:
            field = "buy_fraction" if (mode == "frac" and exc.field == "side") else exc.field
            err = (type(exc), field, i)
            break
        rows += [int(ts[i])] * (v.n_closed - before)
    return v, rows, err


def _vpin_batch(mode, v, ts, sz, sd, fr):
    if mode == "side":
        return v.update_many(ts, sz, sd)
    if mode == "frac":
        return v.update_many(ts, sz, buy_fraction=fr)
    return v.update_many(ts, sz)


def _vpin_rows_bits(r):
    return r.ts.tolist(), _bits(r.vpin), _bits(r.buy), _bits(r.sell)


@pytest.mark.parametrize("mode", VPIN_MODES)
def test_vpin_kernel_float_sizes_bit_for_bit(mode):
    # float sizes over 7 decades, some zero, some >= V (several buckets), V not a binary
    # fraction, chunks cut anywhere: batch == the streaming object (== the reference, below)
    rng = np.random.default_rng(21)
    n = 6000
    V, nb = 37.3, 7
    ts = np.cumsum(rng.integers(0, 3, n)).astype(np.int64)
    sz = rng.random(n) * 10.0 ** rng.integers(-4, 3, n)
    sz[rng.random(n) < 0.05] = 0.0
    sz[rng.random(n) < 0.01] = -0.0
    sz[rng.random(n) < 0.01] = 3.5 * V
    sd = rng.integers(-1, 2, n).astype(np.int8)
    fr = rng.random(n)
    fr[rng.random(n) < 0.05] = 1.0
    fr[rng.random(n) < 0.05] = -0.0
    one, rows, err = _vpin_one_by_one(mode, V, nb, ts, sz, sd, fr)
    assert err is None and len(rows) > 500
    for cuts in ([n], [1, 2, 3, 500, 1, n], [99, 1, 1, 1, 4000, n]):
        v, got, i = VPIN(V, nb), [], 0
        for c in cuts:
            j = min(n, i + c)
            got.append(_vpin_batch(mode, v, ts[i:j], sz[i:j], sd[i:j], fr[i:j]))
            i = j
            if i == n:
                break
        assert sum((g.ts.tolist() for g in got), []) == rows, cuts
        assert _vpin_state(v) == _vpin_state(one), cuts
        assert _bits(v.value) == _bits(one.value)
    r = _vpin_batch(mode, VPIN(V, nb), ts, sz, sd, fr)
    kw = dict(bucket_volume=V, n_buckets=nb)
    if mode == "side":
        want = ref.vpin(ts.tolist(), sz.tolist(), sd.tolist(), **kw)
    elif mode == "frac":
        want = ref.vpin(ts.tolist(), sz.tolist(), buy_fraction=fr.tolist(), **kw)
    else:
        want = ref.vpin(ts.tolist(), sz.tolist(), **kw)
    # the reference splits trades on cumulative volume (other roundings): equal to rounding
    assert r.ts.tolist() == want[0]
    for got_x, want_x in ((r.buy, want[2]), (r.sell, want[3]), (r.vpin, want[1])):
        np.testing.assert_allclose(got_x, want_x, rtol=1e-9, atol=1e-9 * V)


VPIN_SPECIAL = [  # (field or None, size, side, fraction, ts offset); None: the clean row's value
    ("size", math.nan, None, None, 0), ("size", math.inf, None, None, 0),
    ("size", -math.inf, None, None, 0), ("size", -1.0, None, None, 0),
    ("size", -TINY, None, None, 0), (None, -0.0, None, None, 0), (None, 0.0, None, None, 0),
    (None, TINY, None, None, 0), (None, 1e-300, None, None, 0), (None, 25.0, None, None, 0),
    (None, 10.0, None, None, 0),
    ("side", None, 2, None, 0), ("side", None, -2, None, 0), ("side", None, 127, None, 0),
    ("side", None, -128, None, 0),
    ("buy_fraction", None, None, math.nan, 0), ("buy_fraction", None, None, -TINY, 0),
    ("buy_fraction", None, None, 1.0 + 2.0 ** -52, 0), ("buy_fraction", None, None, math.inf, 0),
    ("buy_fraction", None, None, -math.inf, 0), (None, None, None, -0.0, 0),
    (None, None, None, 1.0, 0), (None, None, None, TINY, 0),
    ("ts", None, None, None, -1),
]


@pytest.mark.parametrize("mode", VPIN_MODES)
def test_every_special_vpin_trade_at_every_position_is_judged_like_update(mode):
    # One row k carries a special value, at the start, just before / at / after a bucket close
    # and at the end; the kernel must accept exactly what vpin_update accepts, give the same
    # bits and state (rows 0..k-1 applied), name the same field and index, and go on alike
    n = 64
    V, nb = 10.0, 3
    rng = np.random.default_rng(8)
    base_ts = np.cumsum(rng.integers(1, 3, n)).astype(np.int64)
    base_sz = rng.integers(1, 4, n).astype(float)        # a close every few trades
    base_sd = rng.integers(-1, 2, n).astype(np.int8)
    base_fr = rng.integers(0, 5, n) / 4
    for k, field, (q, s, f), ts, (sz, sd, fr) in special_rows(
            list(range(12)) + [30, 31, n - 2, n - 1], VPIN_SPECIAL, base_ts, base_sz, base_sd,
            base_fr):
        if (s is not None and mode != "side") or (f is not None and mode != "frac"):
            continue
        one, rows, err1 = _vpin_one_by_one(mode, V, nb, ts, sz, sd, fr)
        assert (err1 is None) == (field is None), (k, field, q, s, f)
        if err1:
            assert err1[1:] == (field, k), (k, field, err1)
        v = VPIN(V, nb)
        try:
            r = _vpin_batch(mode, v, ts, sz, sd, fr)
            err = None
            assert r.ts.tolist() == rows
        except OFIError as exc:
            err = (type(exc), exc.field, exc.index)
        assert err == err1, (k, field, q, s, f)
        assert _vpin_state(v) == _vpin_state(one), (k, field, q, s, f)
        # and the object goes on like the one-by-one one
        t_next = int(ts.max()) + 5
        more = _vpin_batch(mode, v, np.array([t_next, t_next]), np.array([4.0, 9.0]),
                           np.array([1, -1], np.int8), np.array([1.0, 0.0]))
        if mode == "frac":
            one.update_fraction(t_next, 4.0, 1.0)
            one.update_fraction(t_next, 9.0, 0.0)
        else:
            one.update(t_next, 4.0, 1 if mode == "side" else 0)
            one.update(t_next, 9.0, -1 if mode == "side" else 0)
        assert _vpin_state(v) == _vpin_state(one), (k, field)
        assert len(more.ts) >= 1 and _bits(v.value) == _bits(one.value)


def test_vpin_kernel_at_the_rounding_edges():
    # fill + q rounding to V (room 0 afterwards: a later size-0 trade closes nothing, the next
    # positive one closes with room 0), q == room exactly, subnormal sizes: batch == one by one
    V = 1.0
    eps = 2.0 ** -53
    cases = [
        [1.0 - eps, eps / 2, 0.0, -0.0, TINY, 0.25],
        [0.5, 0.5, 0.0, 1.0, 0.0, 1.0 - eps, eps, 3.0],
        [TINY] * 5 + [1.0 - TINY, TINY, 2 * TINY],
        [2.0 ** -60, 1.0 - 2.0 ** -53, 2.0 ** -53, 0.0, 0.5],
    ]
    for sizes in cases:
        sz = np.array(sizes)
        n = len(sz)
        ts = np.arange(n, dtype=np.int64)
        sd = np.array([1, -1] * n, np.int8)[:n]
        fr = np.linspace(0.0, 1.0, n)
        for mode in VPIN_MODES:
            one, rows, err = _vpin_one_by_one(mode, V, 2, ts, sz, sd, fr)
            assert err is None
            for cut in range(n + 1):
                v = VPIN(V, 2)
                a = _vpin_batch(mode, v, ts[:cut], sz[:cut], sd[:cut], fr[:cut])
                b = _vpin_batch(mode, v, ts[cut:], sz[cut:], sd[cut:], fr[cut:])
                assert a.ts.tolist() + b.ts.tolist() == rows, (sizes, mode, cut)
                assert _vpin_state(v) == _vpin_state(one), (sizes, mode, cut)


def _tf_validate_c_builds(tmp_path):
    """trd_tf_validate's C text from _trades.pyx built twice, -O2 (SSE2) and -O2 -mavx2: on an
    AVX2 machine the package runs only the avx2 clone, so the default one is tested here."""
    import ctypes
    import shutil
    import subprocess
    from pathlib import Path
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    src = (Path(ofi_fast.__file__).parent / "_trades.pyx").read_text()
    a = src.index("    /* TradeFlow.update_many's block check")
    b = src.index('    """\n    int trd_tf_validate(')
    c = tmp_path / "tfv.c"
    c.write_text("#include <stddef.h>\ntypedef ptrdiff_t Py_ssize_t;\n#define TRD_CLONES\n"
                 + "\n".join(line[4:] for line in src[a:b].splitlines())
                 .replace("static int trd_tf_validate", "int trd_tf_validate"))
    libs = []
    for flags in (["-O2"], ["-O2", "-mavx2"]):
        so = tmp_path / f"tfv{len(libs)}.so"
        subprocess.run(["gcc", *flags, "-fPIC", "-shared", "-o", str(so), str(c)], check=True)
        f = ctypes.CDLL(str(so)).trd_tf_validate
        f.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_ssize_t, ctypes.c_int64]
        libs.append(f)
    return libs


def test_tf_block_check_sse2_and_avx2_builds_match_the_per_trade_rule(tmp_path):
    # helper edge5: random blocks of 0-40 trades with one special value (non-finite price or
    # size, negative size, -0.0, a bad side, time backwards by 1 or 2**62, int64 extremes so
    # the overflow-safe ts compare is exercised), ts / side present or not, three prevs
    checks = _tf_validate_c_builds(tmp_path)
    rng = np.random.default_rng(1)
    i64 = np.iinfo(np.int64)

    def rule(ts, px, sz, sd, prev):
        for i in range(len(px)):
            if ts is not None and ts[i] < (prev if i == 0 else ts[i - 1]):
                return 1
            if not (math.isfinite(px[i]) and math.isfinite(sz[i]) and sz[i] >= 0):
                return 1
            if sd is not None and sd[i] not in (-1, 0, 1):
                return 1
        return 0
    seen = set()
    for _ in range(3000):
        n = int(rng.integers(0, 40))
        shift = int(rng.choice([0, i64.max - 200, i64.min + 10])) if rng.random() < 0.2 else 0
        ts = np.cumsum(rng.integers(0, 3, n)).astype(np.int64) + shift
        px = 100.0 + rng.integers(-2, 3, n)
        sz = rng.random(n) * 5
        sd = rng.integers(-1, 2, n).astype(np.int8)
        if n:
            k, what = int(rng.integers(0, n)), int(rng.integers(0, 8))
            if what == 0:
                px[k] = rng.choice([math.nan, math.inf, -math.inf])
            elif what == 1:
                sz[k] = rng.choice([math.nan, math.inf, -math.inf, -1.0, -TINY, -0.0])
            elif what == 2:
                sd[k] = rng.choice([2, -2, 127, -128])
            elif what == 3 and k:
                d = int(ts[k - 1]) - int(rng.choice([1, 2**62]))
                ts[k] = max(d, int(i64.min))
            elif what == 4:
                ts[k] = rng.choice([i64.min, i64.max])
        prev = int(rng.choice([i64.min, ts[0] if n else 0, ts[0] + 1 if n and ts[0] < i64.max
                               else 0]))
        use_ts, use_sd = rng.random() < 0.8, rng.random() < 0.8
        want = rule(ts if use_ts else None, px, sz, sd if use_sd else None, prev)
        seen.add(want)
        for f in checks:
            got = f(ts.ctypes.data if use_ts else None, px.ctypes.data, sz.ctypes.data,
                    sd.ctypes.data if use_sd else None, n, prev)
            assert got == want, (n, use_ts, use_sd, prev, ts, px, sz, sd)
    assert seen == {0, 1}
