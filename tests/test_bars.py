"""Clock bars: labelling, empty bars, boundaries (THEORY-DETAIL test vector H), reference."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ofi_fast
from ofi_fast import reference as ref


def test_vector_h_left_closed():
    # THEORY-DETAIL 8.2, events (time, e_n) with Delta = 10 s (times in ms here)
    ts = [500, 3000, 9990, 10000, 15000, 31000]
    e = [0, 5, 4, 11, -8, -4]
    b = ofi_fast.bars(ts, e, every=10_000)
    assert b.start.tolist() == [0, 10_000, 20_000, 30_000]
    assert b.sum.tolist() == [9, 3, 0, -4]          # the event at exactly 10.0 s opens bar 1
    assert b.count.tolist() == [3, 2, 0, 1]
    assert b.first.tolist()[:2] == [0, 11] and np.isnan(b.first[2])
    assert b.last.tolist()[:2] == [4, -8] and np.isnan(b.last[2])


def test_negative_timestamps_floor():
    b = ofi_fast.bars([-15, -10, -1, 0], [1.0, 2.0, 3.0, 4.0], every=10)
    assert b.start.tolist() == [-20, -10, 0]
    assert b.sum.tolist() == [1.0, 5.0, 4.0]


def test_errors():
    with pytest.raises(ofi_fast.TimeOrderError) as ei:
        ofi_fast.bars([0, 5, 3], [1.0, 1.0, 1.0], every=2)
    assert (ei.value.field, ei.value.index) == ("ts", 2)
    with pytest.raises(ofi_fast.NonFiniteError) as ei:
        ofi_fast.bars([0, 5], [1.0, np.inf], every=2)
    assert (ei.value.field, ei.value.index) == ("values", 1)
    with pytest.raises(ofi_fast.OFIError, match="every"):
        ofi_fast.bars([0], [1.0], every=0)
    with pytest.raises(ofi_fast.OFIError, match="max_bars"):
        ofi_fast.bars([0, 10**15], [1.0, 1.0], every=1)
    assert len(ofi_fast.bars([], [], every=5)) == 0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(-50, 50)), min_size=1, max_size=100),
       st.integers(1, 25), st.integers(-1000, 1000))
def test_differential(steps, every, t0):
    ts = t0 + np.cumsum([s[0] for s in steps])
    vals = [float(s[1]) for s in steps]
    b = ofi_fast.bars(ts, vals, every=every)
    r = ref.bars(ts.tolist(), vals, every=every)
    assert b.start.tolist() == r["start"] and b.sum.tolist() == r["sum"]
    assert b.count.tolist() == r["count"]
    assert [None if np.isnan(x) else x for x in b.first] == r["first"]
    assert [None if np.isnan(x) else x for x in b.last] == r["last"]
    assert b.count.sum() == len(ts)
