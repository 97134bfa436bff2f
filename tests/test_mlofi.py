"""Multi-level OFI (Xu, Gould & Howison 2018), depth-normalised and integrated OFI (Cont,
Cucuringu & Zhang 2023): THEORY-DETAIL vectors B and C, differential tests against
reference.MultiLevelOFI, bad input, pickling, LOBSTER vector A'."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ofi_fast import reference as ref
from ofi_fast._ofi import MultiLevelOFI, integrated_weights, l1_ofi, mlofi
from ofi_fast.errors import CapacityError, NonFiniteError, OFIError, TimeOrderError

from conftest import data_file

INF = math.inf

# Test vector B (THEORY-DETAIL 2.4): M = 2, three states, levels by rank
B_BP = [[100, 99], [100, -INF], [101, 100]]
B_BS = [[10, 6], [14, 0], [5, 14]]
B_AP = [[101, 102], [101, 103], [102, 103]]
B_AS = [[12, 9], [12, 4], [4, 4]]


def test_vector_b():
    e = mlofi(B_BP, B_BS, B_AP, B_AS)
    assert e.tolist() == [[0, 0], [4, 3], [17, 14]]
    m = MultiLevelOFI(2)
    for i in range(3):
        m.update(i, B_BP[i], B_BS[i], B_AP[i], B_AS[i])
    assert m.values.tolist() == [21, 17]
    assert ref.mlofi(B_BP, B_BS, B_AP, B_AS) == [[0, 0], [4, 3], [17, 14]]
    # NaN and LOBSTER's dummy price for the empty level give the same flows
    for empty in (np.nan, -9999999999):
        bp = np.array(B_BP, dtype=float)
        bp[1, 1] = empty
        assert mlofi(bp, B_BS, B_AP, B_AS).tolist() == e.tolist()
    # level 1 equals the best-level OFI
    assert np.array_equal(e[:, 0], l1_ofi(np.array(B_BP)[:, 0], np.array(B_BS)[:, 0],
                                          np.array(B_AP)[:, 0], np.array(B_AS)[:, 0]))


def test_hand_cases_empty_appear_and_shift():
    # ask level 2 empties then reappears deeper; bid level 2 shifts price down
    bp = [[100, 99], [100, 98], [100, 98]]
    bs = [[5, 7], [5, 3], [5, 3]]
    ap = [[101, 102], [101, np.nan], [101, 104]]
    az = [[5, 8], [5, 0], [5, 6]]
    e = mlofi(bp, bs, ap, az)
    # n=1: bid L2 price down -> -7; ask L2 empties (price up to +inf) -> +8
    # n=2: ask L2 appears at 104 (price down from +inf) -> -6
    assert e.tolist() == [[0, 0], [0, 1], [0, -6]]


def vector_c_stream():
    # event 0 sets the previous state; events 1 and 2 are THEORY-DETAIL 3.5's interval
    bp = [[100, 99]] * 3
    ap = [[101, 102]] * 3
    bs = [[10, 23], [10, 20], [14, 20]]
    az = [[12, 18], [12, 18], [8, 18]]
    return bp, bs, ap, az


def test_vector_c_depth_and_integrated():
    m = MultiLevelOFI(2, window=2, weights=[0.8, 0.6])
    m.update_many([0, 1, 2], *vector_c_stream())
    assert m.values.tolist() == [8, -3]
    assert m.depth == 15.0
    assert m.normalized == pytest.approx([8 / 15, -0.2], abs=1e-15)
    assert m.weights == pytest.approx([4 / 7, 3 / 7], abs=1e-15)
    assert m.integrated == pytest.approx(4.6 / 21, abs=1e-15)
    r = ref.MultiLevelOFI(2, window=2, weights=[0.8, 0.6])
    r.update_many([0, 1, 2], *vector_c_stream())
    assert r.depth == 15.0 and r.integrated == pytest.approx(m.integrated, abs=1e-15)
    # no events -> depth 0, normalized 0 (never a division by zero)
    empty = MultiLevelOFI(2, window=2)
    assert empty.depth == 0.0 and empty.normalized.tolist() == [0, 0]
    assert math.isnan(empty.integrated)


def test_vector_c_pca():
    sample = [(2, 1), (-2, -1), (1, 2), (-1, -2)]
    w, ratio = integrated_weights(sample)
    assert w == pytest.approx([0.5, 0.5], abs=1e-12)
    assert ratio == pytest.approx(0.9, abs=1e-12)
    assert np.asarray(sample) @ w == pytest.approx([1.5, -1.5, 1.5, -1.5], abs=1e-12)
    rw, rratio = ref.integrated_weights(sample)
    assert rw == pytest.approx(w, abs=1e-9) and rratio == pytest.approx(ratio, abs=1e-9)
    # the sign is fixed so that sum(w) > 0 whatever the eigen-solver returns
    w2, _ = integrated_weights(-np.asarray(sample, float)[:, ::-1])
    assert w2.sum() > 0
    m = MultiLevelOFI(2)
    m.fit(sample)
    assert m.weights == pytest.approx([0.5, 0.5]) and m.explained_variance_ratio == \
        pytest.approx(0.9)
    with pytest.raises(OFIError):
        integrated_weights([[1, 1], [1, 1]])


@given(st.integers(0, 2**32 - 1), st.integers(1, 30))
def test_pca_matches_reference(seed, n):
    rng = np.random.default_rng(seed)
    L = 3
    x = rng.normal(size=(n + 2, L)) @ np.diag([3.0, 1.0, 0.3]) + rng.normal(size=(1, L))
    w, ratio = integrated_weights(x)
    rw, rratio = ref.integrated_weights(x.tolist())
    assert abs(np.abs(w).sum() - 1) < 1e-12 and w.sum() >= 0
    vals = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    if vals[-1] - vals[-2] > 1e-3 * vals[-1] and abs(w.sum()) > 1e-6:  # well-separated PC1
        assert np.allclose(w, rw, atol=1e-6) and ratio == pytest.approx(rratio, rel=1e-6)


# ------------------------------------------------------------------ differential
def random_top_states(rng, n, L, p_empty=0.1):
    """(ts, bid_px, bid_sz, ask_px, ask_sz) (n, L) top-L states of a random delta book."""
    book = ref.Book(1.0, crossed="keep")
    out = [[], [], [], []]
    mid = 1000
    for _ in range(n):
        for _ in range(rng.integers(1, 4)):
            mid += int(rng.integers(-1, 2))
            side = int(rng.choice([1, -1]))
            px = mid - side * int(rng.integers(1, 2 * L))
            sz = 0.0 if rng.random() < 0.3 + p_empty else float(rng.integers(1, 30))
            book.apply(side, px, sz)
        for k, a in enumerate(book.top(L)):
            out[k].append(a)
    ts = np.cumsum(rng.integers(0, 5, n)).astype(np.int64)
    return (ts,) + tuple(np.array(a, dtype=float).reshape(n, L) for a in out)


WINDOWS = [{}, {"window": 1}, {"window": 4}, {"window_time": 7, "capacity": 64},
           {"window_time": 3, "capacity": 2, "grow": True}]


@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 5),
       st.sampled_from(WINDOWS), st.integers(1, 20))
def test_streaming_batch_chunks_reference(seed, n, L, kw, chunk):
    rng = np.random.default_rng(seed)
    ts, bp, bs, ap, az = random_top_states(rng, n, L)
    a = MultiLevelOFI(L, **kw)
    b = MultiLevelOFI(L, **kw)
    r = ref.MultiLevelOFI(L, **kw)
    ea = np.array([a.update(ts[i], bp[i], bs[i], ap[i], az[i]) for i in range(n)])
    parts = []
    for s in range(0, n, chunk):
        e, v = b.update_many(ts[s:s + chunk], bp[s:s + chunk], bs[s:s + chunk],
                             ap[s:s + chunk], az[s:s + chunk], rolling=True)
        parts.append(e)
    eb = np.concatenate(parts)
    er = np.array(r.update_many(ts, bp.tolist(), bs.tolist(), ap.tolist(), az.tolist()))
    assert np.array_equal(ea, eb) and np.array_equal(ea, er)     # integer sizes: exact
    assert np.array_equal(v[-1], b.values)
    assert a.values.tolist() == b.values.tolist() == r.values
    assert a.total.tolist() == r.total
    assert a.count == b.count == r.count
    assert a.depth == pytest.approx(r.depth, rel=1e-15)
    assert a.normalized == pytest.approx(r.normalized, rel=1e-12)
    if kw == {}:
        assert np.array_equal(eb, mlofi(bp, bs, ap, az))


def _two_sum(s, c, x):
    """neumaier_add of _ring.pxd in Python floats (the same IEEE operations)."""
    t = s + x
    z = t - s
    return t, c + ((s - (t - z)) + (x - z))


@pytest.mark.parametrize("L", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("window", [None, 3])
def test_window_sums_are_neumaier_per_level_bit_for_bit(L, window):
    """The per-level sums (two levels per vector step, the odd one alone) are exactly L + 1
    Neumaier sums, one value at a time, evictions included: sizes spread over 18 orders of
    magnitude, so the compensation terms are not zero and a changed operation shows."""
    rng = np.random.default_rng(L)
    n = 400
    ts = np.arange(n, dtype=np.int64)
    mid = 1000 + np.cumsum(rng.integers(-1, 2, n))
    bp = (mid[:, None] - 1 - np.arange(L)).astype(np.float64)
    ap = (mid[:, None] + 1 + np.arange(L)).astype(np.float64)
    bs, az = (10.0 ** rng.uniform(-2, 16, (2, n, L))).round(2)
    a = MultiLevelOFI(L, window=window)
    e = a.update_many(ts, bp, bs, ap, az)
    rows = np.column_stack([e, np.zeros(n)])                 # e_1..e_L, then the depth
    s, c = [0.0] * (L + 1), [0.0] * (L + 1)
    ts_, tc = [0.0] * (L + 1), [0.0] * (L + 1)
    for i in range(n):
        d = 0.0
        for m in range(L):
            d += bs[i, m] + az[i, m]
        rows[i, L] = d
        for m in range(L + 1):
            if window is not None and i >= window:
                s[m], c[m] = _two_sum(s[m], c[m], -rows[i - window, m])
            s[m], c[m] = _two_sum(s[m], c[m], rows[i, m])
            ts_[m], tc[m] = _two_sum(ts_[m], tc[m], rows[i, m])
    assert any(x != 0.0 for x in c[:L])                      # the compensation is used
    assert np.array_equal(a.values, [s[m] + c[m] for m in range(L)])
    assert np.array_equal(a.total, [ts_[m] + tc[m] for m in range(L)])
    count = min(n, window or n)
    assert a.depth == (s[L] + c[L]) / (2.0 * count * L)


@given(st.integers(0, 2**32 - 1), st.integers(2, 60), st.sampled_from(WINDOWS[:4]))
def test_pickle_mid_stream_continues(seed, n, kw):
    rng = np.random.default_rng(seed)
    ts, bp, bs, ap, az = random_top_states(rng, n, 3)
    a = MultiLevelOFI(3, weights=[3, 2, 1], **kw)
    k = n // 2
    a.update_many(ts[:k], bp[:k], bs[:k], ap[:k], az[:k])
    c = pickle.loads(pickle.dumps(a))
    ea = a.update_many(ts[k:], bp[k:], bs[k:], ap[k:], az[k:])
    ec = c.update_many(ts[k:], bp[k:], bs[k:], ap[k:], az[k:])
    assert np.array_equal(ea, ec)
    assert a.values.tolist() == c.values.tolist() and a.depth == c.depth
    assert a.integrated == c.integrated or (math.isnan(a.integrated) and math.isnan(c.integrated))


@given(st.integers(0, 2**32 - 1), st.integers(1, 250), st.integers(1, 4),
       st.sampled_from(["count", "time"]), st.integers(1, 40), st.integers(1, 4),
       st.integers(1, 50))
def test_ring_wraps_and_grows_like_the_reference(seed, n, L, kind, win, cap, chunk):
    """The window's ring (count window: wraps every `win` events; time window from `cap` slots
    with grow=True: several doublings, each while it has wrapped) holds exactly the reference's
    events, oldest first, with the same capacity; the windowed values match event by event,
    and a pickle taken after the last chunk holds the same ring."""
    rng = np.random.default_rng(seed)
    ts, bp, bs, ap, az = random_top_states(rng, n, L)
    kw = ({"window": win} if kind == "count"
          else {"window_time": win, "capacity": cap, "grow": True})
    a = MultiLevelOFI(L, **kw)
    r = ref.MultiLevelOFI(L, **kw)
    for s in range(0, n, chunk):
        e, v = a.update_many(ts[s:s + chunk], bp[s:s + chunk], bs[s:s + chunk],
                             ap[s:s + chunk], az[s:s + chunk], rolling=True)
        for i in range(s, min(n, s + chunk)):
            assert e[i - s].tolist() == r.update(ts[i], bp[i].tolist(), bs[i].tolist(),
                                                 ap[i].tolist(), az[i].tolist())
            win_vals = [sum(row[m] for _, row in r.items) for m in range(L)]
            assert v[i - s].tolist() == win_vals        # integer sizes: exact
    cls, args, state = a.__reduce__()
    assert state["ring_ts"].tolist() == [t for t, _ in r.items]
    assert state["ring_val"].tolist() == [row for _, row in r.items]   # e_1..e_L, depth
    assert a.count == len(r.items)
    if kind == "time":
        assert args[3] == r.capacity              # the same doublings as the reference
    c = pickle.loads(pickle.dumps(a))
    assert c.__reduce__()[2]["ring_val"].tolist() == state["ring_val"].tolist()
    assert c.values.tolist() == a.values.tolist() and c.depth == a.depth


def test_bad_input():
    m = MultiLevelOFI(2, window_time=10, capacity=4)
    m.update_many([0, 1], B_BP[:2], B_BS[:2], B_AP[:2], B_AS[:2])
    before = (m.values.tolist(), m.depth, m.count)
    bp = np.array(B_BP, float)
    bp[2, 1] = np.nan   # NaN price with size 14
    with pytest.raises(NonFiniteError) as ei:
        m.update_many([2], bp[2:], B_BS[2:], B_AP[2:], B_AS[2:])
    assert ei.value.field == "bid_px" and ei.value.index == 0 and "level 1" in str(ei.value)
    bs = np.array(B_BS, float)
    bs[2, 0] = -1
    with pytest.raises(OFIError) as ei:
        m.update(5, B_BP[2], bs[2], B_AP[2], B_AS[2])
    assert ei.value.field == "bid_sz"
    with pytest.raises(TimeOrderError) as ei:
        m.update_many([3, 0], B_BP[1:], B_BS[1:], B_AP[1:], B_AS[1:])
    assert ei.value.field == "ts" and ei.value.index == 1
    m2 = MultiLevelOFI(2, window_time=10, capacity=2)
    m2.update_many([0, 1], B_BP[:2], B_BS[:2], B_AP[:2], B_AS[:2])
    with pytest.raises(CapacityError):
        m2.update(2, B_BP[2], B_BS[2], B_AP[2], B_AS[2])
    with pytest.raises(OFIError):
        m.update_many(None, np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)),
                      np.zeros((2, 3)))
    with pytest.raises(OFIError):
        MultiLevelOFI(0)
    # the failed events left no trace; the event at ts 3 before the backwards one applied
    assert before[2] == 2 and m.count == 3 and m.n_events == 3


# ------------------------------------------------------------------ real data
def test_lobster_vector_a_prime():
    """THEORY-DETAIL A': level sums over the 999 AAPL rows -4858, -3096, -2577; rows 1-11 of
    level 1; the 61 type-5 rows give 0 at every level."""
    d = "lobster"
    ob = np.loadtxt(data_file(d, "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"),
                    delimiter=",")
    msg = np.loadtxt(data_file(d, "AAPL_2012-06-21_34200000_57600000_message_10.csv"),
                     delimiter=",")
    e = mlofi(ob[:, 2::4], ob[:, 3::4], ob[:, 0::4], ob[:, 1::4])
    assert e.shape == (999, 10)
    assert e.sum(axis=0)[:3].tolist() == [-4858, -3096, -2577]
    # rows 1-11 counted from 1 (row 1 is the first event: e = 0)
    assert e[0:11, 0].tolist() == [0, 0, 0, -18, 0, 0, 0, 0, 0, 0, 18]
    hidden = msg[:, 1] == 5
    assert hidden.sum() == 61 and not e[hidden].any()
    r = ref.mlofi(ob[:, 2::4].tolist(), ob[:, 3::4].tolist(), ob[:, 0::4].tolist(),
                  ob[:, 1::4].tolist())
    assert np.array_equal(e, np.array(r))
