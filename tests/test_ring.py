"""Ring buffers and rolling sums: windows, capacity, drift over long streams, pickling."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import special_rows
import ofi_fast
from ofi_fast import errors
from ofi_fast import reference as ref


def test_status_codes_mirror_types_pxd():
    codes = ofi_fast._ring._status_codes()
    assert codes == {k: getattr(errors, k) for k in codes}
    assert len(set(codes.values())) == len(codes)


def test_count_window():
    r = ofi_fast.RollingSum(window=3)
    assert [r.update(0, v) for v in (1.0, 2.0, 3.0, 4.0)] == [1.0, 3.0, 6.0, 9.0]
    assert r.count == 3 and r.capacity == 3


def test_time_window_half_open():
    r = ofi_fast.RollingSum(window_time=10)
    r.update(0, 1.0)
    r.update(9, 2.0)
    assert r.update(10, 4.0) == 6.0   # ts=0 is not in (0, 10]
    assert r.update(19, 8.0) == 12.0  # window (9, 19]
    assert r.update(100, 0.5) == 0.5 and r.count == 1


def test_whole_stream_without_window():
    r = ofi_fast.RollingSum()
    r.update_many(None, np.arange(100.0))
    assert r.value == 4950.0


def test_capacity_error_and_growth():
    r = ofi_fast.RollingSum(window_time=100, capacity=4)
    r.update_many(np.arange(4), np.ones(4))
    with pytest.raises(ofi_fast.CapacityError) as ei:
        r.update_many([4, 5], [1.0, 1.0])
    assert ei.value.needed == 5 and ei.value.index == 0 and "5 slots" in str(ei.value)
    assert r.value == 4.0 and r.count == 4
    g = ofi_fast.RollingSum(window_time=100, capacity=4, grow=True)
    g.update_many(np.arange(50), np.ones(50))
    assert g.value == 50.0 and g.capacity == 64


@pytest.mark.parametrize("grow", [False, True])
def test_full_ring_has_room_exactly_when_the_oldest_leaves(grow):
    # window (t - 100, t]: with the ring full, a push at oldest + 100 evicts the oldest first
    # (no error, no growth); at oldest + 99 nothing leaves, so it needs a fifth slot. Both the
    # streaming push and the batch path, against the reference.
    for push in ("update", "update_many"):
        r = ofi_fast.RollingSum(window_time=100, capacity=4, grow=grow)
        q = ref.RollingSum(window_time=100)
        for t in (10, 20, 30, 40):
            r.update(t, 1.0)
            q.update(t, 1.0)
        if push == "update":
            r.update(110, 2.0)
        else:
            r.update_many([110], [2.0])
        q.update(110, 2.0)
        assert (r.value, r.count, r.capacity) == (q.value, 4, 4)
        if grow:
            r.update(119, 1.0)
            assert (r.count, r.capacity) == (5, 8)
        else:
            with pytest.raises(ofi_fast.CapacityError):
                r.update(119, 1.0)
            assert (r.value, r.count) == (q.value, 4)


# Every windowed state reserves its slot the same way (window_reserve / window_room in
# _ring.pxd): (make(grow), push one event at t, events held).
_WINDOW_OWNERS = {
    "TradeFlow": (lambda g: ofi_fast.TradeFlow(window_time=100, capacity=4, grow=g),
                  lambda o, t: o.update(t, 10.0, 1.0, 1), lambda o: o.count),
    "RollingOLS": (lambda g: ofi_fast.RollingOLS(window_time=100, capacity=4, grow=g),
                   lambda o, t: o.update(float(t % 7), float(t % 5), ts=t), lambda o: o.n),
    "MultiLevelOFI": (lambda g: ofi_fast.MultiLevelOFI(1, window_time=100, capacity=4, grow=g),
                      lambda o, t: o.update(t, [10.0], [float(t)], [11.0], [1.0]),
                      lambda o: o.count),
}


@pytest.mark.parametrize("grow", [False, True])
@pytest.mark.parametrize("owner", sorted(_WINDOW_OWNERS))
def test_every_window_owner_has_room_exactly_when_the_oldest_leaves(owner, grow):
    # as above, for the other states with a time window: full at 10..40, an event at 110
    # evicts 10 (no growth), one at 119 evicts nothing and needs a fifth slot
    make, push, held = _WINDOW_OWNERS[owner]
    o = make(grow)
    for t in (10, 20, 30, 40, 110):
        push(o, t)
    assert held(o) == 4
    if grow:
        push(o, 119)
        assert held(o) == 5
    else:
        with pytest.raises(ofi_fast.CapacityError) as ei:
            push(o, 119)
        assert ei.value.field == "ts" and held(o) == 4
        push(o, 120)                     # 20 leaves: room again, nothing was lost
        assert held(o) == 4


def test_bad_input_keeps_state():
    r = ofi_fast.RollingSum(window=5)
    with pytest.raises(ofi_fast.NonFiniteError) as ei:
        r.update_many([0, 1, 2], [1.0, np.nan, 2.0])
    assert (ei.value.field, ei.value.index) == ("values", 1)
    assert r.value == 1.0 and r.count == 1
    with pytest.raises(ofi_fast.TimeOrderError):
        r.update_many([5, 4], [1.0, 1.0])
    assert r.value == 2.0 and r.count == 2


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(-1000, 1000)), max_size=150),
       st.sampled_from([(None, None), (1, None), (7, None), (None, 1), (None, 40)]),
       st.integers(1, 40))
def test_differential_against_reference(steps, win, chunk):
    ts = np.cumsum([s[0] for s in steps]).astype(np.int64)
    vals = np.array([s[1] / 8 for s in steps])  # exact binary fractions: sums are exact
    window, window_time = win
    expect = ref.RollingSum(window, window_time)
    expected = [expect.update(int(t), float(v)) for t, v in zip(ts, vals)]
    one = ofi_fast.RollingSum(window, window_time)
    assert [one.update(int(t), float(v)) for t, v in zip(ts, vals)] == expected
    many = ofi_fast.RollingSum(window, window_time)
    got = []
    for s in range(0, len(ts), chunk):
        got += many.update_many(ts[s:s + chunk], vals[s:s + chunk]).tolist()
    assert got == expected
    assert many.count == one.count == expect.count


def test_no_drift_over_ten_million_pushes():
    # Neumaier compensation through adds and removals: after 1e7 pushes of random sizes with
    # wildly different magnitudes the window sum equals an exact fsum of the window.
    rng = np.random.default_rng(0)
    n, w = 10_000_000, 1000
    vals = rng.lognormal(0.0, 3.0, n)  # sizes from ~1e-4 to ~1e5
    r = ofi_fast.RollingSum(window=w)
    r.update_many(None, vals, out=np.empty(n))
    exact = math.fsum(vals[-w:])
    assert abs(r.value - exact) <= 1e-9 * exact
    # One huge value passing through the window: a plain add/subtract sum keeps the rounding
    # error of adding it (~1) after it has left; the compensated sum does not.
    spike = vals[:5000].copy()
    spike[100] = 1e16
    t = ofi_fast.RollingSum(window=w)
    t.update_many(None, spike)
    exact = math.fsum(spike[-w:])
    assert abs(t.value - exact) <= 1e-9 * exact
    naive = 0.0
    for i, v in enumerate(spike):
        naive += v
        if i >= w:
            naive -= spike[i - w]
    assert abs(naive - exact) > 1e-6 * exact  # the check above is one a plain sum fails


def test_time_window_no_drift_long_stream():
    rng = np.random.default_rng(1)
    n = 2_000_000
    ts = np.cumsum(rng.integers(0, 3, n)).astype(np.int64)
    vals = rng.lognormal(0.0, 3.0, n)
    r = ofi_fast.RollingSum(window_time=500)
    r.update_many(ts, vals)
    inside = vals[ts > ts[-1] - 500]
    assert r.count == len(inside)
    assert abs(r.value - math.fsum(inside)) <= 1e-9 * math.fsum(inside)


def test_recompute_and_reset():
    r = ofi_fast.RollingSum(window=3)
    r.update_many(None, [1e16, 1.0, -1e16, 3.0])
    r.recompute()
    assert r.value == math.fsum([1.0, -1e16, 3.0])
    r.reset()
    assert r.value == 0.0 and r.count == 0


@given(st.integers(0, 60))
def test_pickle_continues(cut):
    rng = np.random.default_rng(cut)
    ts = np.cumsum(rng.integers(0, 5, 60)).astype(np.int64)
    vals = rng.normal(size=60)
    a = ofi_fast.RollingSum(window_time=12, capacity=8, grow=True)
    a.update_many(ts[:cut], vals[:cut])
    b = pickle.loads(pickle.dumps(a))
    assert a.update_many(ts[cut:], vals[cut:]).tolist() == b.update_many(ts[cut:],
                                                                           vals[cut:]).tolist()
    assert (a.count, a.capacity) == (b.count, b.capacity)


def _neumaier_branchy(s, c, x):
    """Neumaier's step as published (Neumaier 1974): the branch on the magnitudes."""
    t = s + x
    c += (s - t) + x if abs(s) >= abs(x) else (x - t) + s
    return t, c


@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)
                | st.sampled_from([0.0, -0.0, 1e-300, -1e16, 1e16, 3.0, 5e-324]),
                min_size=1, max_size=60))
def test_twosum_step_equals_neumaiers_branch_bit_for_bit(xs):
    # neumaier_add computes the rounding error of s + x by TwoSum (no comparison); it is the
    # exact error, as is Neumaier's branch, so (sum, comp) agree to the last bit.
    r = ofi_fast.RollingSum()
    s = c = 0.0
    for i, x in enumerate(xs):
        r.update(i, x)
        s, c = _neumaier_branchy(s, c, x)
        st_ = r.__reduce__()[2]
        assert (math.copysign(1, st_["sum"]), st_["sum"], math.copysign(1, st_["comp"]),
                st_["comp"]) == (math.copysign(1, s), s, math.copysign(1, c), c)


# ---- RollingSum.update_many's block kernels (issue 13, helper trades3) ----------------------
RS_BLOCK = 1024
RS_WINDOWS = [dict(), dict(window=1), dict(window=3), dict(window=1500), dict(window_time=5),
              dict(window_time=5, capacity=4, grow=True)]


def _rs_bits(x):
    return np.asarray(x, dtype=np.float64).view(np.int64).tolist()


def _rs_state(r):
    # the pickled state, floats by their repr (exact, -0.0 kept) and float arrays by their bits
    d = r.__reduce__()[2]
    return sorted((k, _rs_bits(v) if isinstance(v, np.ndarray) and v.dtype == np.float64
                   else repr(v)) for k, v in d.items())


def _rs_one_by_one(kw, ts, v):
    r = ofi_fast.RollingSum(**kw)
    out, err = [], None
    for i in range(len(v)):
        try:
            out.append(r.update(int(ts[i]), float(v[i])))
        except errors.OFIError as exc:
            err = (type(exc), exc.field, i)
            break
    return r, out, err


@pytest.mark.parametrize("kw", RS_WINDOWS, ids=str)
def test_rolling_kernels_across_blocks_bit_for_bit(kw):
    # float values over 7 decades of both signs, 3 blocks, chunks that cut blocks anywhere:
    # update_many == update one by one, to the bit, state included
    rng = np.random.default_rng(17)
    n = 3 * RS_BLOCK + 55
    ts = np.cumsum(rng.integers(0, 3, n)).astype(np.int64)
    v = (rng.random(n) - 0.5) * 10.0 ** rng.integers(-3, 4, n)
    one, want, err = _rs_one_by_one(kw, ts, v)
    assert err is None
    for cuts in ([n], [1, 1023, 1, 2000, n], [RS_BLOCK - 1, 2, 5000]):
        r, got, i = ofi_fast.RollingSum(**kw), [], 0
        for c in cuts:
            j = min(n, i + c)
            got += r.update_many(ts[i:j], v[i:j]).tolist()
            i = j
            if i == n:
                break
        assert _rs_bits(got) == _rs_bits(want), cuts
        assert _rs_state(r) == _rs_state(one) and r.count == one.count, cuts
    if "window_time" not in kw:
        r = ofi_fast.RollingSum(**kw)                  # no ts: every push at the last ts
        assert _rs_bits(r.update_many(None, v)) == _rs_bits(want)


RS_SPECIAL = [("values", math.nan, 0), ("values", math.inf, 0), ("values", -math.inf, 0),
              (None, -0.0, 0), (None, 5e-324, 0), (None, -1e308, 0), ("ts", None, -1)]


@pytest.mark.parametrize("kw", [dict(), dict(window=3), dict(window_time=4)], ids=str)
def test_every_special_value_in_every_lane_is_judged_like_update(kw):
    # one element k carries a special value or goes back in time: update_many applies exactly
    # the elements before it (same bits, same state), names field and index, and goes on alike
    n = RS_BLOCK + 6
    rng = np.random.default_rng(4)
    base_ts = np.cumsum(rng.integers(1, 3, n)).astype(np.int64)
    base_v = rng.random(n) * 10.0
    for k, field, (x,), ts, (v,) in special_rows(
            (0, 1, 2, 7, 511, RS_BLOCK - 1, RS_BLOCK, RS_BLOCK + 1, n - 1), RS_SPECIAL, base_ts,
            base_v):
        one, want, err1 = _rs_one_by_one(kw, ts, v)
        assert (err1 is None) == (field is None), (k, field)
        r = ofi_fast.RollingSum(**kw)
        out = np.full(n, 7.0)
        try:
            r.update_many(ts, v, out=out)
            err = None
        except errors.OFIError as exc:
            err = (type(exc), exc.field, exc.index)
        if err1 is not None:
            err1 = (err1[0], "values" if err1[1] == "value" else err1[1], err1[2])
        assert err == err1, (k, field, x)
        assert _rs_bits(out[:len(want)]) == _rs_bits(want), (k, field)
        assert _rs_state(r) == _rs_state(one), (k, field)
        t_next = int(ts.max()) + 3
        assert _rs_bits(r.update_many([t_next], [2.5])) == _rs_bits([one.update(t_next, 2.5)])


# --- ring4: the shared strided ring's primitives against a deque model -------------------------
from collections import deque  # noqa: E402

from ofi_fast._ring import _RingProbe  # noqa: E402

_ops = st.one_of(
    st.tuples(st.just("push"), st.integers(-2**40, 2**40), st.integers(-128, 127)),
    st.tuples(st.just("pop")),
    st.tuples(st.just("grow"), st.integers(0, 12)),
    st.tuples(st.just("load"), st.integers(0, 12)),
)


@given(st.integers(1, 6), st.integers(1, 4), st.booleans(), st.lists(_ops, max_size=120))
def test_strided_ring_primitives_behave_like_a_deque(capacity, width, tagged, ops):
    # The model: a bounded deque of (ts, row, tag). Rows are derived from ts so that a slot
    # mixed up with another (wrong stride, wrong wrap, tag of another slot) shows.
    ring = _RingProbe(capacity, width, tagged)
    model = deque()
    cap = capacity
    for op in ops:
        if op[0] == "push":
            ts, tag = op[1], op[2]
            row = [ts * 0.5 + k for k in range(width)]
            ok = ring.push(ts, row, tag)
            assert ok == (len(model) < cap)
            if ok:
                model.append((ts, row, tag if tagged else None))
        elif op[0] == "pop":
            if model:
                assert ring.pop() == model.popleft()
            else:
                with pytest.raises(IndexError):
                    ring.pop()
        elif op[0] == "grow":
            ok = ring.grow(op[1])
            assert ok == (op[1] >= max(len(model), 1))
            if ok:
                cap = op[1]
                assert ring.head == 0       # grow unrolls the ring to start at slot 0
        else:  # load: replace the contents from contiguous arrays (the setstate path)
            n = min(op[1], cap)
            ts = np.arange(n, dtype=np.int64) * 7 - 3
            val = np.array([[t * 0.5 + k for k in range(width)] for t in ts]).reshape(n, width)
            tg = (np.arange(n) % 3 - 1).astype(np.int8)
            ring.load(ts, val, tg)
            model = deque((int(t), list(v), (int(g) if tagged else None))
                          for t, v, g in zip(ts, val, tg))
        assert ring.size == len(model) and ring.capacity == cap
        assert 0 <= ring.head < cap
        ts, val, tg = ring.contents()
        assert ts.tolist() == [m[0] for m in model]
        assert val.shape == (len(model), width)
        assert val.tolist() == [m[1] for m in model]
        if tagged:
            assert tg.tolist() == [m[2] for m in model]
        else:
            assert tg is None


def test_strided_ring_refuses_impossible_sizes():
    with pytest.raises(ValueError, match="width"):
        _RingProbe(4, 0)
    with pytest.raises(ValueError, match="capacity"):
        _RingProbe(0, 2)
    with pytest.raises(ValueError, match="capacity"):
        _RingProbe(2**61, 4, True)     # 2**61 slots of 41 bytes overflow
    r = _RingProbe(2, 3, True)
    assert not r.grow(2**62)            # a grow that overflows fails, the ring is unchanged
    assert r.push(5, [1.0, 2.0, 3.0], -1) and r.capacity == 2
    assert r.pop() == (5, [1.0, 2.0, 3.0], -1)


def test_width_one_ring_is_the_rolling_sums_ring():
    # width 1, no tag: RollingSum's ring behaves as before (grow keeps order across the wrap)
    from ofi_fast import RollingSum
    rs = RollingSum(window_time=100, capacity=2, grow=True)
    for t, x in [(0, 1.0), (10, 2.0), (20, 4.0), (30, 8.0), (200, 16.0), (205, 32.0)]:
        rs.update(t, x)
    assert rs.capacity == 4 and rs.count == 2 and rs.value == 48.0
