"""Stoikov's micro-price: a chain with a closed-form G, symmetry, reference, streaming, pickling."""

import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ofi_fast
from ofi_fast import Microprice, reference as ref
from ofi_fast.errors import NegativeSizeError, NonFiniteError, OFIError, TimeOrderError
from ofi_fast.simulate import simulate

TICK = 0.01


def two_state_path(n, *, s, w, up0, dn0, stay_after_move, seed=0):
    """Best quotes of a two-state chain at a one-tick spread. State 0: bid 1 lot, ask 3 (I =
    1/4, bin 0 of 2); state 1 its mirror (I = 3/4). From state 0: stay (prob s) or switch (w)
    with the mid unchanged, or move the mid up (up0) / down (dn0) one tick, landing in state 0
    with probability stay_after_move. State 1 is the mirror (up and down swapped)."""
    rng = np.random.default_rng(seed)
    mid_ticks, state = 10_000, 0
    rows = []
    for _ in range(n):
        rows.append((mid_ticks, state))
        u = rng.random()
        up, dn = (up0, dn0) if state == 0 else (dn0, up0)
        if u < s:
            pass
        elif u < s + w:
            state = 1 - state
        else:
            mid_ticks += 1 if u < s + w + up else -1
            if rng.random() >= stay_after_move:
                state = 1 - state
    m = np.array([r[0] for r in rows], dtype=float)
    stt = np.array([r[1] for r in rows])
    bid_px = (m - 0.5) * TICK       # mid on the half tick, spread one tick
    ask_px = (m + 0.5) * TICK
    bid_sz = np.where(stt == 0, 1.0, 3.0)
    ask_sz = np.where(stt == 0, 3.0, 1.0)
    return np.arange(n, dtype=np.int64), bid_px, bid_sz, ask_px, ask_sz, stt, m


def closed_form(stt, mid_ticks, n_iter):
    """g(state 0) by hand. Symmetrised counts from state 0 (the originals from 0 plus the
    mirrors of those from 1): s, w the mid-unchanged stay / switch probabilities, m the mean
    first move, t00 / t01 the probabilities of a move landing in the same / other state. Then
    (1 - Q)^-1 = [[1-s, w], [w, 1-s]] / ((1-s)^2 - w^2), so G1 = m / (1 - s + w) (1, -1), and
    B (1, -1) = lam (1, -1) with lam = (t00 - t01) / (1 - s + w): g = G1_0 (1 - lam^n) /
    (1 - lam) after n iterations."""
    x, y = stt[:-1], stt[1:]
    d = np.diff(mid_ticks)                  # ticks
    same = x == y
    c0 = len(x)                             # every original transition or its mirror leaves 0
    still = d == 0
    s = np.sum(still & same) / c0
    w = np.sum(still & ~same) / c0
    m = (np.sum(d[x == 0]) - np.sum(d[x == 1])) * TICK / c0
    t00 = np.sum(~still & same) / c0
    t01 = np.sum(~still & ~same) / c0
    g1 = m / (1 - s + w)
    lam = (t00 - t01) / (1 - s + w)
    return g1 * (1 - lam ** n_iter) / (1 - lam), g1 / (1 - lam)


@pytest.mark.parametrize("n_iter", [1, 2, 6, 40])
def test_two_state_chain_closed_form(n_iter):
    ts, bp, bs, ap, as_, stt, m = two_state_path(20_000, s=0.5, w=0.2, up0=0.05, dn0=0.25,
                                                 stay_after_move=0.7)
    mp = Microprice.fit(ts, bp, bs, ap, as_, TICK, n_imbalance=2, max_spread=1, n_iter=n_iter)
    g_n, g_inf = closed_form(stt, m, n_iter)
    assert mp.table.shape == (1, 2)
    assert mp.table[0, 0] == pytest.approx(g_n, rel=1e-12, abs=1e-15)
    assert mp.table[0, 1] == -mp.table[0, 0]
    # the true chain: s=0.5, w=0.2, m=(0.05-0.25) tick, t00=0.21, t01=0.09:
    # g_inf = -0.2/0.7 tick / (1 - 0.12/0.7) = -0.2/0.58 tick = -0.345 tick (sampling noise
    # of 20,000 steps is about 0.01 tick)
    if n_iter == 40:
        assert g_inf == pytest.approx(g_n, rel=1e-9)
        assert mp.table[0, 0] == pytest.approx(-0.2 / 0.58 * TICK, abs=0.02 * TICK)
    assert mp.info["n_transitions"] == 19_999
    assert mp.info["dropped"] == {"out_of_range": 0, "large_move": 0}


def test_lookup_reads_the_table():
    ts, bp, bs, ap, as_, stt, m = two_state_path(5_000, s=0.5, w=0.2, up0=0.05, dn0=0.25,
                                                 stay_after_move=0.7)
    mp = Microprice.fit(ts, bp, bs, ap, as_, TICK, n_imbalance=2, max_spread=1)
    g = mp.table[0]
    out = mp.update_many(ts, bp, bs, ap, as_)
    np.testing.assert_array_equal(out, 0.5 * (bp + ap) + g[stt])
    assert mp.value(0.25, 1) == g[0] and mp.value(0.75, 1) == g[1]
    assert mp.value(0.5, 1) == 0.0                       # n even, equal queues: by symmetry
    assert np.isnan(mp.value(0.3, 2)) and np.isnan(mp.value(0.3, 0))


def sim_quotes(n=30_000, seed=3):
    r = simulate(n, seed=seed, levels=1)
    return r.ts, r.bid_px[:, 0], r.bid_sz[:, 0], r.ask_px[:, 0], r.ask_sz[:, 0], r.tick_size


def test_symmetry_and_reference():
    ts, bp, bs, ap, as_, tick = sim_quotes()
    mp = Microprice.fit(ts, bp, bs, ap, as_, tick, n_imbalance=6, max_spread=2)
    t = mp.table
    np.testing.assert_array_equal(t, -t[:, ::-1])          # bit for bit
    I = np.array([0.03, 0.2, 0.41, 0.49])
    for S in (1, 2):
        np.testing.assert_array_equal(mp.value(1 - I, S), -mp.value(I, S))
    want = ref.microprice_fit(bp.tolist(), bs.tolist(), ap.tolist(), as_.tolist(), tick,
                              n_imbalance=6, max_spread=2)
    # two solvers (LAPACK, Gauss-Jordan): agree to rounding
    np.testing.assert_allclose(t, np.array(want), rtol=1e-9, atol=1e-15 * tick)
    # buy pressure (large bid queue) raises the expected mid: g increases across the bins
    assert t[0, -1] > 0 > t[0, 0]
    assert np.all(np.diff(t[0]) > 0)


def test_unsymmetrised_matches_reference():
    ts, bp, bs, ap, as_, tick = sim_quotes(10_000, seed=5)
    mp = Microprice.fit(ts, bp, bs, ap, as_, tick, n_imbalance=4, max_spread=2,
                        symmetrize=False, n_iter=3)
    want = ref.microprice_fit(bp.tolist(), bs.tolist(), ap.tolist(), as_.tolist(), tick,
                              n_imbalance=4, max_spread=2, n_iter=3, symmetrize=False)
    np.testing.assert_allclose(mp.table, np.array(want), rtol=1e-9, atol=1e-15 * tick)
    got = mp.update_many(ts, bp, bs, ap, as_)
    exp = ref.microprice_stream(want, tick, bp.tolist(), bs.tolist(), ap.tolist(),
                                as_.tolist(), symmetric=False)
    np.testing.assert_allclose(got, exp, rtol=1e-12, equal_nan=True)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 5)),
                min_size=1, max_size=60),
       st.integers(1, 7))
def test_streaming_equals_batch_and_reference(rows, chunk):
    table = np.array([[-0.004, -0.001, 0.001, 0.004], [-0.009, -0.002, 0.002, 0.009]])
    bid = np.array([100.0 + 0.01 * (i % 3) for i in range(len(rows))])
    ask = bid + 0.01 * np.array([r[0] for r in rows])
    bs = np.array([float(r[1]) for r in rows])
    as_ = np.array([float(r[2]) for r in rows])
    ts = np.arange(len(rows), dtype=np.int64)
    a = Microprice(table, 0.01)
    one = np.array([a.update(int(t), b, q, c, r) for t, b, q, c, r in zip(ts, bid, bs, ask, as_)])
    b = Microprice(table, 0.01)
    many = np.concatenate([b.update_many(ts[i:i + chunk], bid[i:i + chunk], bs[i:i + chunk],
                                         ask[i:i + chunk], as_[i:i + chunk])
                           for i in range(0, len(rows), chunk)])
    exp = ref.microprice_stream(table.tolist(), 0.01, bid.tolist(), bs.tolist(), ask.tolist(),
                                as_.tolist())
    np.testing.assert_array_equal(one, many)
    np.testing.assert_array_equal(one, np.array(exp))
    assert a.price == one[-1] or (np.isnan(a.price) and np.isnan(one[-1]))


def test_update_book_reads_the_best_level():
    table = np.array([[-0.004, -0.001, 0.001, 0.004]])
    mp, mq = Microprice(table, 0.01), Microprice(table, 0.01)
    book = ofi_fast.Book(0.01)
    book.apply(1, 100.00, 4.0)
    book.apply(-1, 100.01, 1.0)
    book.apply(1, 99.99, 50.0)                   # a deeper level is not read
    assert mp.update_book(book, 1) == mq.update(1, 100.00, 4.0, 100.01, 1.0)
    assert mp.price == pytest.approx(100.005 + 0.004)   # I = 0.8: the top bin
    book.apply(-1, 100.01, 0.0)                  # empty ask side: no state
    assert np.isnan(mp.update_book(book, 2))


def test_pickle_continues():
    ts, bp, bs, ap, as_, tick = sim_quotes(5_000)
    mp = Microprice.fit(ts, bp, bs, ap, as_, tick, n_imbalance=4, max_spread=2)
    mp.update_many(ts[:100], bp[:100], bs[:100], ap[:100], as_[:100])
    mp2 = pickle.loads(pickle.dumps(mp))
    assert mp2.info["n_transitions"] == mp.info["n_transitions"]
    np.testing.assert_array_equal(mp2.table, mp.table)
    assert mp2.price == mp.price or np.isnan(mp.price)
    with pytest.raises(TimeOrderError):
        mp2.update(int(ts[99]) - 1, bp[0], bs[0], ap[0], as_[0])
    np.testing.assert_array_equal(mp2.update_many(ts[100:], bp[100:], bs[100:], ap[100:], as_[100:]),
                                  mp.update_many(ts[100:], bp[100:], bs[100:], ap[100:], as_[100:]))


def test_errors_name_field_and_index_and_keep_state():
    mp = Microprice(np.array([[-0.01, 0.01]]), 0.01)
    mp.update(5, 100.0, 1.0, 100.01, 2.0)
    before = mp.price
    with pytest.raises(NegativeSizeError) as e:
        mp.update_many([6, 7], [100.0, 100.0], [1.0, -1.0], [100.01, 100.01], [1.0, 1.0])
    assert e.value.field == "bid_sz" and e.value.index == 1
    with pytest.raises(NonFiniteError) as e:
        mp.update(8, 100.0, 1.0, 100.01, float("nan"))
    assert e.value.field == "ask_sz"
    with pytest.raises(TimeOrderError) as e:
        mp.update(1, 100.0, 1.0, 100.01, 1.0)
    assert e.value.field == "ts"
    assert mp.price != before          # event 6 was applied (the error came at event 7)
    for bad, field in ((np.array([[np.nan, 0.0]]), "table"), (np.zeros((1, 1)), "table")):
        with pytest.raises(OFIError) as e:
            Microprice(bad, 0.01)
        assert e.value.field == field
    with pytest.raises(OFIError) as e:
        Microprice(np.zeros((1, 2)), 0.0)
    assert e.value.field == "tick_size"
    with pytest.raises(OFIError) as e:
        Microprice.fit([0, 1], [1.0, 1.0], [1.0, 1.0], [1.01, 1.01], [1.0, 1.0], 0.01,
                       n_imbalance=1)
    assert e.value.field == "n_imbalance"
    with pytest.raises(OFIError) as e:
        Microprice.fit([0, 1], [1.0, 1.0], [-1.0, 1.0], [1.01, 1.01], [1.0, 1.0], 0.01)
    assert e.value.field == "bid_sz" and e.value.index == 0
    with pytest.raises(OFIError) as e:
        Microprice(np.zeros((1, 2)), 0.01).value(1.5, 1)
    assert e.value.field == "imbalance"


def test_dropped_transitions_are_counted():
    # spread 1, 1, 3 (beyond max_spread=2), 1; then a 2-tick jump of the mid, a 1-tick move
    bp = np.array([1.00, 1.00, 1.00, 1.00, 1.02, 1.03])
    ap = np.array([1.01, 1.01, 1.03, 1.01, 1.03, 1.04])
    q = np.ones(6)
    mp = Microprice.fit(np.arange(6), bp, q, ap, q, 0.01, n_imbalance=2, max_spread=2)
    assert mp.info["dropped"] == {"out_of_range": 2, "large_move": 1}
    assert mp.info["n_transitions"] == 2
    assert np.isnan(mp.update(0, 1.00, 1.0, 1.03, 1.0))      # 3 ticks: no fitted state


MP_CONSUMER = """
# cython: language_level=3, boundscheck=False, wraparound=False
import numpy as np
from ofi_fast._microprice cimport Microprice, mp_adjustment
from ofi_fast._types cimport float64_t, intp_t

def run(Microprice m, const float64_t[::1] bp, const float64_t[::1] bs,
        const float64_t[::1] ap, const float64_t[::1] az):
    cdef intp_t i, n = bp.shape[0]
    out = np.zeros(n)
    cdef float64_t[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = mp_adjustment(&m.st, bp[i], bs[i], ap[i], az[i])
    return out
"""


def test_cimport_mp_adjustment(tmp_path):
    """A downstream extension cimports Microprice and reads its table without the GIL."""
    import os
    import subprocess
    import sys
    pytest.importorskip("Cython")
    (tmp_path / "mp_consumer.pyx").write_text(MP_CONSUMER)
    (tmp_path / "setup.py").write_text(
        "import numpy, ofi_fast\nfrom setuptools import setup, Extension\n"
        "from Cython.Build import cythonize\n"
        "ext = Extension('mp_consumer', ['mp_consumer.pyx'], include_dirs=[numpy.get_include()])\n"
        "setup(ext_modules=cythonize([ext], include_path=[ofi_fast.get_include()]),\n"
        "      script_args=['build_ext', '--inplace'])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ofi_fast.get_include(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "setup.py"], cwd=tmp_path, capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(tmp_path))
    try:
        import mp_consumer
    finally:
        sys.path.remove(str(tmp_path))
    ts, bp, bs, ap, as_, tick = sim_quotes(5_000)
    mp = Microprice.fit(ts, bp, bs, ap, as_, tick, n_imbalance=6, max_spread=2)
    got = mp_consumer.run(mp, bp, bs, ap, as_)
    want = []
    for i in range(len(ts)):
        mp.update(int(ts[i]), bp[i], bs[i], ap[i], as_[i])
        want.append(mp.adjustment)
    np.testing.assert_array_equal(got, np.array(want))
