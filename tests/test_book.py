"""Book: hand cases (THEORY-DETAIL 6), differential tests against reference.Book, crossed-book
policies, bad input, pickling, and LOBSTER step tests at price-level granularity."""

import contextlib
import math
import pickle

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import ofi_fast
from ofi_fast import reference as ref
from ofi_fast._book import Book
from ofi_fast.errors import CrossedBookError, NegativeSizeError, NonFiniteError, OFIError

from conftest import data_file


def same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def assert_same_book(book, rb, n=10):
    got = book.top(n)
    exp = rb.top(n)
    for g, e in zip(got, exp):
        assert same(g, e), (got, exp)
    assert same(book.best_bid, rb.best_bid) and same(book.best_ask, rb.best_ask)
    assert same(book.mid, rb.mid) and same(book.spread, rb.spread)
    assert book.bid_levels == len(rb.bids) and book.ask_levels == len(rb.asks)


def apply_as_reference(b, rb, side, px, sz, i):
    """Row i by apply to the reference and to b: the same error (kind, field), or none."""
    try:
        rb.apply(int(side[i]), px[i], sz[i], i)
    except ref.RefError as err:
        with pytest.raises(OFIError) as ei:
            b.apply(int(side[i]), px[i], sz[i])
        assert type(ei.value).__name__ == err.kind and ei.value.field == err.field
    else:
        b.apply(int(side[i]), px[i], sz[i])


def assert_same_levels_and_counters(b, rb):
    """Every level of both sides and the counters, b == the reference."""
    for s_ in (1, -1):
        k, z = b.levels(s_)
        assert [(int(t), q) for t, q in zip(k, z)] == rb.levels(s_)
    assert (b.n_updates, b.n_crossed, b.n_locked, b.n_missing) == \
        (rb.n_updates, rb.n_crossed, rb.n_locked, rb.n_missing)


# ------------------------------------------------------------------ hand cases
def test_basic_book_and_theory_vectors():
    b = Book(1.0)
    b.apply(1, 100, 30)
    b.apply(-1, 101, 10)
    assert b.best_bid == 100 and b.best_ask == 101 and b.mid == 100.5 and b.spread == 1
    # THEORY-DETAIL 6.1 and 6.3
    assert b.imbalance() == 0.5
    assert b.weighted_mid == 100.75
    # 6.2: bids (30, 20, 10), asks (10, 20, 50), decay 0.5 -> 10/75
    b.apply(1, 99, 20)
    b.apply(1, 98, 10)
    b.apply(-1, 102, 20)
    b.apply(-1, 103, 50)
    assert b.imbalance(3, 0.5) == pytest.approx(10 / 75, abs=1e-15)
    assert b.imbalance(3) == pytest.approx((60 - 80) / 140, abs=1e-15)
    bp, bs, ap, az = b.top(4)
    assert same(bp, [100, 99, 98, np.nan]) and same(bs, [30, 20, 10, 0])
    assert same(ap, [101, 102, 103, np.nan]) and same(az, [10, 20, 50, 0])
    # delete the best bid: next best is 99
    b.apply(1, 100, 0)
    assert b.best_bid == 99 and b.best_bid_size == 20


def test_tick_grid_and_decimal_prices():
    b = Book(0.01)
    b.apply(1, 585.33, 18)
    assert b.best_bid_tick == 58533
    b.apply(1, 585.33, 0)
    assert b.bid_levels == 0
    with pytest.raises(OFIError) as ei:
        b.apply(1, 585.335, 1)
    assert ei.value.field == "price" and ei.value.index == 0


def test_empty_sides():
    b = Book(1.0)
    assert math.isnan(b.best_bid) and math.isnan(b.mid) and math.isnan(b.weighted_mid)
    assert b.imbalance() == 0.0
    b.apply(1, 10, 5)
    assert b.imbalance() == 1.0 and math.isnan(b.spread)
    b.apply(1, 10, 0)
    b.apply(1, 10, 0)          # deleting a missing level is fine by default
    assert b.n_missing == 1 and b.bid_levels == 0


def test_far_prices_and_jumps():
    b = Book(1.0, capacity=2)
    b.apply(1, 1000, 1)
    b.apply(-1, 1001, 1)
    b.apply(1, 1, 7)               # 999 ticks below
    b.apply(-1, 10_000_000, 3)     # far above
    for k in range(50):
        b.apply(1, 900 - k, 1)     # growth past the initial capacity
    assert b.bid_levels == 52 and b.best_bid == 1000
    b.apply(1, 1000, 0)
    b.apply(-1, 1001, 0)
    assert b.best_bid == 900 and b.best_ask == 10_000_000
    b.apply(-1, 50_001, 2)          # the price jumps thousands of ticks
    assert b.best_ask == 50_001


def test_crossed_policies():
    b = Book(1.0, crossed="raise")
    b.load_snapshot([100, 99], [1, 2], [101, 102], [3, 4])
    with pytest.raises(CrossedBookError) as ei:
        b.apply(1, 101, 5)
    assert ei.value.field == "price"
    assert b.best_bid == 100 and b.bid_levels == 2  # unchanged
    with pytest.raises(CrossedBookError):
        b.apply(-1, 100, 5)     # locked counts as crossed

    k = Book(1.0)                                   # the default: keep, counted
    assert k.crossed == "keep"
    k.load_snapshot([100], [1], [101], [3])
    k.apply(1, 101, 9)
    assert k.best_bid == 101 and k.best_ask == 101 and (k.n_locked, k.n_crossed) == (1, 0)
    k.apply(1, 102, 1)
    # every level the feed showed is still there: 3 bids, the ask at 101 under them
    assert (k.n_locked, k.n_crossed) == (1, 1) and k.bid_levels == 3 and k.ask_levels == 1
    assert not hasattr(k, "n_dropped")


@pytest.mark.parametrize("policy", ["drop_stale", "ignore", "", None, 2, "KEEP"])
def test_unknown_crossed_policy_is_a_value_error_listing_the_valid_ones(policy):
    """Issue 12 item 4: no policy deletes a level the feed still shows, so drop_stale is
    gone; it and any other unknown policy are a ValueError (OFIError) naming the valid ones,
    for Book, BookOFI and the reference alike."""
    for cls in (Book, ofi_fast.BookOFI):
        with pytest.raises(ValueError) as ei:
            cls(1.0, crossed=policy)
        msg = str(ei.value)
        assert isinstance(ei.value, OFIError) and ei.value.field == "crossed"
        assert "'keep'" in msg and "'raise'" in msg and repr(policy) in msg
    with pytest.raises(ref.RefError):
        ref.Book(1.0, crossed=policy)


@pytest.mark.parametrize("policy", ["raise", "keep"])
def test_crossing_is_judged_at_message_ends_only(policy):
    """One message moves the market up 3 ticks, bids first (as a Binance diff does): after
    its bid rows the book looks crossed, after its last row it is not. No policy may act
    inside the message; the end state is the exchange's."""
    msg_side = [1, 1, 1, -1, -1]
    msg_px = [103, 102, 100, 101, 104]       # new bids 103, 102; old bid 100 and ask 101 go
    msg_sz = [5, 6, 0, 0, 7]
    end = [False, False, False, False, True]
    b = Book(1.0, crossed=policy)
    b.load_snapshot([100, 99], [1, 2], [101, 102, 103, 104], [3, 4, 5, 6])
    # the message also deletes asks 102 and 103 (else its end state would cross)
    msg_side[3:3] = [-1, -1]
    msg_px[3:3] = [102, 103]
    msg_sz[3:3] = [0, 0]
    end[3:3] = [False, False]
    b.apply_many(msg_side, msg_px, msg_sz, batch_end=end)
    assert (b.best_bid, b.best_ask) == (103, 104)
    assert b.bid_levels == 3 and b.ask_levels == 1
    assert (b.n_crossed, b.n_locked) == (0, 0)
    # the same rows one message each: the third row (bid 100 deleted, 103 bid vs 101 ask)
    # ends a crossed message
    c = Book(1.0, crossed=policy)
    c.load_snapshot([100, 99], [1, 2], [101, 102, 103, 104], [3, 4, 5, 6])
    if policy == "raise":
        with pytest.raises(CrossedBookError) as ei:
            c.apply_many(msg_side, msg_px, msg_sz)
        assert ei.value.index == 0 and c.best_bid == 100    # row 0 refused, nothing changed
    else:
        c.apply_many(msg_side, msg_px, msg_sz)
        # rows 0..4 end with bid 103 over ask 101 (asks 102, 103 deleted at rows 3, 4);
        # row 5 deletes ask 101 (best ask 104), row 6 sets 104
        assert (c.n_crossed, c.n_locked) == (5, 0)
        assert (c.best_bid, c.best_ask) == (103, 104) and c.n_missing == 0
    # a single apply is its own message unless told otherwise
    d = Book(1.0, crossed=policy)
    d.load_snapshot([100], [1], [101], [3])
    d.apply(1, 102, 1, batch_end=False)      # inside a message: never judged
    assert (d.n_crossed, d.best_bid) == (0, 102)
    d.apply(-1, 101, 0, batch_end=False)
    d.apply(-1, 103, 2)                      # ends the message: 102 bid vs 103 ask
    assert (d.n_crossed, d.n_locked) == (0, 0)
    assert (d.best_bid, d.best_ask) == (102, 103)


def test_raise_refuses_only_the_message_end_row():
    b = Book(1.0, crossed="raise")
    b.load_snapshot([100], [1], [101], [3])
    with pytest.raises(CrossedBookError) as ei:
        b.apply_many([1, -1], [102, 101], [1, 5], batch_end=[False, True])
    # row 1 would leave 102 vs 101 crossed: refused; row 0 (inside the message) stays
    assert ei.value.index == 1 and (b.best_bid, b.best_ask, b.best_ask_size) == (102, 101, 3)
    b.apply(-1, 101, 0)                      # deleting the ask ends the crossing: accepted
    assert b.best_bid == 102 and math.isnan(b.best_ask)
    r = ref.Book(1.0, crossed="raise")
    r.load_snapshot([100], [1], [101], [3])
    with pytest.raises(ref.RefError):
        r.apply_many([1, -1], [102, 101], [1, 5], batch_end=[False, True])


def test_strict_mode():
    b = Book(1.0, strict=True)
    b.apply(1, 10, 1)
    with pytest.raises(OFIError) as ei:
        b.apply_many([1, 1], [10, 10], [0, 0])
    assert ei.value.field == "price" and ei.value.index == 1
    assert b.bid_levels == 0


def test_bad_input_names_field_and_index():
    b = Book(1.0)
    b.apply_many([1, -1], [100, 101], [1, 1])
    before = [a.copy() for a in b.top(5)]
    cases = [([1, 2], [99, 98], [1, 1], OFIError, "side", 1),
             ([1, 1], [99, np.nan], [1, 1], NonFiniteError, "price", 1),
             ([1, 1], [99, 98], [1, -1], NegativeSizeError, "size", 1),
             ([1, 1], [99, 98], [np.inf, 1], NonFiniteError, "size", 0)]
    for side, px, sz, cls, field, idx in cases:
        c = Book(1.0)
        c.apply_many([1, -1], [100, 101], [1, 1])
        with pytest.raises(cls) as ei:
            c.apply_many(side, px, sz)
        assert ei.value.field == field and ei.value.index == idx
        # events before the bad one are applied, the bad one is not
        assert c.bid_levels == 1 + idx
    with pytest.raises(OFIError):
        b.apply_many([1], [1.0, 2.0], [1.0])
    assert all(same(x, y) for x, y in zip(b.top(5), before))


def test_snapshot():
    b = Book(100.0, crossed="raise")
    # LOBSTER-style dummies with size 0 are skipped; duplicates: last wins
    b.load_snapshot([5853300, -9999999999, 5853000, 5853300], [18, 0, 150, 20],
                    [5859400, 9999999999], [200, 0])
    assert b.best_bid == 5853300 and b.best_bid_size == 20 and b.bid_levels == 2
    assert b.ask_levels == 1
    b.load_snapshot(ask_px=[5859500], ask_sz=[7])     # bid side kept
    assert b.bid_levels == 2 and b.best_ask == 5859500
    with pytest.raises(CrossedBookError):
        b.load_snapshot(ask_px=[5853300], ask_sz=[1])
    assert b.best_ask == 5859500
    k = Book(100.0)                                   # keep: a crossed snapshot is kept as sent
    k.load_snapshot([5853300], [1], [5853300], [1])
    assert k.best_bid == k.best_ask == 5853300 and k.n_locked == 0
    with pytest.raises(NegativeSizeError) as ei:
        b.load_snapshot([1, 2], [1, -1], [3], [1])
    assert ei.value.field == "bid_sz" and ei.value.index == 1


def test_top_returns_fresh_arrays_and_fills_out():
    """top(n) is a new (4, n) array each call (never a view of the book: it keeps its values
    after later updates and is writeable); out= is filled in place and returned."""
    b = Book(1.0)
    b.apply_many([1, 1, -1], [10, 9, 11], [1, 2, 3])
    t1 = b.top(3)
    assert isinstance(t1, np.ndarray) and t1.shape == (4, 3) and t1.dtype == np.float64
    assert t1.flags.writeable and t1.flags.owndata
    bp, bs, ap, az = t1                       # unpacks as (bid_px, bid_sz, ask_px, ask_sz)
    assert same(bp, [10, 9, np.nan]) and same(bs, [1, 2, 0])
    assert same(ap, [11, np.nan, np.nan]) and same(az, [3, 0, 0])
    t2 = b.top(3)
    assert t2 is not t1 and not np.shares_memory(t1, t2)
    b.apply(1, 10, 0.0)                       # a later update does not touch earlier results
    t1[1, 0] = -5.0                           # nor does writing to a result touch the book
    assert same(t2, [[10, 9, np.nan], [1, 2, 0], [11, np.nan, np.nan], [3, 0, 0]])
    assert same(b.top(3)[0], [9, np.nan, np.nan]) and b.best_bid_size == 2
    out = tuple(np.zeros(3) for _ in range(4))
    r = b.top(3, out=out)
    assert r is out and same(out[0], [9, np.nan, np.nan]) and same(out[3], [3, 0, 0])
    assert b.top(0).shape == (4, 0)
    with pytest.raises(OFIError):
        b.top(2, out=out)
    with pytest.raises(OFIError):
        b.top(-1)
    for bad in (np.zeros((4, 6))[:, ::2], np.zeros((4, 3), np.float32), np.zeros((3, 3)),
                np.zeros((4, 3)).T.copy().T, np.zeros(12)):
        with pytest.raises(OFIError) as ei:
            b.top(3, out=bad)
        assert ei.value.field == "out"
    ro = np.zeros((4, 3))
    ro.flags.writeable = False
    with pytest.raises(OFIError):
        b.top(3, out=ro)


def test_pickle_mid_stream(rng):
    side, px, sz = random_deltas(rng, 400)
    b = Book(1.0)
    b.apply_many(side[:200], px[:200], sz[:200])
    assert b.n_crossed > 0 and b.n_missing > 0        # the counters are carried over too
    c = pickle.loads(pickle.dumps(b))
    b.apply_many(side[200:], px[200:], sz[200:])
    c.apply_many(side[200:], px[200:], sz[200:])
    assert all(same(x, y) for x, y in zip(b.top(20), c.top(20)))
    assert (b.n_updates, b.n_crossed, b.n_locked, b.n_missing) == \
        (c.n_updates, c.n_crossed, c.n_locked, c.n_missing)
    assert ofi_fast.Book is Book


# ------------------------------------------------------------------ differential
def random_deltas(rng, n, far=0.05, p_delete=0.3, spread_ticks=10):
    """Updates mostly within `spread_ticks` of a drifting touch, some far, some deletes."""
    mid = 1000 + np.cumsum(rng.integers(-1, 2, n))
    side = rng.choice([1, -1], n).astype(np.int8)
    off = rng.integers(1, spread_ticks + 1, n)
    farm = rng.random(n) < far
    off[farm] = rng.integers(11, 5000, farm.sum())
    px = np.where(side == 1, mid - off, mid + off).astype(np.float64)
    sz = rng.integers(1, 50, n).astype(np.float64)
    sz[rng.random(n) < p_delete] = 0.0
    return side, px, sz


@st.composite
def delta_streams(draw):
    n = draw(st.integers(1, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    side, px, sz = random_deltas(rng, n, far=draw(st.sampled_from([0.0, 0.1])),
                                 spread_ticks=draw(st.sampled_from([2, 10])))
    # allow crossing updates too
    cross = rng.random(n) < 0.1
    px[cross] = px[cross] - side[cross] * 12
    return side, px, sz


@given(delta_streams(), st.sampled_from(["keep", "raise"]),
       st.sampled_from([1.0, 0.0, 0.3, 0.7]), st.integers(0, 2**32 - 1))
def test_book_matches_reference_after_every_event(stream, policy, p_end, seed):
    """Rows end their message with probability p_end (1: every row is a message)."""
    side, px, sz = stream
    end = np.random.default_rng(seed).random(len(px)) < p_end
    b = Book(1.0, crossed=policy, capacity=4)
    rb = ref.Book(1.0, crossed=policy)
    for i in range(len(px)):
        err = None
        try:
            rb.apply(int(side[i]), px[i], sz[i], i, batch_end=bool(end[i]))
        except ref.RefError as e:
            err = e
        if err is None:
            b.apply(int(side[i]), px[i], sz[i], bool(end[i]))
        else:
            with pytest.raises(OFIError) as ei:
                b.apply(int(side[i]), px[i], sz[i], batch_end=bool(end[i]))
            assert type(ei.value).__name__ == err.kind and ei.value.field == err.field
        assert_same_book(b, rb, 10)
        assert b.imbalance(5, 0.5) == pytest.approx(rb.imbalance(5, 0.5), rel=1e-12, abs=1e-15)
        assert same(b.weighted_mid, rb.weighted_mid)
    assert (b.n_updates, b.n_crossed, b.n_locked, b.n_missing) == \
        (rb.n_updates, rb.n_crossed, rb.n_locked, rb.n_missing)


@given(delta_streams(), st.sampled_from(["keep", "raise"]),
       st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_apply_many_batch_end_equals_apply_and_reference(stream, policy, seed, chunk):
    """apply_many(batch_end=) in chunks == apply(batch_end=) row by row == reference, up
    to the first error (same index, kind, field), counters included."""
    side, px, sz = stream
    end = np.random.default_rng(seed).random(len(px)) < 0.4
    a, c = Book(1.0, crossed=policy), Book(1.0, crossed=policy)
    rb = ref.Book(1.0, crossed=policy)
    err = None
    try:
        rb.apply_many(side.tolist(), px.tolist(), sz.tolist(), batch_end=end.tolist())
    except ref.RefError as e:
        err = e
    stop = len(px) if err is None else err.index
    for i in range(stop):
        a.apply(int(side[i]), px[i], sz[i], batch_end=bool(end[i]))
    got = None
    for s0 in range(0, len(px), chunk):
        sl = slice(s0, s0 + chunk)
        try:
            c.apply_many(side[sl], px[sl], sz[sl], batch_end=end[sl])
        except OFIError as e:
            got = (s0 + e.index, type(e).__name__, e.field)
            break
    assert got == (None if err is None else (err.index, err.kind, err.field))
    for b in (a, c):
        assert_same_book(b, rb, 10)
        assert (b.n_updates, b.n_crossed, b.n_locked, b.n_missing) == \
            (rb.n_updates, rb.n_crossed, rb.n_locked, rb.n_missing)


# book5: apply_many's C batch (policy keep) sums the judgement and the counters per batch
@pytest.mark.parametrize("with_end", [False, True])
def test_apply_many_batch_judgement_by_hand(with_end):
    """One side empty (the ask keys are negative: bid best INT64_MIN + ask key wraps in int64,
    which must not count as crossed), then a locked and a crossed book kept over several
    rows: each message end counts once, as apply row by row and the reference count."""
    rows = [(-1, 100.0, 1.0), (-1, 101.0, 2.0), (-1, 102.0, 3.0),   # asks only
            (1, 99.0, 1.0),                                          # bid 99 < ask 100
            (1, 100.0, 1.0), (-1, 103.0, 1.0), (1, 98.0, 5.0),       # locked at 100, 3 rows
            (1, 101.0, 1.0), (-1, 102.0, 4.0),                       # crossed 101 > 100, 2
            (-1, 100.0, 0.0),                                        # ask 101: locked again
            (1, 101.0, 0.0), (1, 100.0, 0.0)]                        # bid 99 < ask 101
    side = np.array([r[0] for r in rows], np.int8)
    px = np.array([r[1] for r in rows])
    sz = np.array([r[2] for r in rows])
    end = np.ones(len(rows), bool)
    end[5] = False                           # rows 5 and 6 are one message: judged once
    kw = {"batch_end": end} if with_end else {}
    b, a, rb = Book(1.0), Book(1.0), ref.Book(1.0, crossed="keep")
    b.apply_many(side, px, sz, **kw)
    for i, (s, p, q) in enumerate(rows):
        a.apply(s, p, q, batch_end=bool(end[i]) if with_end else True)
    rb.apply_many(side.tolist(), px.tolist(), sz.tolist(),
                  batch_end=end.tolist() if with_end else None)
    locked = 3 + 1 - (1 if with_end else 0)  # rows 4, 5, 6 and 9 (row 5 not an end)
    assert (b.n_locked, b.n_crossed, b.n_missing, b.n_updates) == (locked, 2, 0, len(rows))
    for x in (a, rb):
        assert (x.n_locked, x.n_crossed, x.n_missing, x.n_updates) == \
            (b.n_locked, b.n_crossed, b.n_missing, b.n_updates)
    assert_same_book(b, rb, 10)


@pytest.mark.parametrize("with_end", [False, True])
def test_apply_many_batch_strict_missing_delete_in_the_window(with_end):
    """strict=True in the C batch: a missing delete next to live levels (inside the window,
    the side not empty) is refused at its row, field price; the rows before it stay applied
    and are counted."""
    b = Book(1.0, strict=True)
    kw = {"batch_end": np.array([False, True, False, True])} if with_end else {}
    with pytest.raises(OFIError) as ei:
        b.apply_many(np.array([1, 1, -1, 1], np.int8), np.array([10.0, 9.0, 12.0, 8.0]),
                     np.array([1.0, 2.0, 3.0, 0.0]), **kw)
    assert (ei.value.field, ei.value.index) == ("price", 3)
    assert (b.bid_levels, b.ask_levels, b.n_updates, b.n_missing) == (2, 1, 3, 0)
    assert (b.best_bid, b.best_ask) == (10.0, 12.0)


@given(delta_streams(), st.integers(1, 40))
def test_apply_many_chunks_equal_apply(stream, chunk):
    side, px, sz = stream
    a = Book(1.0, crossed="keep")
    b = Book(1.0, crossed="keep")
    for i in range(len(px)):
        a.apply(int(side[i]), px[i], sz[i])
    for s in range(0, len(px), chunk):
        b.apply_many(side[s:s + chunk], px[s:s + chunk], sz[s:s + chunk])
    assert all(same(x, y) for x, y in zip(a.levels(1) + a.levels(-1), b.levels(1) + b.levels(-1)))


# ------------------------------------------------------------------ the near-touch fast path
def touch_heavy_deltas(rng, n, p_missing=0.05, p_cross=0.03, far=0.05):
    """Streams that keep 10-40 dense levels per side (so the near-touch fast path of
    Book.apply runs most of the time): sets and deletes within 12 ticks of the touch, some
    deletions of absent levels, some crossing updates, some far levels."""
    side = rng.choice([1, -1], n).astype(np.int8)
    mid = 1000 + np.cumsum(rng.integers(-1, 2, n) * (rng.random(n) < 0.05))
    off = rng.integers(1, 13, n)
    farm = rng.random(n) < far
    off[farm] = rng.integers(13, 3000, farm.sum())
    cross = rng.random(n) < p_cross
    off[cross] = -rng.integers(0, 4, cross.sum())
    px = np.where(side == 1, mid - off, mid + off).astype(np.float64)
    sz = rng.integers(1, 50, n).astype(np.float64)
    dele = rng.random(n) < 0.3 + p_missing
    sz[dele] = 0.0
    return side, px, sz


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["keep", "raise"]),
       st.booleans(), st.sampled_from([1.0, 0.01]))
def test_fast_path_matches_reference_on_deep_books(seed, policy, strict, tick):
    """Long touch-heavy streams (books of 10-40 levels, so inserts, overwrites, deletes and
    missing deletes go through the branch-free near-touch path) == reference after every
    event, including errors (crossing under "raise", missing levels under strict)."""
    rng = np.random.default_rng(seed)
    side, px, sz = touch_heavy_deltas(rng, 600)
    px = px * tick
    b = Book(tick, crossed=policy, strict=strict, capacity=8)
    rb = ref.Book(tick, crossed=policy, strict=strict)
    snap = (np.arange(999, 987, -1) * tick, np.full(12, 5.0),
            np.arange(1001, 1013) * tick, np.full(12, 5.0))
    b.load_snapshot(*snap)
    rb.load_snapshot(*snap)
    deep = 0
    for i in range(len(px)):
        deep += b.bid_levels >= 8 and b.ask_levels >= 8
        apply_as_reference(b, rb, side, px, sz, i)
        assert_same_book(b, rb, 12)
    assert (b.n_updates, b.n_crossed, b.n_locked, b.n_missing) == \
        (rb.n_updates, rb.n_crossed, rb.n_locked, rb.n_missing)
    assert deep > len(px) // 4          # the stream did exercise deep books (>= 60 % seen)


@settings(max_examples=30)
@given(st.integers(0, 2**32 - 1), st.integers(1, 10))
def test_fast_path_bookofi_ranks_match_reference(seed, L):
    """BookOFI reads the rank/shift the fast path records: per-level e on deep books ==
    reference (exact: integer-valued data), bit for bit: compared as bytes, so a level the
    rank step leaves unchanged must give +0.0 as the reference's full recomputation does
    (== alone would accept -0.0)."""
    rng = np.random.default_rng(seed)
    side, px, sz = touch_heavy_deltas(rng, 600)
    ts = np.arange(len(px))
    o = BookOFI(1.0, levels=L, crossed="keep")
    r = ref.BookOFI(1.0, levels=L, crossed="keep")
    e, lv = o.update_many(ts, side, px, sz, levels=True)
    re1, rlv = r.update_many(ts.tolist(), side.tolist(), px.tolist(), sz.tolist(), levels=True)
    assert e.tolist() == re1 and lv.tolist() == rlv
    assert e.tobytes() == np.asarray(re1, np.float64).tobytes()
    assert lv.tobytes() == np.asarray(rlv, np.float64).reshape(lv.shape).tobytes()


@given(st.sampled_from([1.0, 0.01, 0.5, 1e-5, 0.1, 0.25, 3e-8]),
       st.integers(-10**11, 10**11) | st.integers(-100, 100)
       # from 2**52 ticks on every double is an integer (x + 0.5 would round to even)
       | st.integers(2**52 - 4, 2**53 + 4) | st.integers(-(2**53) - 4, -(2**52) + 4),
       st.floats(-3e-6, 3e-6) | st.sampled_from([0.0, 1e-6, -1e-6, 0.5, -0.5]),
       st.integers(0, 9))
def test_tick_conversion_matches_reference_at_the_tolerance(tick, t, d, filled):
    """Prices (t + d) * tick around the 1e-6-tick off-grid tolerance: accepted exactly when
    the reference accepts, at the same tick, whether the fast path (multiply by 1/tick) or
    the general path (division) handles the update."""
    price = (t + d) * tick
    rb = ref.Book(tick)
    try:
        want = rb._tick(price)
    except ref.RefError:
        want = None
    b = Book(tick, crossed="keep")
    if want is not None and filled:
        # `filled` levels just below the price: the fast path's slot search runs
        b.apply_many(np.ones(filled + 8, np.int8), (want - 1 - np.arange(filled + 8)) * tick,
                     np.ones(filled + 8))
    if want is None:
        with pytest.raises(OFIError) as ei:
            b.apply(1, price, 1.0)
        assert ei.value.field == "price"
    else:
        b.apply(1, price, 1.0)
        assert b.best_bid_tick == want


def test_tick_counts_from_2_to_the_52_are_kept_exactly():
    # an odd count of ticks in [2**52, 2**53) once read one tick up (x + 0.5 rounded to even)
    for t in (2**52 + 1, 2**52 + 3, 2**53 - 1, -(2**52) - 1):
        b = Book(1.0)
        b.apply(1, float(t), 5.0)
        assert b.best_bid_tick == t == ref.Book(1.0)._tick(float(t))
        o = ofi_fast.BookOFI(1.0, levels=2)
        r = ref.BookOFI(1.0, levels=2)
        assert o.update(0, 1, float(t), 5.0) == r.update(0, 1, float(t), 5.0)
        assert o.update(1, 1, float(t - 2), 3.0) == r.update(1, 1, float(t - 2), 3.0)
        assert o.book.best_bid_tick == t


# ------------------------------------------------------------------ LOBSTER
def load_lobster(msg_path, ob_path, nrows=None):
    msg = np.loadtxt(msg_path, delimiter=",", max_rows=nrows)
    ob = np.loadtxt(ob_path, delimiter=",", max_rows=nrows)
    return msg, ob


def lobster_levels(row):
    """(bid_px, bid_sz, ask_px, ask_sz) of one orderbook row (dummies have size 0)."""
    return row[2::4], row[3::4], row[0::4], row[1::4]


def lobster_step_check(msg, ob, tick=100.0):
    """For every message i: snapshot row i-1, apply message i at price-level granularity,
    compare row i on every level whose price lies inside row i-1's price range."""
    nlev = ob.shape[1] // 4
    compared = mismatched = 0
    book = Book(tick, crossed="keep")
    for i in range(1, len(msg)):
        prev, cur = ob[i - 1], ob[i]
        bp, bs, ap, az = lobster_levels(prev)
        book.load_snapshot(bp, bs, ap, az)
        typ, size, price, direction = msg[i, 1], msg[i, 3], msg[i, 4], int(msg[i, 5])
        if typ in (1, 2, 3, 4):
            levels_b, levels_a = book.levels(1), book.levels(-1)
            lv = levels_b if direction == 1 else levels_a
            t = int(round(price / tick))
            old = float(lv[1][np.flatnonzero(lv[0] == t)[0]]) if (lv[0] == t).any() else 0.0
            new = old + size if typ == 1 else old - size
            book.apply(direction, price, max(new, 0.0))
        cb, cbs, ca, cas = lobster_levels(cur)
        vb = bp[bs > 0]
        va = ap[az > 0]
        tb, tbs, ta, tas = book.top(nlev)
        # compare bid levels whose price is inside prev's visible bid range, same for asks
        lo_b = vb.min() if vb.size else np.inf
        hi_a = va.max() if va.size else -np.inf
        want_b = {p: q for p, q in zip(cb, cbs) if q > 0 and p >= lo_b}
        have_b = {p: q for p, q in zip(tb, tbs) if q > 0 and p >= lo_b}
        want_a = {p: q for p, q in zip(ca, cas) if q > 0 and p <= hi_a}
        have_a = {p: q for p, q in zip(ta, tas) if q > 0 and p <= hi_a}
        compared += 1
        if want_b != have_b or want_a != have_a:
            mismatched += 1
    return compared, mismatched


def test_lobster_aapl_step_rule():
    d = "lobster"
    msg, ob = load_lobster(data_file(d, "AAPL_2012-06-21_34200000_57600000_message_10.csv"),
                           data_file(d, "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"))
    compared, mismatched = lobster_step_check(msg, ob)
    assert compared == len(msg) - 1 == 998
    assert mismatched == 0


def test_lobster_aapl_rebuild_from_row0(capsys):
    """Rebuild the whole sample from row 0 alone; report how many rows match at 1/5/10 levels.

    Why rows differ: the message file only lists events inside the visible 10 levels. A price
    that was ever beyond the visible range of a full side (below the 10th bid / above the 10th
    ask) may have changed unseen, so the rebuilt book cannot know it. The test asserts exact
    equality on every level that stayed inside the visible range on every row so far
    (bid price >= running max of the 10th-bid price of full rows; asks alike), and reports
    the full-row match counts."""
    d = "lobster"
    msg, ob = load_lobster(data_file(d, "AAPL_2012-06-21_34200000_57600000_message_10.csv"),
                           data_file(d, "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"))
    book = Book(100.0, crossed="keep")
    book.load_snapshot(*lobster_levels(ob[0]))
    nlev = ob.shape[1] // 4
    match = {1: 0, 5: 0, 10: 0}
    lo_b, hi_a = -np.inf, np.inf
    for i in range(1, len(msg)):
        typ, size, price, direction = msg[i, 1], msg[i, 3], msg[i, 4], int(msg[i, 5])
        if typ in (1, 2, 3, 4):
            k, z = book.levels(direction)
            t = int(round(price / 100.0))
            old = float(z[k == t][0]) if (k == t).any() else 0.0
            book.apply(direction, price, max(old + size if typ == 1 else old - size, 0.0))
        cb, cbs, ca, cas = lobster_levels(ob[i])
        for row in (ob[i - 1], ob[i]):
            rb, rbs, ra, ras = lobster_levels(row)
            if (rbs > 0).sum() == nlev:
                lo_b = max(lo_b, rb[rbs > 0].min())
            if (ras > 0).sum() == nlev:
                hi_a = min(hi_a, ra[ras > 0].max())
        tb, tbs, ta, tas = book.top(nlev)
        for L in match:
            if (np.array_equal(tb[:L], cb[:L]) and np.array_equal(tbs[:L], cbs[:L])
                    and np.array_equal(ta[:L], ca[:L]) and np.array_equal(tas[:L], cas[:L])):
                match[L] += 1
        want_b = {p: q for p, q in zip(cb, cbs) if q > 0 and p >= lo_b}
        have_b = {p: q for p, q in zip(tb, tbs) if q > 0 and p >= lo_b}
        want_a = {p: q for p, q in zip(ca, cas) if q > 0 and p <= hi_a}
        have_a = {p: q for p, q in zip(ta, tas) if q > 0 and p <= hi_a}
        assert want_b == have_b and want_a == have_a, i
    n = len(msg) - 1
    with capsys.disabled():
        print(f"\nLOBSTER AAPL rebuilt from row 0: rows matching at levels 1/5/10: "
              f"{match[1]}/{n}, {match[5]}/{n}, {match[10]}/{n}; every level that never left "
              f"the visible range matches on every row (the rest were unseen beyond level 10)")
    assert match[10] <= match[5] <= match[1] <= n


# ------------------------------------------------------------------ BookOFI
from ofi_fast import _book as _book_mod  # noqa: E402
from ofi_fast._book import BookOFI  # noqa: E402
from ofi_fast._ofi import l1_ofi, mlofi  # noqa: E402
from ofi_fast.errors import TimeOrderError  # noqa: E402


@given(delta_streams(), st.integers(1, 6), st.integers(1, 30))
def test_bookofi_matches_l1_ofi_and_mlofi_over_its_book(stream, L, chunk):
    side, px, sz = stream
    n = len(px)
    ts = np.arange(n, dtype=np.int64)
    rb = ref.Book(1.0, crossed="keep")
    tops = []
    for i in range(n):
        rb.apply(int(side[i]), px[i], sz[i])
        tops.append(rb.top(L))
    bp, bs, ap, az = (np.array([t[k] for t in tops]).reshape(n, L) for k in range(4))
    e1 = l1_ofi(bp[:, 0], bs[:, 0], ap[:, 0], az[:, 0])
    eml = mlofi(bp, bs, ap, az)
    o = BookOFI(1.0, levels=L, crossed="keep")
    got, lv = [], []
    for s in range(0, n, chunk):
        a, b = o.update_many(ts[s:s + chunk], side[s:s + chunk], px[s:s + chunk],
                             sz[s:s + chunk], levels=True)
        got.append(a)
        lv.append(b)
    assert np.array_equal(np.concatenate(got), e1)
    assert np.array_equal(np.concatenate(lv), eml)
    one = BookOFI(1.0, levels=L, crossed="keep")
    assert [one.update(ts[i], int(side[i]), px[i], sz[i]) for i in range(n)] == e1.tolist()
    assert o.values.tolist() == eml.sum(axis=0).tolist() and o.value == e1.sum()
    assert all(same(x, y) for x, y in zip(o.book.top(10), rb.top(10)))


def test_bookofi_snapshot_pickle_and_errors(rng):
    o = BookOFI(1.0, levels=3, window=5)
    o.load_snapshot([100, 99], [10, 5], [101, 102], [12, 9])
    # first delta after the snapshot is diffed against it: bid 100 10 -> 14 gives +4
    assert o.update(1, 1, 100, 14) == 4.0
    assert o.update(2, -1, 101, 0) == 12.0          # best ask removed: ask up, +qa_prev
    side, px, sz = random_deltas(rng, 300)
    side[px < 1000] = 1
    ts = np.arange(3, 303)
    o2 = BookOFI(1.0, levels=3, window=5, crossed="keep")
    o3 = BookOFI(1.0, levels=3, window=5, crossed="keep")
    o2.update_many(ts[:150], side[:150], px[:150], sz[:150])
    o3.update_many(ts[:150], side[:150], px[:150], sz[:150])
    c = pickle.loads(pickle.dumps(o2))
    a = o2.update_many(ts[150:], side[150:], px[150:], sz[150:], levels=True)
    b = c.update_many(ts[150:], side[150:], px[150:], sz[150:], levels=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert o2.values.tolist() == c.values.tolist()
    # time backwards: error names ts and index, nothing applied for that delta
    with pytest.raises(TimeOrderError) as ei:
        o3.update_many([153, 149], [1, 1], [900, 901], [1, 1])
    assert ei.value.field == "ts" and ei.value.index == 1
    top_before = [x.copy() for x in o3.book.top(5)]
    vals = o3.values.tolist()
    assert o3.book.n_updates == 151 and o3.ofi.n_events == 151
    with pytest.raises(NegativeSizeError) as ei:
        o3.update(200, 1, 900, -1)
    assert ei.value.field == "size"
    with pytest.raises(TimeOrderError):
        o3.update(100, 1, 900, 1)
    assert o3.book.n_updates == 151 and o3.ofi.n_events == 151
    assert all(same(x, y) for x, y in zip(top_before, o3.book.top(5)))
    assert o3.values.tolist() == vals
    assert ofi_fast.BookOFI is BookOFI


@pytest.mark.parametrize("side", [0, 2, 257, -255, 513, -2**31])
def test_bookofi_update_rejects_every_side_but_plus_minus_one(side):
    """update and push run as one row of the batch loop, whose side is a byte: a side that
    would wrap to +-1 there (257, -255) is still an error naming the side, and changes
    nothing."""
    o = BookOFI(1.0, levels=3)
    o.update(0, 1, 100.0, 2.0)
    with pytest.raises(OFIError) as ei:
        o.update(1, side, 99.0, 1.0)
    assert ei.value.field == "side"
    assert o.book.n_updates == 1 and o.ofi.n_events == 1


def test_bookofi_snapshot_keeps_time_order():
    """load_snapshot(ts=...) is an event in time: older than the last event -> TimeOrderError
    (nothing changes) unless allow_older=True (time order restarts at ts); without ts it
    happens at the last event's time; the reference agrees step by step."""
    o = BookOFI(1.0, levels=2, window_time=100, capacity=16)
    r = ref.BookOFI(1.0, levels=2, window_time=100, capacity=16)
    snap = ([100, 99], [10, 5], [101, 102], [12, 9])
    for x in (o, r):
        x.load_snapshot(*snap)                  # no event yet: no time constraint
        x.update(10, 1, 100, 11)
        x.update(12, -1, 101, 10)

    def state():
        return np.nan_to_num(o.book.top(4), nan=-1.0).tolist(), o.values.tolist(), o.ofi.n_events

    before = state()
    with pytest.raises(TimeOrderError) as ei:
        o.load_snapshot(*snap, ts=11)
    assert ei.value.field == "ts" and ei.value.index == 0
    with pytest.raises(ref.RefError):
        r.load_snapshot(*snap, ts=11)
    assert state() == before
    with pytest.raises(NegativeSizeError):      # a bad snapshot does not move the time either
        o.load_snapshot([100], [-1], [101], [1], ts=50)
    assert state() == before
    # no ts: the snapshot is at the last event's time (12)
    for x in (o, r):
        x.load_snapshot(*snap)
    with pytest.raises(TimeOrderError):
        o.update(11, 1, 100, 3)
    assert o.update(12, 1, 100, 3) == r.update(12, 1, 100, 3) == -7.0
    # a newer snapshot moves the time forward
    for x in (o, r):
        x.load_snapshot(*snap, ts=40)
    with pytest.raises(TimeOrderError):
        o.update(39, 1, 100, 3)
    # allow_older: a deliberate resync; the time order restarts at its ts
    for x in (o, r):
        x.load_snapshot(*snap, ts=5, allow_older=True)
    with pytest.raises(TimeOrderError):
        o.update_many([6, 4], [1, 1], [100, 100], [1, 2])
    assert o.ofi.n_events == 1                  # the delta at 6 is applied, 4 is not
    r.update(6, 1, 100, 1)
    assert o.update(7, -1, 101, 1) == r.update(7, -1, 101, 1)
    assert o.values.tolist() == r.values
    c = pickle.loads(pickle.dumps(o))           # the time order survives pickling
    with pytest.raises(TimeOrderError):
        c.update(6, 1, 100, 2)
    o.reset()                                   # reset forgets the time
    o.load_snapshot(*snap, ts=0)
    assert o.update(1, 1, 100, 10) == 0.0


def lobster_step_fast(msg, ob, tick=100.0):
    """The step rule over a whole file, vectorised around one Book: for each message i the
    book is reset to row i-1 (apply_many of its levels), message i is applied at price-level
    granularity (new absolute size = row i-1's size at that price +- the message size), and
    the book's top L is compared with row i on the levels inside row i-1's price range.
    Returns (rows compared, rows that differ)."""
    n, L = len(msg), ob.shape[1] // 4
    ap, az, bp, bs = ob[:, 0::4], ob[:, 1::4], ob[:, 2::4], ob[:, 3::4]
    typ, size, price, direction = msg[:, 1], msg[:, 3], msg[:, 4], msg[:, 5].astype(int)
    # the level's size in row i-1 (0 when that price is not in row i-1)
    prev_px = np.where((direction == 1)[1:, None], bp[:-1], ap[:-1])
    prev_sz = np.where((direction == 1)[1:, None], bs[:-1], az[:-1])
    hit = prev_px == price[1:, None]
    old = (prev_sz * hit).sum(axis=1)
    sign = np.where(typ[1:] == 1, 1.0, -1.0)
    new = np.maximum(old + sign * size[1:], 0.0)
    visible = np.isin(typ[1:], (1, 2, 3, 4))
    book = Book(tick, crossed="keep")
    got = np.empty((n - 1, 4, L))
    sides = np.concatenate([np.ones(L, np.int8), -np.ones(L, np.int8)])
    for i in range(1, n):
        book.reset()
        lv_px = np.concatenate([bp[i - 1], ap[i - 1]])
        lv_sz = np.concatenate([bs[i - 1], az[i - 1]])
        keep = lv_sz > 0
        book.apply_many(sides[keep], lv_px[keep], lv_sz[keep])
        if visible[i - 1]:
            book.apply(int(direction[i]), price[i], new[i - 1])
        got[i - 1] = book.top(L)
    # compare inside row i-1's range: bids >= lowest visible bid, asks <= highest visible ask
    lo_b = np.where(bs[:-1] > 0, bp[:-1], np.inf).min(axis=1)[:, None]
    hi_a = np.where(az[:-1] > 0, ap[:-1], -np.inf).max(axis=1)[:, None]

    def masked(px, sz, inside):
        ok = inside & (sz > 0)
        return np.where(ok, px, np.nan), np.where(ok, sz, 0.0)

    fb = masked(bp[1:], bs[1:], bp[1:] >= lo_b)
    fa = masked(ap[1:], az[1:], ap[1:] <= hi_a)
    gb = masked(got[:, 0], got[:, 1], got[:, 0] >= lo_b)
    ga = masked(got[:, 2], got[:, 3], got[:, 2] <= hi_a)
    same_rows = np.ones(n - 1, bool)
    for f, g in zip(fb + fa, gb + ga):
        same_rows &= ((f == g) | (np.isnan(f) & np.isnan(g))).all(axis=1)
    return n - 1, int((~same_rows).sum())


def test_lobster_step_fast_agrees_with_loop_on_aapl():
    d = "lobster"
    msg, ob = load_lobster(data_file(d, "AAPL_2012-06-21_34200000_57600000_message_10.csv"),
                           data_file(d, "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"))
    assert lobster_step_fast(msg, ob) == (998, 0)


@pytest.mark.parametrize("zip_name, stem", [
    ("LOBSTER_SampleFile_GOOG_2012-06-21_10.zip", "GOOG_2012-06-21_34200000_57600000_{}_10.csv"),
    ("LOBSTER_SampleFile_AMZN_2012-06-21_5.zip", "AMZN_2012-06-21_34200000_57600000_{}_5.csv"),
])
def test_lobster_full_day_step_rule(zip_name, stem, capsys):
    import zipfile
    z = zipfile.ZipFile(data_file("lobster", zip_name))
    with z.open(stem.format("message")) as f:
        msg = np.loadtxt(f, delimiter=",")
    with z.open(stem.format("orderbook")) as f:
        ob = np.loadtxt(f, delimiter=",")
    compared, differ = lobster_step_fast(msg, ob)
    with capsys.disabled():
        print(f"\n{zip_name}: step rule on {compared} messages, {differ} rows differ")
    assert compared == len(msg) - 1 and differ == 0


def test_top_out_2d():
    b = Book(0.5)
    b.apply_many([1, -1, -1], [10, 11, 12.5], [1, 2, 3])
    out = np.zeros((4, 3))
    assert b.top(3, out=out) is out
    assert same(out, [[10, np.nan, np.nan], [1, 0, 0], [11, 12.5, np.nan], [2, 3, 0]])
    with pytest.raises(OFIError):
        b.top(2, out=out)


# ------------------------------------------------------------------ Kraken CRC32
def test_kraken_book_checksums(capsys):
    """Rebuild every Kraken WS v1 book (depth 1000, 10 pairs) from its snapshot and updates
    and verify every CRC32 checksum the feed sends (top 10 asks then top 10 bids, each
    price and volume with the '.' removed and leading zeros stripped, concatenated)."""
    import json
    import zlib
    path = data_file("cryptofeed_sample_data", "KRAKEN.ws.50.0")
    books, decimals = {}, {}

    def fmt(x, d):
        return f"{x:.{d}f}".replace(".", "").lstrip("0")

    def checksum(pair):
        book, (pd_, vd) = books[pair], decimals[pair]
        bp, bs, ap, az = book.top(10)
        s = "".join(fmt(p, pd_) + fmt(q, vd) for p, q in zip(ap, az) if q > 0)
        s += "".join(fmt(p, pd_) + fmt(q, vd) for p, q in zip(bp, bs) if q > 0)
        return zlib.crc32(s.encode()) & 0xFFFFFFFF

    checked = 0
    for line in open(path):
        if line.startswith("wss://") or ": " not in line:
            continue
        msg = json.loads(line.split(": ", 1)[1])
        if not isinstance(msg, list):
            continue
        pair = msg[-1]
        parts = [m for m in msg[1:-2] if isinstance(m, dict)]
        if "as" in parts[0] or "bs" in parts[0]:
            snap = parts[0]
            p0, v0 = snap["as"][0][0], snap["as"][0][1]
            decimals[pair] = (len(p0.split(".")[1]), len(v0.split(".")[1]))
            book = Book(10.0 ** -decimals[pair][0], crossed="keep")
            book.load_snapshot([float(x[0]) for x in snap["bs"]], [float(x[1]) for x in snap["bs"]],
                               [float(x[0]) for x in snap["as"]], [float(x[1]) for x in snap["as"]])
            books[pair] = book
            continue
        book = books[pair]
        crc = None
        for part in parts:
            for key, side in (("a", -1), ("b", 1)):
                for lv in part.get(key, []):
                    book.apply(side, float(lv[0]), float(lv[1]))
            crc = part.get("c", crc)
        if crc is not None:
            assert checksum(pair) == int(crc), (pair, checked)
            checked += 1
    with capsys.disabled():
        print(f"\nKraken: {checked} CRC32 checksums verified over {len(books)} books")
    assert checked == 4269 and len(books) == 10


ROW_LOOPS = ["baseline", "x86-64-v3"]


@contextlib.contextmanager
def row_loops(name):
    """Run Book.apply_many's and BookOFI.update_many's C row loops of build `name` inside the
    `with` (skip where the CPU or the build has no x86-64-v3 loops)."""
    try:
        old = _book_mod._row_loops(name)
    except OFIError:
        pytest.skip(f"no {name} row loops here")
    try:
        yield
    finally:
        _book_mod._row_loops(old)


def _bookofi_state(o):
    """Everything a BookOFI exposes: book levels and counters, the MultiLevelOFI's state
    (m.prev's prices and sizes, e, sums) as its pickle carries it."""
    st = o.ofi.__reduce__()
    return ([a.tolist() for a in o.book.levels(1) + o.book.levels(-1)], o.n_crossed,
            o.n_locked, o.n_missing,
            o.book.n_updates, o.ofi.n_events, repr(st[2] if len(st) > 2 else st[1]))


def _run_bookofi(o, chunks, **kw):
    """update_many over the chunks; each chunk's (e, lv) or its error (type, message)."""
    out = []
    for ts, side, px, sz in chunks:
        try:
            out.append(o.update_many(ts, side, px, sz, levels=True, **kw))
        except OFIError as exc:
            out.append((type(exc), str(exc)))
    return out


@pytest.mark.parametrize("loops", ROW_LOOPS)
@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.booleans(), st.booleans())
def test_bookofi_c_loop_matches_the_general_rows(loops, seed, L, strict, with_ts):
    """Without a window or batch_end and under policy keep, BookOFI.rows sends the rows
    through one C loop (bookofi_keep_rows), the rows it declines through the general loop
    (_rows). Against the general loop alone (forced by batch_end all True), and against the
    windowed path (a count window longer than the stream, whose sums are the stream's): the
    same e and per-level e, the same errors at the same rows, the same state after every
    chunk (m.prev's prices, rebuilt from the cached keys, included), bit for bit."""
    rng = np.random.default_rng(seed)
    side, px, sz = touch_heavy_deltas(rng, 900)
    ts = np.cumsum(rng.integers(0, 3, len(px))).astype(np.int64)
    bad = rng.integers(1, len(px), 2)
    if strict:
        sz[bad[0]] = -1.0                    # a bad size: the error names field and row
    ts[bad[1]:] -= 5                         # time goes backwards at bad[1]
    chunks = [(ts[a:b] if with_ts else None, side[a:b], px[a:b], sz[a:b])
              for a, b in ((0, 1), (1, 300), (300, 301), (301, 900))]
    c_loop = BookOFI(1.0, levels=L, strict=strict)
    general = BookOFI(1.0, levels=L, strict=strict)
    windowed = BookOFI(1.0, levels=L, strict=strict, window=1000)
    with row_loops(loops):
        got = _run_bookofi(c_loop, chunks)
    want = []
    for ts_, s_, p_, z_ in chunks:
        want += _run_bookofi(general, [(ts_, s_, p_, z_)], batch_end=np.ones(len(p_), bool))
    assert _bookofi_state(c_loop) == _bookofi_state(general)
    wide = _run_bookofi(windowed, chunks)
    for g, w, v in zip(got, want, wide):
        assert type(g) is type(w) is type(v)
        if isinstance(g[0], np.ndarray):
            assert g[0].tobytes() == w[0].tobytes() == v[0].tobytes()
            assert g[1].tobytes() == w[1].tobytes() == v[1].tobytes()
        else:
            assert g == w == v
    assert c_loop.values.tobytes() == general.values.tobytes() == windowed.values.tobytes()
    assert c_loop.ofi.depth == windowed.ofi.depth
    if with_ts:
        assert any(not isinstance(g[0], np.ndarray) for g in got)    # an error was hit


def _sizes_of_kind(rng, sz, kind):
    """Sizes for the whole-size rows: as drawn (whole), or with some that are not whole
    (fractions here and there, a burst of them, or whole but at and past 2**31)."""
    sz = sz.copy()
    on = sz > 0
    if kind == "fractions":
        sz[on & (rng.random(len(sz)) < 0.02)] += 0.25
    elif kind == "burst":
        a = int(rng.integers(0, len(sz) // 2))
        sz[a:a + len(sz) // 5] *= 0.37
    elif kind == "large":
        m = on & (rng.random(len(sz)) < 0.02)
        sz[m] = rng.choice(np.array([2.0**31 - 1, 2.0**31, 2.0**31 + 1, 2.0**40]), m.sum())
    return sz


def _bookofi_runs_agree(got, want, a, b):
    """Two BookOFI runs (the e each chunk returned, then the objects a and b) agree bit for
    bit: e per chunk, the state (sums and compensations included), values, depth, last e."""
    assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
    assert _bookofi_state(a) == _bookofi_state(b)
    assert a.values.tobytes() == b.values.tobytes()
    assert a.ofi.depth == b.ofi.depth
    assert a.ofi.last.tobytes() == b.ofi.last.tobytes()


@pytest.mark.parametrize("loops", ROW_LOOPS)
@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12),
       st.sampled_from(["whole", "fractions", "burst", "large"]), st.booleans(),
       st.sampled_from([1.0, 0.01]))
def test_bookofi_whole_size_rows_match_the_general_rows(loops, seed, L, kind, with_ts, tick):
    """Without levels=True, the C loop takes rows whose sizes are whole numbers below 2**31
    by adding their e straight into the sums (plain adds, exact there) and keeping the depth
    by its difference (bookofi_step_whole), until a size that is not whole enters the top L.
    Against the general rows (batch_end all True): the same e, sums, compensations, depth,
    last e and book, bit for bit, on whole sizes and on streams where sizes that are not
    whole come and go (prices on a whole and on a fractional tick)."""
    rng = np.random.default_rng(seed)
    side, px, sz = touch_heavy_deltas(rng, 1500)
    px = px * tick
    sz = _sizes_of_kind(rng, sz, kind)
    ts = np.cumsum(rng.integers(0, 3, len(px))).astype(np.int64)
    cuts = ((0, 1), (1, 700), (700, 701), (701, 1500))
    c_loop, general = BookOFI(tick, levels=L), BookOFI(tick, levels=L)
    with row_loops(loops):
        got = [c_loop.update_many(ts[a:b] if with_ts else None, side[a:b], px[a:b], sz[a:b])
               for a, b in cuts]
    want = [general.update_many(ts[a:b] if with_ts else None, side[a:b], px[a:b], sz[a:b],
                                batch_end=np.ones(b - a, bool)) for a, b in cuts]
    _bookofi_runs_agree(got, want, c_loop, general)


@pytest.mark.parametrize("loops", ROW_LOOPS)
def test_bookofi_whole_size_rows_end_where_a_delete_brings_in_a_fraction(loops):
    """Whole-size rows end at a delete that brings a size that is not whole into the top L
    from below it (the rows' own sizes are all whole here). Sums near 2**40 so that adding
    a fraction rounds: the same bits as the general rows, and the compensations show the
    rounding."""
    px = np.concatenate([999.0 - np.arange(8), 1001.0 + np.arange(8)])
    side = np.repeat(np.array([1, -1], np.int8), 8)
    sz = np.array([5.0, 6.0, 7.0, 0.1, 0.2, 0.3, 0.7, 0.9] * 2)
    # delete the bests one by one (0.1 .. comes in at rank 3), set the newcomers whole again
    d_side = np.array([1, -1, 1, -1, 1, 1, -1, -1] * 3, np.int8)
    d_px = np.array([999, 1001, 998, 1002, 996, 995, 1004, 1005] * 3, np.float64)
    d_sz = np.array([0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 3.0, 4.0] * 3)
    c_loop, general = BookOFI(1.0, levels=3), BookOFI(1.0, levels=3)
    for o in (c_loop, general):
        o.update_many(None, side, px, sz, batch_end=np.ones(len(px), bool))
        state = o.ofi.__reduce__()[2]
        state["sum"] = [2.0**40 + 1] * len(state["sum"])
        o.ofi.__setstate__(state)
    with row_loops(loops):
        got = [c_loop.update_many(None, d_side, d_px, d_sz)]
    want = [general.update_many(None, d_side, d_px, d_sz, batch_end=np.ones(len(d_px), bool))]
    _bookofi_runs_agree(got, want, c_loop, general)
    assert any(c != 0.0 for c in general.ofi.__reduce__()[2]["comp"])


@pytest.mark.parametrize("loops", ROW_LOOPS)
@pytest.mark.parametrize("start, n", [(2.0**53 - 2.0**40, 3000), (2.0**52 - 2.0**40, 3000),
                                      (2.0**52 - 2.0**30, 140_000)])
def test_bookofi_whole_size_rows_stop_before_the_sums_round(loops, start, n):
    """The plain adds of whole-size rows are exact only while every sum stays within 2**53.
    Ten levels a side, then n size changes among them, sizes just below 2**31 (so the depth
    sum grows by about 2**35 a row), with the sums started near 2**52 or 2**53 through the
    pickled state. The C loop must leave the plain adds where a sum reaches 2**52 (checked
    at the start of each block of rows: in the third case the sums enter below 2**52 and
    pass 2**53 within one call, without a row that leaves the loop): the same bits as the
    general rows, whose compensations show that their adds did round."""
    rng = np.random.default_rng(11)
    lv_side = np.repeat(np.array([1, -1], np.int8), 10)
    lv_px = np.concatenate([999.0 - np.arange(10), 1001.0 + np.arange(10)])
    pick = rng.integers(0, 20, n)
    side = np.concatenate([lv_side, lv_side[pick]])
    px = np.concatenate([lv_px, lv_px[pick]])
    sz = 2.0**31 - 1 - rng.integers(0, 50, len(px)).astype(np.float64)
    c_loop, general = BookOFI(1.0, levels=10), BookOFI(1.0, levels=10)
    for o in (c_loop, general):
        o.update_many(None, side[:20], px[:20], sz[:20], batch_end=np.ones(20, bool))
        state = o.ofi.__reduce__()[2]
        state["sum"] = [start] * len(state["sum"])
        o.ofi.__setstate__(state)
    with row_loops(loops):
        got = [c_loop.update_many(None, side[20:], px[20:], sz[20:])]
    want = [general.update_many(None, side[20:], px[20:], sz[20:], batch_end=np.ones(n, bool))]
    _bookofi_runs_agree(got, want, c_loop, general)
    if start + n * 2.0**35 > 2.0**53:
        assert any(c != 0.0 for c in general.ofi.__reduce__()[2]["comp"])


@pytest.mark.parametrize("loops", ROW_LOOPS)
@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.booleans(), st.booleans(),
       st.sampled_from(["keep", "raise"]), st.sampled_from([0.05, 0.3, 0.9]))
def test_bookofi_message_rows_match_the_general_rows(loops, seed, L, strict, with_ts, crossed,
                                                     p_end):
    """With batch_end and no time window, BookOFI.rows sends the runs of rows inside a
    message through one C loop (bookofi_inside_rows: the book only), every other row through
    the general loop (_rows). Against the general loop alone (forced by a time window longer
    than the stream, whose sums are the stream's), with and without a count window: the same
    e and per-level e, the same errors at the same rows (a bad size under strict, time going
    backwards inside a message, crossings under "raise"), the same state after every chunk,
    bit for bit."""
    rng = np.random.default_rng(seed)
    side, px, sz = touch_heavy_deltas(rng, 900)
    end = rng.random(len(px)) < p_end
    ts = np.cumsum(rng.integers(0, 3, len(px))).astype(np.int64)
    bad = rng.integers(1, len(px), 2)
    if strict:
        sz[bad[0]] = -1.0
    ts[bad[1]:] -= 10**6                     # older than any event before it
    cuts = ((0, 1), (1, 300), (300, 301), (301, 900))
    # the general twin needs ts for its window: zeros where the others get none (no check)
    ts_general = ts if with_ts else np.zeros(len(px), np.int64)
    kw = dict(levels=L, strict=strict, crossed=crossed)

    def run(o, ts_):
        out = []
        for a, b in cuts:
            out += _run_bookofi(o, [(None if ts_ is None else ts_[a:b], side[a:b], px[a:b],
                                     sz[a:b])], batch_end=end[a:b])
        return out

    message = BookOFI(1.0, **kw)
    counted = BookOFI(1.0, window=1000, **kw)
    general = BookOFI(1.0, window_time=10**12, grow=True, **kw)
    with row_loops(loops):
        got = run(message, ts if with_ts else None)
        got_w = run(counted, ts if with_ts else None)
    want = run(general, ts_general)
    for g, c, w in zip(got, got_w, want):
        assert type(g) is type(c) is type(w)
        if isinstance(g[0], np.ndarray):
            assert g[0].tobytes() == c[0].tobytes() == w[0].tobytes()
            assert g[1].tobytes() == c[1].tobytes() == w[1].tobytes()
        else:
            assert g == c == w
    assert _bookofi_state(message)[:6] == _bookofi_state(general)[:6]
    assert message.values.tobytes() == counted.values.tobytes() == general.values.tobytes()
    assert message.ofi.n_events == general.ofi.n_events
    if general.ofi.n_events:
        assert message.ofi.depth == general.ofi.depth
    if with_ts and end[:bad[1]].any():
        assert any(not isinstance(g[0], np.ndarray) for g in got)    # an error was hit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_loop_builds_give_the_same_bits(seed):
    """The x86-64-v3 build of the C row loops (AVX2 + BMI, taken where the CPU has them:
    _book_row.h, OFI_V3_DISPATCH) against the baseline (SSE2) build: Book.apply_many with and
    without batch_end, strict or not, and BookOFI.update_many at 1, 3 and 10 levels with and
    without ts, on 20,000 touch-heavy deltas with missing deletes, crossings and a bad size:
    the same per-row e and per-level e, errors at the same row, the same book and sums, bit
    for bit."""
    rng = np.random.default_rng(seed)
    side, px, sz = touch_heavy_deltas(rng, 20_000)
    ok = Book(1.0)                         # strict: the stream without its missing deletes
    keep = np.ones(len(px), bool)
    for i in range(len(px)):
        m = ok.n_missing
        ok.apply(int(side[i]), px[i], sz[i])
        keep[i] = ok.n_missing == m
    streams = {False: (side, px, sz.copy()), True: (side[keep], px[keep], sz[keep])}
    assert len(streams[True][1]) < len(px) - 500
    for _, _, z in streams.values():
        z[15_000] = -1.0                   # NegativeSizeError at that row
    end = rng.random(len(px)) < 0.3
    ts = np.cumsum(rng.integers(0, 3, len(px))).astype(np.int64)

    def run():
        out = []
        for strict in (False, True):
            side, px, bad = streams[strict]
            for be in (None, end[:len(px)]):
                b = Book(1.0, strict=strict)
                try:
                    out.append(b.apply_many(side, px, bad, batch_end=be))
                except OFIError as exc:
                    out.append((type(exc), str(exc)))
                out.append(([a.tobytes() for a in b.levels(1) + b.levels(-1)],
                            b.n_updates, b.n_crossed, b.n_locked, b.n_missing))
            for L in (1, 3, 10):
                for with_ts in (False, True):
                    o = BookOFI(1.0, levels=L, strict=strict)
                    chunks = [(ts[a:c] if with_ts else None, side[a:c], px[a:c], bad[a:c])
                              for a, c in ((0, 7000), (7000, len(px)))]
                    got = _run_bookofi(o, chunks)
                    out.append([tuple(x.tobytes() for x in g) if isinstance(g[0], np.ndarray)
                                else g for g in got])
                    out.append((_bookofi_state(o), o.values.tobytes(), o.ofi.depth))
        return out

    with row_loops("baseline"):
        assert _book_mod._row_loops() == "baseline"
        base = run()
    with row_loops("x86-64-v3"):
        assert _book_mod._row_loops() == "x86-64-v3"
        v3 = run()
    assert len(base) == len(v3) == 2 * (2 * 2 + 3 * 2 * 2)
    assert [x for x in base if isinstance(x, tuple) and len(x) == 2] == \
        [(NegativeSizeError, "size[15000] is negative")] * 4          # every Book run
    assert sum(g == (NegativeSizeError, "size[8000] is negative")     # every BookOFI run
               for x in base if isinstance(x, list) for g in x) == 2 * 3 * 2
    for x, y in zip(base, v3):
        assert x == y


def test_row_loops_switch_names_what_it_takes():
    """_row_loops (tests, benchmarks): the name of the build that runs; an unknown name is an
    OFIError on field `name`, and the build does not change."""
    before = _book_mod._row_loops()
    assert before in ROW_LOOPS
    with pytest.raises(OFIError, match="'avx512'") as ei:
        _book_mod._row_loops("avx512")
    assert ei.value.field == "name" and _book_mod._row_loops() == before
    assert _book_mod._row_loops("baseline") == before
    assert _book_mod._row_loops() == "baseline"
    _book_mod._row_loops(before)


@given(delta_streams(), st.integers(1, 4),
       st.sampled_from([{}, {"window": 3}, {"window_time": 4, "capacity": 64}]))
def test_bookofi_matches_reference_bookofi(stream, L, kw):
    side, px, sz = stream
    ts = np.arange(len(px))
    o = BookOFI(1.0, levels=L, crossed="keep", **kw)
    r = ref.BookOFI(1.0, levels=L, crossed="keep", **kw)
    o.load_snapshot([900], [5], [1100], [7])
    r.load_snapshot([900], [5], [1100], [7])
    e, lv = o.update_many(ts, side, px, sz, levels=True)
    re1, rlv = r.update_many(ts.tolist(), side.tolist(), px.tolist(), sz.tolist(), levels=True)
    assert e.tolist() == re1 and lv.tolist() == rlv
    assert o.values.tolist() == r.values
    assert o.ofi.depth == pytest.approx(r.ofi.depth, rel=1e-15)


# ------------------------------------------------------------------ Binance diff streams
def _binance_check(path, futures):
    """Sync the diff-depth stream onto the REST snapshot by the exchange's rule (buffering the
    diffs received before it), apply every diff, and compare the book's best bid/ask with
    each bookTicker whose update id equals a diff's final update id."""
    import gzip
    import json
    diffs, tickers, snap = [], {}, None
    with gzip.open(path, "rt") as f:
        for line in f:
            _, raw = line.split(" ", 1)
            msg = json.loads(raw)
            if "lastUpdateId" in msg:
                snap = msg
                continue
            stream, data = msg.get("stream", ""), msg.get("data", msg)
            if "@depth" in stream:
                diffs.append(data)
            elif "bookTicker" in stream:
                tickers.setdefault(data["u"], data)
    assert snap is not None
    last = snap["lastUpdateId"]
    book = Book(0.01, crossed="keep")
    book.load_snapshot([float(p) for p, _ in snap["bids"]], [float(q) for _, q in snap["bids"]],
                       [float(p) for p, _ in snap["asks"]], [float(q) for _, q in snap["asks"]])
    if futures:
        live = [d for d in diffs if d["u"] >= last]
        assert live[0]["U"] <= last <= live[0]["u"]
    else:
        live = [d for d in diffs if d["u"] > last]
        assert live[0]["U"] <= last + 1 <= live[0]["u"]
    checked = crossed = 0
    prev_u = None
    quotes = [(book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size)]
    rows = []      # (ts, side, price, size, batch_end) for BookOFI
    snapshot = snap
    for d in live:
        if prev_u is not None:
            assert (d["pu"] == prev_u) if futures else (d["U"] == prev_u + 1)
        prev_u = d["u"]
        levels = [(side, float(p), float(q)) for key, side in (("b", 1), ("a", -1))
                  for p, q in d[key]]
        for k, (side, p, q) in enumerate(levels):
            book.apply(side, p, q)
            rows.append((d["E"], side, p, q, k == len(levels) - 1))
        if levels:
            quotes.append((book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size))
        crossed += book.best_bid >= book.best_ask
        t = tickers.get(d["u"])
        if t is not None:
            assert (book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size) == \
                (float(t["b"]), float(t["B"]), float(t["a"]), float(t["A"])), d["u"]
            checked += 1
    # BookOFI fed the same deltas, one OFI event per diff message (batch_end), equals the
    # best-level OFI of the book's best quotes after each message
    o = BookOFI(0.01, levels=1, crossed="keep")
    bids, asks = snapshot["bids"], snapshot["asks"]
    o.load_snapshot([float(p) for p, _ in bids], [float(q) for _, q in bids],
                    [float(p) for p, _ in asks], [float(q) for _, q in asks])
    ts, side, price, size, end = (np.array(c) for c in zip(*rows))
    e = o.update_many(ts, side, price, size, batch_end=end)
    q = np.array(quotes)
    expect = l1_ofi(q[:, 0], q[:, 1], q[:, 2], q[:, 3])[1:]
    assert np.array_equal(e[end], expect) and not e[~end].any()
    return len(live), checked, crossed


@pytest.mark.parametrize("market, futures", [("spot", False), ("usdm", True)])
def test_binance_diff_stream_matches_book_ticker(market, futures, capsys):
    path = data_file("binance_hftbacktest", market, "btcusdt_20240808.gz")
    applied, checked, crossed = _binance_check(path, futures)
    with capsys.disabled():
        print(f"\nBinance {market}: {applied} diffs applied, best bid/ask equal to bookTicker "
              f"at all {checked} matching update ids; crossed after a diff: {crossed}")
    assert checked > 0 and crossed == 0


@given(delta_streams(), st.integers(1, 4), st.integers(0, 2**32 - 1), st.integers(1, 25))
def test_bookofi_batches(stream, L, seed, chunk):
    """batch_end: one OFI event per batch, between the states after consecutive batches
    (== mlofi over the batch-end top-L states); batches may span update_many calls."""
    side, px, sz = stream
    n = len(px)
    rng = np.random.default_rng(seed)
    end = rng.random(n) < 0.4
    end[-1] = True
    ts = np.arange(n) // 3
    rb = ref.Book(1.0, crossed="keep")
    states = []
    for i in range(n):
        rb.apply(int(side[i]), px[i], sz[i], batch_end=bool(end[i]))
        if end[i]:
            states.append(rb.top(L))
    bp, bs, ap, az = (np.array([t[k] for t in states]).reshape(len(states), L)
                      for k in range(4))
    expect = mlofi(bp, bs, ap, az)
    o = BookOFI(1.0, levels=L, crossed="keep", window=7)
    got = []
    for s0 in range(0, n, chunk):
        sl = slice(s0, s0 + chunk)
        got.append(o.update_many(ts[sl], side[sl], px[sl], sz[sl], levels=True,
                                 batch_end=end[sl])[1])
    got = np.concatenate(got)
    assert np.array_equal(got[end], expect) and not got[~end].any()
    assert o.ofi.n_events == end.sum()
    r = ref.BookOFI(1.0, levels=L, crossed="keep", window=7)
    _, rlv = r.update_many(ts.tolist(), side.tolist(), px.tolist(), sz.tolist(), levels=True,
                           batch_end=end.tolist())
    assert got.tolist() == rlv and o.values.tolist() == r.values
    assert o.ofi.depth == pytest.approx(r.ofi.depth, rel=1e-15)


def test_memory_follows_live_levels_not_price_range(rng):
    """Prices spread over +-1e9 ticks, each deleted right after: the level arrays never grow
    (a dense tick array would need ~2e9 slots or re-centering)."""
    b = Book(1.0, capacity=4)
    b.load_snapshot([1_000_000_000], [1], [1_000_000_001], [1])
    cap0 = b.capacity
    assert max(cap0) <= 64
    far = rng.integers(1, 999_999_999, 5000).astype(float)
    for p in far:
        b.apply(1, p, 3.0)
        b.apply(-1, 2e9 + 2 - p, 4.0)
        assert b.best_bid == 1_000_000_000 and b.best_ask == 1_000_000_001
        b.apply(1, p, 0.0)
        b.apply(-1, 2e9 + 2 - p, 0.0)
    assert b.capacity == cap0 and b.bid_levels == b.ask_levels == 1


# ------------------------------------------------------------------ messages on real feeds
def _binance_depth(market):
    from ofi_fast.feeds import FLAG_BATCH_END, FLAG_SNAPSHOT, read_binance
    d = read_binance(data_file("binance_hftbacktest", market, "btcusdt_20240808.gz")).depth
    snap = (d.flags & FLAG_SNAPSHOT) != 0
    first = int(np.flatnonzero(~snap)[0])
    assert not snap[first:].any()          # one snapshot, then the diffs
    be = (d.flags & FLAG_BATCH_END) != 0
    bid, ask = snap & (d.side == 1), snap & (d.side == -1)
    snapshot = (d.price[bid], d.size[bid], d.price[ask], d.size[ask])
    return snapshot, d.side[first:], d.price[first:], d.size[first:], be[first:]


@pytest.mark.parametrize("market, row", [("usdm", 2326), ("spot", 1557)])
def test_binance_raw_diffs_replay_when_judged_at_message_ends(market, row):
    """Issue 12 item 4: judged per row, the raw diff stream 'crosses' at the row where a
    message's new bids sit above asks its later rows delete; judged at message ends (the
    reader's FLAG_BATCH_END) it replays under every policy, and no message ends crossed."""
    snapshot, side, px, sz, end = _binance_depth(market)
    per_row = Book(0.01, crossed="raise")
    per_row.load_snapshot(*snapshot)
    with pytest.raises(CrossedBookError) as ei:
        per_row.apply_many(side, px, sz)
    assert ei.value.index == row and not end[row]     # inside a message, not at its end
    books = {}
    for policy in ("raise", "keep"):
        b = Book(0.01, crossed=policy)
        b.load_snapshot(*snapshot)
        assert b.apply_many(side, px, sz, batch_end=end) == len(px)
        assert (b.n_crossed, b.n_locked) == (0, 0)
        books[policy] = b
    default = Book(0.01)
    default.load_snapshot(*snapshot)
    default.apply_many(side, px, sz, batch_end=end)
    for b in books.values():
        for side_ in (1, -1):
            k0, z0 = default.levels(side_)
            k1, z1 = b.levels(side_)
            assert np.array_equal(k0, k1) and np.array_equal(z0, z1)
    # the reference, message by message, agrees level for level
    rb = ref.Book(0.01)
    rb.load_snapshot(*(a.tolist() for a in snapshot))
    rb.apply_many(side.tolist(), px.tolist(), sz.tolist(), batch_end=end.tolist())
    assert [t for t, _ in rb.levels(1)] == default.levels(1)[0].tolist()
    assert [q for _, q in rb.levels(-1)] == default.levels(-1)[1].tolist()
    assert (rb.n_crossed, rb.n_locked, rb.n_missing) == \
        (default.n_crossed, default.n_locked, default.n_missing)


def test_bitstamp_l3_keeps_the_ask_side_under_the_default():
    """Issue 12 item 4: on the Bitstamp L3 capture a marketable bid (order 2002347659919360,
    79116.0, orders line 6843) shows for one message before its fills. The removed drop_stale
    policy took such a taker as the truth and deleted the ask levels the feed still showed
    (the mid jumped by +-$400 and back); the default keeps every level the feed shows (the
    book equals the reference's at message ends) and counts the crossed states instead. At
    the message ends where the book is not crossed, its mid moves by at most $7 from one to
    the next (drop_stale's deletions made it jump by up to $399 there)."""
    from ofi_fast.feeds import FLAG_BATCH_END, read_bitstamp_l3
    d = read_bitstamp_l3(data_file("bitstamp_ob_analytics", "orders.csv.gz"))
    end = (d.flags & FLAG_BATCH_END) != 0
    n = int(np.flatnonzero(end)[20_000]) + 1        # 20,000 messages (the ghost bid included)
    side, px, sz, end = d.side[:n], d.price[:n], d.size[:n], end[:n]
    keep = Book(0.01)
    rb = ref.Book(0.01)
    cuts = np.flatnonzero(end) + 1
    mids = np.empty(len(cuts))
    crossed = np.empty(len(cuts), bool)
    a = 0
    for k, b_ in enumerate(cuts.tolist()):
        sl = slice(a, b_)
        keep.apply_many(side[sl], px[sl], sz[sl], batch_end=end[sl])
        rb.apply_many(side[sl].tolist(), px[sl].tolist(), sz[sl].tolist(),
                      batch_end=end[sl].tolist())
        if k % 97 == 0 or k == len(cuts) - 1:
            assert_same_book(keep, rb, n=5)
        assert (keep.bid_levels, keep.ask_levels) == (len(rb.bids), len(rb.asks))
        mids[k] = keep.mid
        crossed[k] = keep.best_bid >= keep.best_ask
        a = b_
    assert keep.ask_levels == len(rb.asks) > 2000 and keep.bid_levels == len(rb.bids)
    assert keep.n_crossed == rb.n_crossed > 0 and keep.n_locked == rb.n_locked
    jumps = np.abs(np.diff(mids[np.isfinite(mids) & ~crossed]))
    assert crossed.sum() == keep.n_crossed + keep.n_locked
    assert jumps.max() <= 7.0, jumps.max()
    with pytest.raises(ValueError, match="drop_stale"):
        Book(0.01, crossed="drop_stale")


# ------------------------------------------------------------------ issue 14: sizes, work, threads
@pytest.mark.parametrize("cap, exc", [(2**61, ValueError), (2**62, ValueError),
                                      (2**44, MemoryError), (0, OFIError), (-5, OFIError),
                                      (2.5, OFIError), ("10", OFIError), (True, OFIError)])
def test_capacity_checked_before_allocation(cap, exc):
    with pytest.raises(exc) as ei:
        Book(0.01, capacity=cap)
    assert "capacity" in str(ei.value)


def test_integer_arguments_must_be_integers():
    b = Book(1.0)
    b.apply_many([1, -1], [10, 11], [1, 2])
    for bad in (2.0, "3", None, 1.5):
        with pytest.raises(OFIError) as ei:
            b.imbalance(bad)
        assert ei.value.field == "levels"
        with pytest.raises(OFIError) as ei:
            b.top(bad)
        assert ei.value.field == "n"
    assert b.imbalance(np.int64(1)) == b.imbalance(1) == (1 - 2) / 3
    assert b.top(np.int32(2)).shape == (4, 2)


def test_imbalance_levels_capped_at_the_depth():
    """imbalance(levels=2**62) sums the levels that exist (it looped 2**62 times)."""
    b = Book(1.0)
    b.apply_many([1, 1, -1, -1, -1], [10, 9, 11, 12, 13], [1, 2, 3, 4, 5])
    for decay in (1.0, 0.5):
        assert b.imbalance(2**62, decay) == b.imbalance(3, decay) == \
            pytest.approx(ref.Book.imbalance(_ref_of(b), 3, decay), rel=1e-15)
    assert Book(1.0).imbalance(2**62) == 0.0


def _ref_of(b):
    r = ref.Book(b.tick_size)
    for side in (1, -1):
        k, z = b.levels(side)
        for t, q in zip(k.tolist(), z.tolist()):
            r.apply(side, float(t) * b.tick_size, q)
    return r


@pytest.mark.parametrize("order", ["deeper", "better", "alternate"])
def test_million_levels_inserted_at_either_end(order):
    """Issue 14: 1,000,000 levels each deeper than all others took 114 s (every insert moved
    the whole side). Inserts at an end now move O(1) levels amortised; the book is exact."""
    n = 1_000_000
    i = np.arange(n, dtype=np.float64)
    if order == "deeper":
        px = 2e6 - i                       # bids, each below all others
    elif order == "better":
        px = 1.0 + i                       # bids, each above all others
    else:
        px = np.where(np.arange(n) % 2 == 0, 1e6 + i // 2, 1e6 - 1 - i // 2)
    b = Book(1.0, capacity=1)
    b.apply_many(np.ones(n, np.int8), px, np.full(n, 2.0))
    k, z = b.levels(1)
    assert b.bid_levels == n and np.array_equal(k, np.sort(px)[::-1].astype(np.int64))
    assert (z == 2.0).all() and b.best_bid == px.max()
    # and deleting them again from the far end
    b.apply_many(np.ones(n // 2, np.int8), np.sort(px)[: n // 2], np.zeros(n // 2))
    assert b.bid_levels == n - n // 2 and b.levels(1)[0][-1] == int(np.sort(px)[n // 2])


def test_two_threads_hammering_one_book_and_bookofi():
    """Issue 14: one object used from two threads (apply_many releases the GIL) double-freed.
    Calls now serialise: every batch is applied whole, so N batches of one stream in any
    interleaving equal N serial batches; readers in a third thread see no torn state."""
    import threading
    rng = np.random.default_rng(5)
    side, px, sz = random_deltas(rng, 20_000, far=0.2)
    rounds = 20
    book, bo = Book(1.0), BookOFI(1.0, levels=5)
    errors = []
    stop = threading.Event()

    def writer():
        try:
            for _ in range(rounds):
                book.apply_many(side, px, sz)
                bo.update_many(None, side, px, sz)
                book.apply(1, 5.0, 1.0)
                book.apply(1, 5.0, 0.0)
        except Exception as exc:      # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        try:
            while not stop.is_set():
                book.top(10)
                book.imbalance(5)
                bo.values
                pickle.dumps(book)
        except Exception as exc:      # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not errors
    serial, sbo = Book(1.0), BookOFI(1.0, levels=5)
    for _ in range(2 * rounds):
        serial.apply_many(side, px, sz)
        sbo.update_many(None, side, px, sz)
    assert book.n_updates == serial.n_updates + 4 * rounds
    for s_ in (1, -1):
        assert all(np.array_equal(x, y) for x, y in zip(book.levels(s_), serial.levels(s_)))
    assert bo.values.tolist() == sbo.values.tolist()


# ------------------------------------------------------------------ the tick ladder (issue 13.4)


@contextlib.contextmanager
def small_ladder(w=64, grows=False):
    """Books made inside get a w-slot ladder, so that ordinary streams recentre it all the
    time (results must not depend on the ladder size); inserts widen it only with grows=True
    (side_grow; a snapshot still sizes it)."""
    old = _book_mod._set_ladder_slots(w, grows)
    try:
        yield w
    finally:
        _book_mod._set_ladder_slots(*old)


def roaming_deltas(rng, n, jump=400, p_jump=0.03, spread_ticks=30):
    """Deltas around a touch that random-walks and sometimes jumps by up to +-`jump` ticks
    (further than a small ladder's window): sets near the touch and deep, deletions of the
    current best (so the best falls level by level), of random levels and of missing ones:
    every recentring case (up, down, an emptied ladder, a best taken from the far array)."""
    step = rng.integers(-2, 3, n) + np.where(rng.random(n) < p_jump,
                                             rng.integers(-jump, jump + 1, n), 0)
    mid = 100_000 + np.cumsum(step)
    side = rng.choice([1, -1], n).astype(np.int8)
    off = rng.integers(0, spread_ticks, n)
    deep = rng.random(n) < 0.15
    off[deep] = rng.integers(spread_ticks, 3 * jump, deep.sum())
    px = np.where(side == 1, mid - 1 - off, mid + 1 + off).astype(np.float64)
    sz = rng.integers(1, 40, n).astype(np.float64)
    u = rng.random(n)
    live = {1: set(), -1: set()}
    for i in range(n):
        lv = live[int(side[i])]
        if u[i] < 0.25 and lv:                 # delete the best
            px[i] = max(lv) if side[i] == 1 else min(lv)
            sz[i] = 0.0
        elif u[i] < 0.35:                      # delete at a random price (may be missing)
            sz[i] = 0.0
        if sz[i] == 0.0:
            lv.discard(px[i])
        else:
            lv.add(px[i])
    return side, px, sz


@settings(max_examples=30)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["keep", "raise"]), st.booleans(),
       st.sampled_from([1.0, 0.01]))
@example(0, "keep", False, 1.0).via("a seed whose touch roams: its windows must move")
@example(1039, "raise", False, 1.0).via("a seed whose touch stays within one window")
def test_ladder_recentring_matches_reference(seed, policy, strict, tick):
    """A 64-slot ladder on a touch that roams hundreds of ticks: apply == reference after
    every event (top 12, best, mid, counters, errors), apply_many in chunks == apply, and the
    full level lists agree at the end."""
    rng = np.random.default_rng(seed)
    side, px, sz = roaming_deltas(rng, 400)
    px = px * tick
    with small_ladder():
        b = Book(tick, crossed=policy, strict=strict, capacity=2)
        c = Book(tick, crossed=policy, capacity=2)
    assert b._ladder[0] == 64
    rb = ref.Book(tick, crossed=policy, strict=strict)
    los = {1: set(), -1: set()}                # each side's window while it holds levels
    bests = {1: [], -1: []}                    # and its best, in ticks
    for i in range(len(px)):
        apply_as_reference(b, rb, side, px, sz, i)
        assert_same_book(b, rb, 12)
        for s_, best, lo in ((1, b.best_bid, b._ladder[1]), (-1, b.best_ask, b._ladder[2])):
            if best == best:                   # (NaN: the side is empty)
                los[s_].add(lo)
                bests[s_].append(round(best / tick))
    # the windows did move: a side whose best roamed over more than the 64-slot window has had
    # more than one window (seed 1039 "raise" stays within one: a fixed count over all seeds,
    # ">= 3 windows", failed on it)
    for s_ in (1, -1):
        if bests[s_] and max(bests[s_]) - min(bests[s_]) >= 64:
            assert len(los[s_]) >= 2, s_
    if seed == 0:                              # the example that must exercise the check
        assert max(bests[1]) - min(bests[1]) >= 64 and len(los[1]) >= 2
    assert_same_levels_and_counters(b, rb)
    if policy == "keep" and not strict:        # no errors: batch == per call
        for s0 in range(0, len(px), 37):
            c.apply_many(side[s0:s0 + 37], px[s0:s0 + 37], sz[s0:s0 + 37])
        for s_ in (1, -1):
            assert all(np.array_equal(x, y) for x, y in zip(b.levels(s_), c.levels(s_)))
        assert b.imbalance(7, 0.6) == pytest.approx(rb.imbalance(7, 0.6), rel=1e-12, abs=0)


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.sampled_from([64, 128]), st.sampled_from([1.0, 0.01]),
       st.floats(0.0, 1.0))
def test_deleting_the_best_level_by_level_matches_reference(seed, w, tick, p_gap):
    """The fast path replaces a deleted best by the next bit of its bitmap word; everything
    else (the next level in an earlier word, in the bottom quarter of the window so that it
    recentres, only in the far array, none) takes the general path. Levels with gaps of 1 to
    70 ticks (so successors lie in the same word, the word before, or further), then the
    best deleted until the side is empty, with +0.0 and -0.0 as the deleting size, and
    re-inserts between: == reference after every row (top, best, counts, level lists), and
    BookOFI's per-level e (its ranks come from last_kind) == reference."""
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(60) < p_gap, rng.integers(1, 71, 60), rng.integers(1, 4, 60))
    bids = 50_000 - np.cumsum(gaps)
    rows = [(1, float(p), float(rng.integers(1, 9))) for p in bids[::-1]]   # best last
    rows += [(-1, 50_001.0, 3.0)]
    live = sorted(bids.tolist())
    while live:
        if rng.random() < 0.15 and len(live) > 1:   # re-insert a level below the best
            p = live[0] - int(rng.integers(1, 5))
            rows.append((1, float(p), 2.0))
            live.insert(0, p)
        best = live.pop()
        rows.append((1, float(best), -0.0 if rng.random() < 0.3 else 0.0))
    side = np.array([r[0] for r in rows], np.int8)
    px = np.array([r[1] for r in rows]) * tick
    sz = np.array([r[2] for r in rows])
    with small_ladder(w):
        b = Book(tick)
        c = Book(tick)
        o = BookOFI(tick, levels=4)
    rb = ref.Book(tick)
    for i in range(len(px)):
        rb.apply(int(side[i]), px[i], sz[i], i)
        b.apply(int(side[i]), px[i], sz[i])
        assert_same_book(b, rb, 12)
        k, z = b.levels(1)
        assert [(int(t), q) for t, q in zip(k, z)] == rb.levels(1)
    assert b.bid_levels == 0 and b.ask_levels == 1
    c.apply_many(side, px, sz)
    assert all(np.array_equal(x, y) for x, y in zip(c.levels(1), b.levels(1)))
    assert (c.n_updates, c.n_missing) == (rb.n_updates, rb.n_missing) == (len(px), 0)
    ts = np.arange(len(px))
    e, lv = o.update_many(ts, side, px, sz, levels=True)
    r = ref.BookOFI(tick, levels=4)
    re1, rlv = r.update_many(ts.tolist(), side.tolist(), px.tolist(), sz.tolist(), levels=True)
    assert e.tolist() == list(re1) and lv.tolist() == [list(x) for x in rlv]


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.sampled_from([None, 0.3, 0.7]))
def test_ladder_bookofi_matches_reference(seed, L, p_end):
    """BookOFI over a recentring 64-slot ladder: per-level e == reference (exact), with and
    without message batches; its cached top-L keys stay those of the book."""
    rng = np.random.default_rng(seed)
    side, px, sz = roaming_deltas(rng, 400)
    ts = np.arange(len(px))
    end = None if p_end is None else rng.random(len(px)) < p_end
    with small_ladder():
        o = BookOFI(1.0, levels=L)
        one = BookOFI(1.0, levels=L)
    assert o.book._ladder[0] == 64
    r = ref.BookOFI(1.0, levels=L)
    e, lv = o.update_many(ts, side, px, sz, levels=True, batch_end=end)
    re1, rlv = r.update_many(ts.tolist(), side.tolist(), px.tolist(), sz.tolist(), levels=True,
                             batch_end=None if end is None else end.tolist())
    assert e.tolist() == re1 and lv.tolist() == rlv
    assert o.values.tolist() == r.values
    if end is None:
        assert [one.update(ts[i], int(side[i]), px[i], sz[i]) for i in range(len(px))] == re1
    # pickled mid-stream, the copy continues exactly
    c = pickle.loads(pickle.dumps(o))
    more = roaming_deltas(rng, 200)
    t2 = np.arange(len(px), len(px) + 200)
    assert np.array_equal(o.update_many(t2, *more, levels=True)[1],
                          c.update_many(t2, *more, levels=True)[1])


def test_ladder_window_follows_the_touch_and_memory_stays_bounded():
    """Hand case on the default ladder (w slots): a best 2 w ticks up moves the window (the
    old levels go to the far array, exact); deleting it brings the old ones back."""
    b = Book(1.0, capacity=4)
    w = b._ladder[0]
    b.load_snapshot(np.arange(1000, 990, -1), np.arange(1, 11), [1001], [5])
    lo0 = b._ladder[1]
    assert lo0 <= 991 and 1000 < lo0 + w
    b.apply(1, 1000 + 2 * w, 7)                # far above the window
    assert b.best_bid == 1000 + 2 * w and b._ladder[1] > 1000 and b.bid_levels == 11
    assert b.capacity[0] > 0                   # the old levels sit in the far array now
    assert b.levels(1)[0].tolist() == [1000 + 2 * w] + list(range(1000, 990, -1))
    assert b.n_crossed == 1                    # over the ask at 1001 (kept, counted)
    b.apply(1, 1000 + 2 * w, 0)
    assert b.best_bid == 1000 and b._ladder[1] <= 991
    assert b.top(3)[1].tolist() == [1.0, 2.0, 3.0]
    # memory: far prices a billion ticks apart cost one far slot each (one 32-level block
    # here; the capacity seen is the far array's, the ladder never grows)
    assert b.capacity == (0, 0)
    for p in (1.0, 5e8, 9e8):
        b.apply(1, p - 1e9 + 1000 - 4 * w, 1)
    assert b.bid_levels == 13 and b.capacity == (32, 0)
    for p in (1.0, 5e8, 9e8):
        b.apply(1, p - 1e9 + 1000 - 4 * w, 0)
    assert b.capacity == (0, 0)


def test_worst_order_inserts_move_a_bounded_number_of_levels():
    """Issue 14: an insert at any depth must not move the whole side. 200,000 far levels
    inserted in the worst order for a sorted array (always into the middle: each insert
    would move n/2 levels, 1e10 moves in all) move at most a few levels each."""
    n = 200_000
    b = Book(1.0, capacity=1)
    b.apply(1, 10_000_000, 1.0)                # the touch: every insert below is far
    half = np.arange(n // 2, dtype=np.float64)
    px = np.empty(n)
    px[0::2] = 1.0 + half                      # lower half growing up ...
    px[1::2] = 5_000_000.0 - half              # ... upper half growing down: the middle
    moved0 = b._moved
    b.apply_many(np.ones(n, np.int8), px, np.full(n, 2.0))
    moved = b._moved - moved0
    assert b.bid_levels == n + 1
    assert np.array_equal(b.levels(1)[0][1:], np.sort(px)[::-1].astype(np.int64))
    assert moved <= 64 * n, moved              # a sorted array: ~n * n / 4 = 1e10


def _real_deltas(name):
    """(tick, side, price, size, batch_end) of a real L2 delta file, snapshot rows included
    (they are ordinary sets on an empty book)."""
    from ofi_fast import feeds as F
    if name == "tardis":
        d = F.read_tardis(data_file(
            "tardis", "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv"))
        tick, n = 0.01, len(d.price)
    elif name == "bitstamp":
        d = F.read_bitstamp_l3(data_file("bitstamp_ob_analytics", "orders.csv.gz"))
        tick, n = 0.01, 20_000
    else:
        d = F.read_binance(data_file("binance_hftbacktest", name, "btcusdt_20240808.gz")).depth
        tick, n = (0.1 if name == "usdm" else 0.01), 20_000
    end = (d.flags[:n] & F.FLAG_BATCH_END) != 0
    end[-1] = True
    return tick, d.side[:n], d.price[:n], d.size[:n], end


@pytest.mark.parametrize("w", [None, 64])
@pytest.mark.parametrize("name", ["tardis", "bitstamp", "spot", "usdm"])
def test_real_deltas_ladder_equals_reference(name, w):
    """Real deltas (Tardis, Bitstamp L3 aggregated, Binance spot / USD-M) on the default
    ladder and on a 64-slot one (recentring all the time on real prices): apply_many in
    message-sized chunks == the reference at every message end (top 10, level counts,
    counters), the full books at the end, and BookOFI(5) == reference BookOFI on the first
    2,000 rows (per-level e, exact)."""
    tick, side, px, sz, end = _real_deltas(name)
    with (small_ladder(w) if w else contextlib.nullcontext()):
        b = Book(tick)
        o = BookOFI(tick, levels=5)
    rb = ref.Book(tick)
    cuts = np.flatnonzero(end) + 1
    a = 0
    for k, c in enumerate(cuts.tolist()):
        b.apply_many(side[a:c], px[a:c], sz[a:c], batch_end=end[a:c])
        rb.apply_many(side[a:c].tolist(), px[a:c].tolist(), sz[a:c].tolist(),
                      batch_end=end[a:c].tolist())
        assert (b.bid_levels, b.ask_levels) == (len(rb.bids), len(rb.asks))
        if k % 53 == 0 or c == len(px):
            assert_same_book(b, rb, 10)
        a = c
    for s_ in (1, -1):
        k_, z_ = b.levels(s_)
        assert [(int(t), q) for t, q in zip(k_, z_)] == rb.levels(s_)
    assert (b.n_crossed, b.n_locked, b.n_missing) == (rb.n_crossed, rb.n_locked, rb.n_missing)
    m = min(len(px), 2000)
    r = ref.BookOFI(tick, levels=5)
    ts = np.arange(m)
    e, lv = o.update_many(ts, side[:m], px[:m], sz[:m], levels=True, batch_end=end[:m])
    re1, rlv = r.update_many(ts.tolist(), side[:m].tolist(), px[:m].tolist(), sz[:m].tolist(),
                             levels=True, batch_end=end[:m].tolist())
    assert lv.tolist() == rlv


@pytest.mark.parametrize("batch", [False, True])
def test_far_rows_move_exactly_the_levels_above_them(batch):
    """Far rows in the C loop (helper deep6): a size change moves nothing, an insert or delete
    in a block moves the levels above it in that block (24 far levels: one 3/4-full block)."""
    b = Book(1.0)
    far = 10.0 * np.arange(1, 25)
    b.load_snapshot(np.r_[1_000_000.0, far[::-1]], np.ones(25), [1_000_001.0], [1.0])

    def apply(px, sz):
        m0 = b._moved
        if batch:
            b.apply_many(np.ones(1, np.int8), [px], [sz])
        else:
            b.apply(1, px, sz)
        return b._moved - m0

    assert apply(105, 2.0) == 14               # above the 10th level: 14 move up
    assert apply(105, 3.0) == 0                # a size change
    assert apply(240, 0.0) == 0                # the block's top level
    assert apply(105, 0.0) == 13               # 13 above it now
    assert apply(106, 0.0) == 0 and b.n_missing == 1
    assert apply(235, 4.0) == 0                # the block's new top
    assert b.levels(1)[0].tolist() == [1_000_000, 235] + far[::-1][1:].astype(int).tolist()
    assert b.n_updates == 6 and b.bid_levels == 25


@pytest.mark.parametrize("crossed", ["keep", "raise"])
def test_far_row_step_at_its_block_bounds(crossed):
    """The far-row step (C, ofi_far_row) at its bounds, on the fast route (policy keep:
    Book.apply_many's batch loop declines a far key, `_apply` calls ofi_book_far) and the
    general one (policy raise: far_set / far_delete call the step first): an insert into a
    block of FAR_B - 1 levels fills it (no split), one into a block of exactly FAR_B splits it;
    a delete leaving exactly FAR_B / 4 levels keeps the block, one leaving FAR_B / 4 - 1
    merges it with a neighbour that has room. Both routes move the same levels. (Planted
    `n - 1 <= FAR_B / 4` or `n - 1 < FAR_B / 4 - 1` for the delete bound, or `n == FAR_B - 1`
    for the split, in ofi_far_row: this test fails.)"""
    b = Book(1.0, crossed=crossed)
    far = 10.0 * np.arange(1, 25)                      # one far block, 3/4 full (24)
    b.load_snapshot(np.r_[1_000_000.0, far[::-1]], np.ones(25), [1_000_001.0], [1.0])

    def apply(px, sz):
        m0 = b._moved
        b.apply_many(np.ones(1, np.int8), [px], [sz])
        b._check()
        return b._moved - m0

    for px in 250.0 + 10 * np.arange(7):               # appended at its top: 31 levels
        assert apply(px, 1.0) == 0
    assert b.capacity == (32, 0)
    assert apply(15, 1.0) == 30 and b.capacity == (32, 0)      # 32 levels, one block
    assert apply(25, 1.0) == 16 + 13 and b.capacity == (64, 0)   # the split: 16, then 13
    # blocks [15 .. 150] (17 levels) and [160 .. 310] (16): empty them down to the bounds
    lo = [10.0, 15.0, 20.0, 25.0] + list(30.0 + 10 * np.arange(13))
    hi = list(160.0 + 10 * np.arange(16))
    for px in hi[8:][::-1]:                            # the upper block's top: 16 -> 8 levels
        assert apply(px, 0.0) == 0
    for px in lo[8:][::-1]:                            # the lower one's top: 17 -> 8, exactly
        assert apply(px, 0.0) == 0                     # FAR_B / 4 (8 + 8 would fit: no merge)
    assert b.capacity == (64, 0) and b.bid_levels == 17
    assert apply(lo[7], 0.0) == 8                      # 7 left: the upper block's 8 join it
    assert b.capacity == (32, 0) and b.bid_levels == 16
    assert b.levels(1)[0].tolist() == [1_000_000] + [int(x) for x in (lo[:7] + hi[:8])[::-1]]
    assert b.n_updates == 7 + 2 + 8 + 9 + 1 and b.n_missing == 0


def test_deep_snapshot_widens_the_ladder_within_its_level_bound():
    """A snapshot deeper than the window widens that side's ladder (doubling while levels
    would fall below it, at most 16 slots per level); reset and a shallow snapshot restore
    it. The levels, and the results of the same deltas, never depend on it."""
    b, plain = Book(1.0), Book(1.0)
    w0 = b._ladder[0]
    bids = 1_000_000.0 - 10 * np.arange(1, 10_001)     # 100,000 ticks: deeper than 3/4 w0
    b.load_snapshot(bids, np.full(10_000, 5.0), [1_000_001.0], [1.0])
    w, expected = b._ladder[0], w0
    while expected - expected // 4 <= 99_990 and 2 * expected <= 16 * 10_000:
        expected *= 2
    assert w == expected > w0
    with small_ladder(w0):                             # the same book built by deltas on a
        plain = Book(1.0)                              # ladder that never widens
    plain.apply_many(np.ones(10_000, np.int8), bids, np.full(10_000, 5.0))
    plain.apply(-1, 1_000_001.0, 1.0)
    assert plain._ladder[0] == w0
    rng = np.random.default_rng(5)
    px = bids[rng.integers(0, 10_000, 5000)]
    sz = np.where(rng.random(5000) < 0.3, 0.0, 2.0)
    for book in (b, plain):
        book.apply_many(np.ones(5000, np.int8), px, sz)
    assert all(np.array_equal(x, y) for x, y in zip(b.levels(1), plain.levels(1)))
    b.load_snapshot(1000.0 - 1000 * np.arange(100), np.ones(100), [1001.0], [1.0])
    assert b._ladder[0] == w0                          # 99,000 ticks but 100 levels: no
    b.load_snapshot(bids, np.full(10_000, 5.0), [1_000_001.0], [1.0])
    assert b._ladder[0] == w
    b.reset()
    assert b._ladder[0] == w0


# ------------------------------------------------------- the ladder widened by deltas (deep7)
def deep_build_deltas(rng, n, gap, depth=200):
    """Deltas that build both sides deep from nothing: inserts at random depths on a grid of
    `gap` ticks (up to `depth` levels a side: far more than a small ladder's window), deletes
    of random (sometimes missing) levels and of the best, size changes, and a touch that
    sometimes steps up (a new best: the window recentres)."""
    best = {1: 100_000 - 1, -1: 100_000 + 1}
    live = {1: set(), -1: set()}
    side = rng.choice([1, -1], n).astype(np.int8)
    px, sz = np.empty(n), rng.integers(1, 9, n).astype(np.float64)
    for i in range(n):
        sd = int(side[i])
        lv, u = live[sd], rng.random()
        if u < 0.55 or not lv:
            p = best[sd] - sd * gap * int(rng.integers(0, depth))
        elif u < 0.7:
            p = (rng.choice(sorted(lv)) if rng.random() < 0.8
                 else best[sd] - sd * int(rng.integers(0, gap * depth)))
            sz[i] = 0.0
        elif u < 0.8:
            p = max(lv) if sd == 1 else min(lv)
            sz[i] = 0.0
        elif u < 0.85:
            best[sd] += sd * int(rng.integers(1, 3 * gap + 1))
            p = best[sd]
        else:
            p = rng.choice(sorted(lv))
        px[i] = p
        if sz[i] == 0.0:
            lv.discard(p)
        else:
            lv.add(p)
    return side, px, sz


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["keep", "raise"]), st.booleans(),
       st.sampled_from([1, 5, 40]))
def test_ladder_widened_by_deltas_matches_reference(seed, policy, strict, gap):
    """A 64-slot ladder that inserts widen (side_grow) on books built by deltas to ~100 sparse
    levels a side (far more than the window: widened several times, up to the 16-slots-per-
    level bound with gap 40): == reference after every row (top 12, best, mid, level counts,
    errors), the structure's invariants after every row (Book._check), the full level lists
    at the end; apply_many in chunks == apply, and BookOFI's per-level e == reference."""
    rng = np.random.default_rng(seed)
    side, px, sz = deep_build_deltas(rng, 500, gap)
    with small_ladder(64, grows=True):
        b = Book(1.0, crossed=policy, strict=strict, capacity=2)
        c = Book(1.0, crossed=policy, capacity=2)
        o = BookOFI(1.0, levels=4)
    rb = ref.Book(1.0, crossed=policy, strict=strict)
    widths, peak = set(), [0, 0]
    for i in range(len(px)):
        apply_as_reference(b, rb, side, px, sz, i)
        assert_same_book(b, rb, 12)
        peak = [max(peak[0], b.bid_levels), max(peak[1], b.ask_levels)]
        for w, p in zip(b._check(), peak):     # 16 slots per level at most, at its peak
            assert w == 64 or w <= 16 * p
            widths.add(w)
    assert max(widths) > 64                    # it did widen (gap 1 .. 40: 256 .. 2048)
    assert_same_levels_and_counters(b, rb)
    if policy == "keep" and not strict:        # no errors: batch == per call
        for s0 in range(0, len(px), 37):
            c.apply_many(side[s0:s0 + 37], px[s0:s0 + 37], sz[s0:s0 + 37])
            c._check()
        for s_ in (1, -1):
            assert all(np.array_equal(x, y) for x, y in zip(b.levels(s_), c.levels(s_)))
        assert c._check() == b._check()
        ts = np.arange(len(px))
        e, lv = o.update_many(ts, side, px, sz, levels=True)
        r = ref.BookOFI(1.0, levels=4)
        re1, rlv = r.update_many(ts.tolist(), side.tolist(), px.tolist(), sz.tolist(),
                                 levels=True)
        assert e.tolist() == list(re1) and lv.tolist() == [list(x) for x in rlv]
        assert o.book._check() == b._check()


@pytest.mark.parametrize("batch", [False, True])
def test_far_insert_widens_the_ladder_when_due(batch):
    """The far row (C, ofi_book_far) inserts too: the insert that leaves more levels far than
    in the ladder (5 against 4, 9 levels: 2 x 64 slots <= 16 a level) doubles a 64-slot
    ladder whose doubled window reaches them; far levels all out of its reach do not."""
    with small_ladder(64, grows=True):
        b, c = Book(1.0), Book(1.0)

    def apply(book, px):
        if batch:
            book.apply_many(np.ones(1, np.int8), [px], [1.0])
        else:
            book.apply(1, px, 1.0)

    for book, far in ((b, [920, 921, 922, 923, 924]), (c, [899, 900, 901, 902, 903])):
        for px in [1000, 999, 998, 997] + far[:4]:
            apply(book, px)
        assert book._check() == (64, 64) and book.capacity == (32, 0)
        apply(book, far[4])
    assert b._check() == (128, 64) and b.capacity == (0, 0) and b._ladder[1] == 1000 - 96
    assert c._check() == (64, 64) and c.capacity == (32, 0)    # all < 904: out of reach
    assert b.levels(1)[0].tolist() == [1000, 999, 998, 997, 924, 923, 922, 921, 920]


@pytest.mark.parametrize("batch", [False, True])
def test_far_insert_widens_past_a_doubling_that_does_not_reach(batch):
    """Far levels beyond the doubled window (here 200 ticks below the best of a 64-slot ladder:
    128 slots reach 96 below it, 256 slots 192): the widening goes to the smallest doubling
    that reaches the highest far level (512 slots, 384 below), within 16 slots per live level
    (41 levels: 656), and stops where the next one would pass that bound (1,024)."""
    px = np.r_[1000.0, 800.0 - 10 * np.arange(40)]
    with small_ladder(64, grows=True):
        b = Book(1.0)
    if batch:
        b.apply_many(np.ones(41, np.int8), px, np.ones(41))
    else:
        for p in px:
            b.apply(1, float(p), 1.0)
    assert b._check() == (512, 64) and b._ladder[1] == 1000 - 384
    assert b.levels(1)[0].tolist() == px.tolist()


@pytest.mark.parametrize("order", ["deeper", "shallower"])
def test_ladder_widened_by_deltas_moves_amortised_levels(order):
    """A side built by deltas to 100,000 levels 10 ticks apart (deeper and deeper, or from the
    deepest up) widens its ladder as a snapshot would (the same width, 16 slots per level at
    most); the widenings' moves (re-slotting the ladder, far levels taken in) are amortised:
    at most 4 times the final width in all (each width reached once), not per insert."""
    n = 100_000
    bids = 10_000_000.0 - 10 * np.arange(n)
    px = np.r_[bids[0], bids[1:] if order == "deeper" else bids[1:][::-1]]
    fixed, snap = Book(1.0), Book(1.0)
    with small_ladder(fixed._ladder[0]):
        plain = Book(1.0)                      # never widens: the moves without side_grow
    moved = []
    for b in (fixed, plain):
        m0 = b._moved
        b.apply_many(np.ones(n, np.int8), px, np.full(n, 2.0))
        # the deepest level deleted and put back: a far insert, the trigger (built from the
        # deepest up, the last widening came while the memory bound still held the width
        # below the snapshot's; inserts into the ladder do not test it)
        b.apply_many(np.ones(2, np.int8), np.r_[bids[-1], bids[-1]], np.r_[0.0, 2.0])
        moved.append(b._moved - m0)
        b._check()
    snap.load_snapshot(bids, np.full(n, 2.0))
    w = fixed._ladder[0]
    assert w == snap._ladder[0] > plain._ladder[0] and w <= 16 * n
    assert all(np.array_equal(x, y) for x, y in zip(fixed.levels(1), plain.levels(1)))
    assert 0 < moved[0] - moved[1] <= 4 * w, moved
    assert moved[0] <= 32 * n, moved           # the far blocks' moves: 24 a level "deeper"
    # memory: the ladder's 9 bytes a slot, at most 144 bytes a level (101 here, against 34
    # for the far blocks: the price of an index per update), plus the far blocks left
    assert 9 * w + 16 * fixed.capacity[0] <= (144 + 16) * n


def test_widened_ladder_is_kept_until_reset_or_a_snapshot():
    """Decision: no shrink rule. A side that loses most of its levels keeps its widened ladder
    (its memory is bounded by its peak levels, like the far directory); reset() restores w0,
    a snapshot re-sizes it (side_fit). The levels never depend on the width; the ask side
    (unwidened) keeps w0."""
    b = Book(1.0)
    w0 = b._ladder[0]
    bids = 1_000_000.0 - 10 * np.arange(10_000)
    b.apply_many(np.ones(10_000, np.int8), bids, np.full(10_000, 5.0))
    b.apply(-1, 1_000_001.0, 1.0)
    w = b._ladder[0]
    assert w > w0 and b._check() == (w, w0)
    b.apply_many(np.ones(9_990, np.int8), bids[10:], np.zeros(9_990))     # 10 levels left
    assert b.bid_levels == 10 and b._check() == (w, w0)
    assert b.levels(1)[0].tolist() == bids[:10].astype(int).tolist()
    b.load_snapshot(bids[:10], np.ones(10))
    assert b._check() == (w0, w0)
    b.apply_many(np.ones(10_000, np.int8), bids, np.full(10_000, 5.0))
    assert b._check() == (w, w0)
    b.reset()
    assert b._check() == (w0, w0) and b.bid_levels == 0
