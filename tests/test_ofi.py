"""Best-level OFI: hand-computed CKS cases, differential tests against reference.py, pickling,
bad input, real LOBSTER data, and flat memory over many updates."""

import math
import pickle
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ofi_fast
from ofi_fast import reference as ref
from conftest import data_file, random_quotes

NAN = float("nan")


def test_compiled_modules_are_tested():
    # The tests must exercise the compiled extensions, not a pure-Python fallback or a stale
    # tree: every ofi_fast/_*.pyx is imported from a compiled module.
    import importlib
    from pathlib import Path
    pyx = sorted(Path(ofi_fast.__file__).parent.glob("_*.pyx"))
    assert len(pyx) >= 5
    for p in pyx:
        mod = importlib.import_module(f"ofi_fast.{p.stem}")
        assert mod.__file__.endswith((".so", ".pyd")), mod.__file__


# --- hand-computed cases (Cont, Kukanov & Stoikov 2014, eq. 10; THEORY-DETAIL test vector A) --
VECTOR_A = [  # (bid_px, bid_sz, ask_px, ask_sz, e_n)
    (100, 10, 101, 12, 0),    # first event: no predecessor
    (100, 15, 101, 12, 5),    # bid same: 15-10; ask same: -(12-12)
    (100, 15, 101, 8, 4),     # ask same: -(8-12)
    (101, 3, 102, 20, 11),    # bid up: +3; ask up: +q^a_{n-1} = 8
    (100, 7, 102, 25, -8),    # bid down: -q^b_{n-1} = -3; ask same: -(25-20)
    (100, 7, 101, 4, -4),     # ask down: -q^a_n = -4
]


def test_vector_a_batch_and_stream():
    bp, bs, ap, az, expected = (np.array(c, dtype=float) for c in zip(*VECTOR_A))
    assert ofi_fast.l1_ofi(bp, bs, ap, az).tolist() == expected.tolist()
    o = ofi_fast.OFI()
    got = [o.update(i, *row[:4]) for i, row in enumerate(VECTOR_A)]
    assert got == expected.tolist()
    assert o.value == o.total == 8.0 and o.count == 6


@pytest.mark.parametrize("prev,cur,e", [
    # each side's three cases separately, the other side unchanged
    ((100, 10, 102, 5), (101, 4, 102, 5), 4),           # bid up: +q^b_n
    ((100, 10, 101, 5), (100, 13, 101, 5), 3),           # bid same: +3
    ((100, 10, 101, 5), (99, 20, 101, 5), -10),          # bid down: -q^b_{n-1}
    ((100, 10, 101, 5), (100, 10, 100.5, 2), -2),        # ask down: -q^a_n
    ((100, 10, 101, 5), (100, 10, 101, 9), -4),          # ask same: -(9-5)
    ((100, 10, 101, 5), (100, 10, 102, 1), 5),           # ask up: +q^a_{n-1}
    # empty sides (THEORY-DETAIL 1.7): NaN price with size 0
    ((100, 10, 101, 5), (NAN, 0, 101, 5), -10),          # bid empties
    ((NAN, 0, 101, 5), (100, 7, 101, 5), 7),             # bid appears
    ((100, 10, 101, 5), (100, 10, NAN, 0), 5),           # ask empties
    ((100, 10, NAN, 0), (100, 10, 102, 9), -9),          # ask appears
    ((NAN, 0, NAN, 0), (NAN, 0, NAN, 0), 0),             # both stay empty
])
def test_case_table(prev, cur, e):
    assert ofi_fast.l1_ofi(*zip(prev, cur))[1] == e
    assert ref.l1_ofi(*zip(prev, cur))[1] == e


def test_infinite_prices_mark_empty_sides_like_nan():
    a = ofi_fast.l1_ofi([100, -np.inf], [10, 0], [101, np.inf], [5, 0])
    b = ofi_fast.l1_ofi([100, NAN], [10, 0], [101, NAN], [5, 0])
    assert a.tolist() == b.tolist() == [0, -10 + 5]


def test_crossed_and_locked_are_computed_and_counted():
    o = ofi_fast.OFI()
    o.update(0, 100, 5, 101, 5)
    assert o.update(1, 101, 5, 101, 5) == 5      # locked: bid up +5, ask same 0
    assert o.update(2, 102, 5, 101, 5) == 5      # crossed: bid up +5
    assert (o.n_locked, o.n_crossed) == (1, 1)


def test_reset_makes_next_event_a_first_event():
    o = ofi_fast.OFI(window=3)
    o.update(0, 100, 5, 101, 5)
    o.update(1, 100, 9, 101, 5)
    o.reset()
    assert o.update(0, 50, 1, 60, 1) == 0.0 and o.value == 0.0 and o.count == 1


# --- windows --------------------------------------------------------------------------------
def test_time_window_is_left_open_right_closed():
    o = ofi_fast.OFI(window_time=10)
    o.update(0, 100, 10, 101, 5)
    o.update(5, 100, 12, 101, 5)     # +2
    o.update(10, 100, 15, 101, 5)    # +3; window (0, 10]: the event at ts=0 has left
    assert o.value == 5 and o.count == 2
    o.update(15, 100, 16, 101, 5)    # +1; window (5, 15]
    assert o.value == 4 and o.count == 2


def test_count_window():
    o = ofi_fast.OFI(window=2)
    for i, row in enumerate(VECTOR_A):
        o.update(i, *row[:4])
    assert o.value == -8 - 4 and o.total == 8


def test_capacity_error_names_needed_size_and_keeps_state():
    o = ofi_fast.OFI(window_time=100, capacity=2)
    o.update(0, 100, 1, 101, 1)
    o.update(1, 100, 2, 101, 1)
    with pytest.raises(ofi_fast.CapacityError) as ei:
        o.update(2, 100, 3, 101, 1)
    assert ei.value.needed == 3 and ei.value.field == "ts"
    assert (o.value, o.count, o.n_events) == (1.0, 2, 2)
    assert o.update(200, 100, 3, 101, 1) == 1.0  # continues from the state before the error


def test_grow_doubles_capacity():
    o = ofi_fast.OFI(window_time=1000, capacity=2, grow=True)
    for i in range(10):
        o.update(i, 100, i, 101, 1)
    assert o.count == 10 and o.capacity >= 10 and o.value == 9.0


# --- differential tests: batch == stream == chunks == reference -----------------------------
@st.composite
def quote_streams(draw):
    n = draw(st.integers(0, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    p_empty = draw(st.sampled_from([0.0, 0.1]))
    return random_quotes(np.random.default_rng(seed), n, p_empty=p_empty)


@given(quote_streams(), st.integers(1, 50), st.sampled_from([None, 3, 1]),
       st.sampled_from([None, 1500, 1]))
def test_differential(stream, chunk, window, window_time):
    ts, bp, bs, ap, az = stream
    if window and window_time:
        window_time = None
    n = len(ts)
    expect = ref.OFI(window=window, window_time=window_time)
    expected = expect.update_many(ts, bp.tolist(), bs.tolist(), ap.tolist(), az.tolist())

    batch = ofi_fast.l1_ofi(bp, bs, ap, az)
    assert batch.tolist() == expected  # integer sizes: exact

    one = ofi_fast.OFI(window=window, window_time=window_time)
    singles = [one.update(ts[i], bp[i], bs[i], ap[i], az[i]) for i in range(n)]
    assert singles == expected

    many = ofi_fast.OFI(window=window, window_time=window_time)
    parts, rolls = [], []
    for s in range(0, n, chunk):
        e, v = many.update_many(ts[s:s + chunk], bp[s:s + chunk], bs[s:s + chunk],
                                ap[s:s + chunk], az[s:s + chunk], rolling=True)
        parts += e.tolist()
        rolls += v.tolist()
    assert parts == expected
    for obj in (one, many):
        assert obj.value == expect.value and obj.total == expect.total
        assert obj.count == expect.count and obj.n_events == expect.n_events
        assert (obj.n_crossed, obj.n_locked) == (expect.n_crossed, expect.n_locked)
    if n:
        assert rolls[-1] == expect.value


@given(quote_streams(), st.integers(0, 120))
def test_pickle_mid_stream_continues_identically(stream, cut):
    ts, bp, bs, ap, az = stream
    cut = min(cut, len(ts))
    a = ofi_fast.OFI(window_time=2000)
    a.update_many(ts[:cut], bp[:cut], bs[:cut], ap[:cut], az[:cut])
    b = pickle.loads(pickle.dumps(a))
    ra = a.update_many(ts[cut:], bp[cut:], bs[cut:], ap[cut:], az[cut:], rolling=True)
    rb = b.update_many(ts[cut:], bp[cut:], bs[cut:], ap[cut:], az[cut:], rolling=True)
    assert ra[0].tolist() == rb[0].tolist() and ra[1].tolist() == rb[1].tolist()
    assert (a.value, a.total, a.count, a.n_events) == (b.value, b.total, b.count, b.n_events)


def test_float_sizes_agree_with_reference_to_rounding():
    # Non-integer sizes: e_n is computed with the same few float operations in both, so it is
    # equal to the last bit; the windowed sum is compensated (Neumaier) in Cython and exact
    # (fsum) in the reference, so they agree to a few ulps of the window's magnitude.
    ts, bp, bs, ap, az = random_quotes(np.random.default_rng(7), 5000, integer=False)
    o = ofi_fast.OFI(window=500)
    e, v = o.update_many(ts, bp, bs, ap, az, rolling=True)
    r = ref.OFI(window=500)
    assert e.tolist() == r.update_many(ts, bp.tolist(), bs.tolist(), ap.tolist(), az.tolist())
    assert math.isclose(v[-1], r.value, rel_tol=1e-12, abs_tol=1e-9)


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,err", [
    ("bid_sz", NAN, ofi_fast.NonFiniteError),
    ("ask_sz", np.inf, ofi_fast.NonFiniteError),
    ("bid_sz", -1.0, ofi_fast.NegativeSizeError),
    ("ask_sz", -0.5, ofi_fast.NegativeSizeError),
    ("bid_px", NAN, ofi_fast.NonFiniteError),      # NaN price with a positive size
    ("ask_px", np.inf, ofi_fast.NonFiniteError),
    ("bid_px", np.inf, ofi_fast.NonFiniteError),   # +inf is never a bid
])
@pytest.mark.parametrize("window", [10, None])  # the windowed and the no-window batch paths
def test_bad_values_name_field_and_index_and_keep_state(field, value, err, window):
    cols = {"bid_px": [100.0] * 5, "bid_sz": [1.0, 2, 3, 4, 5],
            "ask_px": [101.0] * 5, "ask_sz": [1.0] * 5}
    cols[field][3] = value
    ts = np.arange(5)
    o = ofi_fast.OFI(window=window)
    with pytest.raises(err) as ei:
        o.update_many(ts, cols["bid_px"], cols["bid_sz"], cols["ask_px"], cols["ask_sz"])
    assert (ei.value.field, ei.value.index) == (field, 3)
    assert isinstance(ei.value, ofi_fast.OFIError) and isinstance(ei.value, ValueError)
    assert field in str(ei.value) and "[3]" in str(ei.value)
    # events 0..2 applied, the bad one not: resuming with event 4 matches a clean run
    assert (o.n_events, o.value) == (3, 2.0)
    with pytest.raises(err):
        o.update(3, *(cols[k][3] for k in ("bid_px", "bid_sz", "ask_px", "ask_sz")))
    assert (o.n_events, o.value) == (3, 2.0)
    o.update(4, 100.0, 5.0, 101.0, 1.0)
    assert o.value == 4.0


def test_time_backwards():
    o = ofi_fast.OFI(window_time=10)
    with pytest.raises(ofi_fast.TimeOrderError) as ei:
        o.update_many([0, 5, 4], [1.0] * 3, [1.0] * 3, [2.0] * 3, [1.0] * 3)
    assert (ei.value.field, ei.value.index) == ("ts", 2)
    assert o.n_events == 2
    o2 = ofi_fast.OFI()  # ordering is checked even without a window
    with pytest.raises(ofi_fast.TimeOrderError) as ei:
        o2.update_many([0, 5, 4], [1.0] * 3, [1.0, 2.0, 3.0], [2.0] * 3, [1.0] * 3)
    assert ei.value.index == 2 and (o2.n_events, o2.value) == (2, 1.0)
    o2.update(10, 1, 1, 2, 1)
    with pytest.raises(ofi_fast.TimeOrderError):
        o2.update(9, 1, 1, 2, 1)


def test_mismatched_lengths_and_shapes():
    with pytest.raises(ofi_fast.OFIError, match="ask_sz"):
        ofi_fast.l1_ofi([1.0, 2.0], [1.0, 1.0], [3.0, 3.0], [1.0])
    with pytest.raises(ofi_fast.OFIError, match="1-D"):
        ofi_fast.l1_ofi(np.ones((2, 2)), np.ones(2), np.ones(2), np.ones(2))
    with pytest.raises(ofi_fast.OFIError, match="needs ts"):
        ofi_fast.OFI(window_time=5).update_many(None, [1.0], [1.0], [2.0], [1.0])
    with pytest.raises(ofi_fast.OFIError, match="not both"):
        ofi_fast.OFI(window=5, window_time=5)
    with pytest.raises(ofi_fast.OFIError, match="window"):
        ofi_fast.OFI(window=0)


def test_inputs_converted_not_rejected_and_never_modified():
    ts, bp, bs, ap, az = random_quotes(np.random.default_rng(3), 200)
    expected = ofi_fast.l1_ofi(bp, bs, ap, az)
    # strided, integer-typed, read-only and list inputs give the same result
    wide = np.zeros((200, 2))
    wide[:, 0] = bp
    ro = az.copy()
    ro.setflags(write=False)
    got = ofi_fast.l1_ofi(wide[:, 0], bs.astype(np.int32), ap.tolist(), ro)
    assert got.tolist() == expected.tolist()
    assert np.array_equal(wide[:, 0], bp) and np.array_equal(ro, az)


def test_out_argument_is_checked_and_used():
    o = ofi_fast.OFI()
    out = np.empty(3)
    res = o.update_many(None, [1.0] * 3, [1.0, 2, 3], [2.0] * 3, [1.0] * 3, out=out)
    assert res is out and out.tolist() == [0, 1, 1]
    with pytest.raises(ofi_fast.OFIError, match="out"):
        o.update_many(None, [1.0], [1.0], [2.0], [1.0], out=np.empty(2))

    got = ofi_fast.l1_ofi([1.0] * 3, [1.0, 2, 3], [2.0] * 3, [1.0] * 3, out=out)
    assert got is out and out.tolist() == [0, 1, 1]


def test_capacity_in_update_many_names_index_and_keeps_applied_events():
    # the windowed batch kernel stops at the event that needs a 4th slot; events before it stay
    o = ofi_fast.OFI(window_time=100, capacity=3)
    ts = np.array([0, 1, 2, 3, 500])
    with pytest.raises(ofi_fast.CapacityError) as ei:
        o.update_many(ts, [100.0] * 5, [1.0, 2, 3, 4, 5], [101.0] * 5, [1.0] * 5)
    assert ei.value.index == 3 and ei.value.needed == 4
    assert (o.value, o.count, o.n_events) == (2.0, 3, 3)
    o.update_many(ts[3:] + 1000, [100.0] * 2, [4.0, 5], [101.0] * 2, [1.0] * 2)
    assert (o.value, o.count) == (1.0, 1)


@given(st.integers(1, 4), st.integers(1, 40))
def test_update_many_grows_the_ring_like_update(capacity, chunk):
    ts, bp, bs, ap, az = random_quotes(np.random.default_rng(capacity * 100 + chunk), 120)
    one = ofi_fast.OFI(window_time=3000, capacity=capacity, grow=True)
    singles = [(one.update(*row), one.value) for row in zip(ts, bp, bs, ap, az)]
    many = ofi_fast.OFI(window_time=3000, capacity=capacity, grow=True)
    got = []
    for s in range(0, len(ts), chunk):
        e, v = many.update_many(ts[s:s + chunk], bp[s:s + chunk], bs[s:s + chunk],
                                ap[s:s + chunk], az[s:s + chunk], rolling=True)
        got += list(zip(e.tolist(), v.tolist()))
    assert got == singles and many.capacity == one.capacity


# --- memory ---------------------------------------------------------------------------------
def test_no_allocation_per_event():
    o = ofi_fast.OFI(window_time=50_000)
    upd = o.update
    for i in range(1000):  # warm up
        upd(i, 100.0, 1.0, 101.0, 1.0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(1000, 1_001_000):
        upd(i, 100.0, float(i & 7), 101.0, 1.0)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    # a full 50,000-event window sliding over 1e6 events: Python-level memory stays flat
    assert o.count == 50_000
    assert grown < 10_000, grown


# --- real data: LOBSTER AAPL 10 levels, first 999 events (THEORY-DETAIL test vector A') ------
def _lobster_book(levels=1):
    path = data_file("lobster", "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv")
    book = np.loadtxt(path, delimiter=",")
    m = levels - 1
    return book[:, 4 * m + 2], book[:, 4 * m + 3], book[:, 4 * m], book[:, 4 * m + 1]


def test_lobster_aapl_level1_matches_reference_and_paper_vector():
    bp, bs, ap, az = _lobster_book(1)
    e = ofi_fast.l1_ofi(bp, bs, ap, az)
    assert e.tolist() == ref.l1_ofi(bp.tolist(), bs.tolist(), ap.tolist(), az.tolist())
    assert e[:11].tolist() == [0, 0, 0, -18, 0, 0, 0, 0, 0, 0, 18]
    assert e.sum() == -4858


@pytest.mark.parametrize("level,total", [(2, -3096), (3, -2577)])
def test_lobster_aapl_deeper_levels_by_rank(level, total):
    bp, bs, ap, az = _lobster_book(level)
    assert ofi_fast.l1_ofi(bp, bs, ap, az).sum() == total


def test_lobster_full_day_zips_match_reference():
    import io
    import zipfile
    for name in ("AAPL", "AMZN", "GOOG"):
        path = data_file("lobster", f"LOBSTER_SampleFile_{name}_2012-06-21_1.zip")
        stem = f"{name}_2012-06-21_34200000_57600000"
        with zipfile.ZipFile(path) as z:
            book = np.loadtxt(io.TextIOWrapper(z.open(f"{stem}_orderbook_1.csv")), delimiter=",")
            msg = np.loadtxt(io.TextIOWrapper(z.open(f"{stem}_message_1.csv")), delimiter=",",
                             usecols=0)
        ap, az, bp, bs = book.T
        ts = np.round(msg * 1e9).astype(np.int64)  # seconds after midnight -> ns
        # dummy prices (+-9999999999, size 0) of empty sides behave as -inf/+inf
        e = ofi_fast.l1_ofi(bp, bs, ap, az)
        r = ref.OFI(window_time=1_000_000_000)
        assert e.tolist() == r.update_many(ts, bp.tolist(), bs.tolist(), ap.tolist(),
                                           az.tolist())
        o = ofi_fast.OFI(window_time=1_000_000_000)
        e2, rolling = o.update_many(ts, bp, bs, ap, az, rolling=True)
        assert e2.tolist() == e.tolist()
        assert rolling[-1] == r.value and o.count == r.count and o.total == e.sum()


# --- the blocked, branch-free batch kernels (issue 13) ------------------------------------
# update_many runs in blocks of events: a vector pass for e_n and validity, then the totals,
# then the window. These tests shrink the block so that short streams cross many block
# boundaries, and put every special value in every lane position of the vector pass.
from ofi_fast._ofi import _set_block, _set_lanes  # noqa: E402


class blocks_of:
    """Run the batch kernels in blocks of ``n`` events inside the ``with`` (and the vector
    pass with ``lanes`` events per step: 2, or 4 where the CPU has AVX2)."""

    def __init__(self, n, lanes=4):
        self.n = n
        self.lanes = lanes

    def __enter__(self):
        self.old = _set_block(self.n)
        self.old_lanes = _set_lanes(self.lanes)

    def __exit__(self, *exc):
        _set_block(self.old)
        _set_lanes(4 if self.old_lanes == 4 else 2)


def _singles(o, ts, bp, bs, ap, az):
    """e and the rolling value per event through update (the one-event path), up to the
    first error, and that error as (type, field, index)."""
    es, vs = [], []
    for i in range(len(ts)):
        try:
            es.append(o.update(ts[i], bp[i], bs[i], ap[i], az[i]))
        except ofi_fast.OFIError as exc:
            return es, vs, (type(exc), exc.field, i)
        vs.append(o.value)
    return es, vs, None


def _state(o):
    return (o.value, o.total, o.count, o.n_events, o.n_crossed, o.n_locked, o.capacity)


@given(quote_streams(), st.integers(1, 60), st.sampled_from([1, 2, 3, 7, 1024]),
       st.sampled_from([{}, {"window": 1}, {"window": 4}, {"window_time": 1},
                        {"window_time": 1500},
                        {"window_time": 1500, "capacity": 3, "grow": True},
                        {"window_time": 800, "capacity": 5}]),
       st.integers(-1, 130), st.sampled_from([np.nan, -1.0, np.inf]), st.sampled_from([2, 4]))
def test_blocks_match_the_one_event_path_bit_for_bit(stream, chunk, block, kind, bad_at,
                                                     bad_value, lanes):
    # Any block size, chunking and window kind (time windows whose ring fills up take the
    # one-event path for a block, with or without growing): e, the rolling values, the final
    # state and the first error (field and index, a bad size or a backwards ts) are those of
    # the one-event path.
    ts, bp, bs, ap, az = (a.copy() for a in stream)
    if 0 <= bad_at < len(ts):
        if bad_value == -1.0 and bad_at > 0:
            ts[bad_at] = ts[bad_at - 1] - 1
        else:
            bs[bad_at] = bad_value
    one = ofi_fast.OFI(**kind)
    singles, rolled, err1 = _singles(one, ts, bp, bs, ap, az)
    many = ofi_fast.OFI(**kind)
    es, vs, err2 = [], [], None
    with blocks_of(block, lanes):
        for s in range(0, len(ts), chunk):
            sl = slice(s, s + chunk)
            try:
                e, v = many.update_many(ts[sl], bp[sl], bs[sl], ap[sl], az[sl], rolling=True)
            except ofi_fast.OFIError as exc:
                err2 = (type(exc), exc.field, s + exc.index)
                break
            es += e.tolist()
            vs += v.tolist()
    assert err1 == err2
    if err1 is None:
        assert es == singles and vs == rolled      # == on floats: bit for bit
    assert _state(many) == _state(one)


@given(quote_streams(), st.integers(1, 60), st.sampled_from([1, 3, 7, 1024]),
       st.sampled_from([{}, {"window": 4}, {"window_time": 1500}]), st.booleans(),
       st.sampled_from([2, 4]))
def test_without_rolling_values_the_state_is_the_one_event_paths(stream, chunk, block, kind,
                                                                  with_ts, lanes):
    # update_many without rolling=True runs pass 1 without storing the per-event totals
    # (ofi_um_total / ofi_l1_pairs_total): e and the final state (total, counts, window sum)
    # are still those of the one-event path, bit for bit, with and without ts.
    ts, bp, bs, ap, az = stream
    with_ts = with_ts or "window_time" in kind
    one = ofi_fast.OFI(**kind)
    singles, _, err = _singles(one, ts if with_ts else np.zeros_like(ts), bp, bs, ap, az)
    if err is not None:
        return
    many = ofi_fast.OFI(**kind)
    es = []
    with blocks_of(block, lanes):
        for s in range(0, len(ts), chunk):
            sl = slice(s, s + chunk)
            es += many.update_many(ts[sl] if with_ts else None, bp[sl], bs[sl], ap[sl],
                                   az[sl]).tolist()
    assert es == singles and _state(many) == _state(one)


SPECIAL_PX = [100.0, 99.0, 101.0, np.nan, np.inf, -np.inf]
SPECIAL_SZ = [0.0, -0.0, 3.0, -1.0, -5e-324, 5e-324, np.inf, np.nan]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9])
@pytest.mark.parametrize("side", ["bid", "ask"])
@pytest.mark.parametrize("lanes", [2, 4])
def test_every_special_value_in_every_lane_is_judged_like_update(n, side, lanes):
    # One row k of n carries a special (price, size); all other rows are plain quotes. The
    # vector pass (2 or 4 events per step: n up to 9 puts k in every lane of the steps and
    # in the tail) must accept exactly what the one-event check accepts, compute the same e,
    # and the error must name the same field and index.
    with blocks_of(1024, lanes):
        _every_special_value(n, side)


def _every_special_value(n, side):
    for k in range(n):
        for px in SPECIAL_PX:
            for sz in SPECIAL_SZ:
                bp = np.full(n, 100.0)
                bs = np.arange(1.0, n + 1)
                ap = np.full(n, 101.0)
                az = np.arange(2.0, n + 2)
                if side == "bid":
                    bp[k], bs[k] = px, sz
                else:
                    ap[k], az[k] = px + 1, sz
                ts = np.arange(n)
                expect, _, err = _singles(ofi_fast.OFI(), ts, bp, bs, ap, az)
                try:
                    got, got_err = ofi_fast.l1_ofi(bp, bs, ap, az).tolist(), None
                except ofi_fast.OFIError as exc:
                    got, got_err = None, (type(exc), exc.field, exc.index)
                assert got_err == err, (k, px, sz)
                if err is None:
                    assert np.array_equal(np.array(got), np.array(expect)), (k, px, sz)
                    # signed zeros too: the same bits
                    assert np.array(got).view(np.int64).tolist() == \
                        np.array(expect).view(np.int64).tolist()


@given(quote_streams(), st.integers(1, 60), st.sampled_from([2, 7, 16, 1024]),
       st.sampled_from([5, 16, 37, 1024, 1500]), st.booleans(), st.integers(-1, 130),
       st.sampled_from([np.nan, -1.0, np.inf]))
def test_count_window_in_the_vector_pass_matches_the_one_event_path(
        stream, chunk, block, window, with_ts, bad_at, bad_value):
    # A count window at least as long as the block is summed in the vector pass and written
    # to the ring only once the block is valid (hi - lo <= capacity): blocks that fill the
    # ring, that start full, that switch from filling to full inside the block, whose ring
    # wraps, with ts or without (the ring keeps the last ts), and a bad row inside such a
    # block, which must leave the window as the one-event path leaves it (not the fused
    # pass's values). Windows shorter than the block take the two-pass path: both agree.
    ts, bp, bs, ap, az = (a.copy() for a in stream)
    if 0 <= bad_at < len(ts):
        if bad_value == -1.0 and bad_at > 0 and with_ts:
            ts[bad_at] = ts[bad_at - 1] - 1
        else:
            bs[bad_at] = bad_value
    one = ofi_fast.OFI(window=window)
    if with_ts:
        singles, rolled, err1 = _singles(one, ts, bp, bs, ap, az)
    else:
        singles, rolled, err1 = _singles(one, np.zeros_like(ts), bp, bs, ap, az)
    many = ofi_fast.OFI(window=window)
    es, vs, err2 = [], [], None
    with blocks_of(block):
        for s in range(0, len(ts), chunk):
            sl = slice(s, s + chunk)
            try:
                e, v = many.update_many(ts[sl] if with_ts else None, bp[sl], bs[sl], ap[sl],
                                        az[sl], rolling=True)
            except ofi_fast.OFIError as exc:
                err2 = (type(exc), exc.field, s + exc.index)
                break
            es += e.tolist()
            vs += v.tolist()
    assert err1 == err2
    if err1 is None:
        assert es == singles and vs == rolled      # == on floats: bit for bit
    assert _state(many) == _state(one)
    # the window's contents: the next events leave it exactly as they do the reference's
    tail = [(100.0 + k % 3, 1.0 + k, 101.0 + k % 2, 2.0 + k) for k in range(window + 3)]
    last = int(ts.max()) if (with_ts and len(ts)) else 0
    for k, row in enumerate(tail):
        t = last + k if with_ts else 0
        assert many.update(t, *row) == one.update(t, *row)
        assert many.value == one.value
    def roll(o):      # the ring's contents and sums, arrays as lists
        r = pickle.loads(pickle.dumps(o)).__reduce__()[2]["roll"]
        r = r.items() if isinstance(r, dict) else enumerate(r)
        return [(k, x.tolist() if isinstance(x, np.ndarray) else x) for k, x in r]
    assert roll(many) == roll(one)
