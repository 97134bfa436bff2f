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
