"""The simulator behind the embedded default: a valid book, reproducible, and OFI explains it.

No results of our own code are hard-coded: every check is an invariant of a limit order book
(never crossed, sizes >= 0, events consistent with the book change they cause) or a property
of the model (seeded reproducibility, chunking invariance, OFI explaining mid changes).
"""

import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ofi_fast
from ofi_fast.simulate import ADD, CANCEL, EXECUTE, LOBSimulator, SimResult, simulate, \
    simulate_chunks

FIELDS = [k for k in SimResult.__slots__ if k != "tick_size"]


@pytest.fixture(scope="module")
def sim():
    return simulate(200_000, seed=7, levels=5)


def _same(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in FIELDS)


def test_shapes_and_dtypes(sim):
    n = len(sim)
    assert n == 200_000 and sim.levels == 5
    assert sim.ts.dtype == np.int64 and sim.ts.shape == (n,)
    for k in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        assert getattr(sim, k).shape == (n, 5) and getattr(sim, k).dtype == np.float64
    assert set(np.unique(sim.event_type)) <= {ADD, CANCEL, EXECUTE}
    assert set(np.unique(sim.side)) <= {-1, 1}
    assert np.all(np.diff(sim.ts) >= 0)


def test_book_never_crossed_and_sizes_valid(sim):
    assert np.all(sim.bid_px[:, 0] < sim.ask_px[:, 0])
    for k in ("bid_sz", "ask_sz"):
        sz = getattr(sim, k)
        assert np.all(sz >= 0) and np.all(np.isfinite(sz))
    # levels are contiguous ticks, best first
    ticks_b = np.rint(sim.bid_px / sim.tick_size)
    ticks_a = np.rint(sim.ask_px / sim.tick_size)
    assert np.all(np.diff(ticks_b, axis=1) == -1) and np.all(np.diff(ticks_a, axis=1) == 1)
    assert np.all(sim.size > 0)


def test_events_explain_book_changes(sim):
    """Each event changes exactly the level it names by its size, or moves the touch."""
    tick = sim.tick_size
    bt = np.rint(sim.bid_px[:, 0] / tick).astype(np.int64)
    at = np.rint(sim.ask_px[:, 0] / tick).astype(np.int64)
    pt = np.rint(sim.price / tick).astype(np.int64)
    still = (np.diff(bt) == 0) & (np.diff(at) == 0)
    i = np.flatnonzero(still) + 1            # events that did not move the touch
    bid = sim.side[i] == 1
    lvl = np.where(bid, bt[i] - pt[i], pt[i] - at[i])
    assert np.all((lvl >= 0) & (lvl < sim.levels))
    before = np.where(bid, sim.bid_sz[i - 1, lvl], sim.ask_sz[i - 1, lvl])
    after = np.where(bid, sim.bid_sz[i, lvl], sim.ask_sz[i, lvl])
    sign = np.where(sim.event_type[i] == ADD, 1.0, -1.0)
    np.testing.assert_array_equal(after - before, sign * sim.size[i])
    # a touch move is caused by emptying the touch (down for bids) or by a price improvement
    moved = np.flatnonzero(~still) + 1
    d_b, d_a = bt[moved] - bt[moved - 1], at[moved] - at[moved - 1]
    assert np.all(np.abs(d_b) + np.abs(d_a) == 1)
    up_b = d_b == 1
    assert np.all(sim.event_type[moved][up_b] == ADD)
    assert np.all(pt[moved][up_b] == bt[moved][up_b])
    down_b = d_b == -1
    assert np.all(sim.event_type[moved][down_b] != ADD)
    # emptied the whole touch queue it hit
    np.testing.assert_array_equal(sim.size[moved][down_b], sim.bid_sz[moved - 1, 0][down_b])


def test_trades_match_executions(sim):
    ex = np.flatnonzero(sim.event_type == EXECUTE)
    np.testing.assert_array_equal(sim.trade_index, ex)
    np.testing.assert_array_equal(sim.trade_ts, sim.ts[ex])
    np.testing.assert_array_equal(sim.trade_size, sim.size[ex])
    # aggressor is opposite to the resting side; buys execute at the prior best ask
    np.testing.assert_array_equal(sim.trade_side, -sim.side[ex])
    buy = sim.trade_side == 1
    np.testing.assert_array_equal(sim.trade_price[buy], sim.ask_px[ex[buy] - 1, 0])
    np.testing.assert_array_equal(sim.trade_price[~buy], sim.bid_px[ex[~buy] - 1, 0])
    assert 0.2 < buy.mean() < 0.8


def test_reproducible_from_seed():
    a = simulate(20_000, seed=3)
    b = simulate(20_000, seed=3)
    c = simulate(20_000, seed=4)
    assert _same(a, b)
    assert not np.array_equal(a.ts, c.ts) and not np.array_equal(a.mid, c.mid)


@pytest.mark.parametrize("chunk", [1, 97, 5_000, 30_000])
def test_chunks_equal_one_run(chunk):
    whole = simulate(30_000, seed=11, levels=3)
    n = 30_000 if chunk > 1 else 600
    if chunk == 1:
        whole = simulate(n, seed=11, levels=3)
    parts = list(simulate_chunks(n, chunk_size=chunk, seed=11, levels=3))
    assert all(len(p) <= chunk for p in parts)
    assert _same(SimResult.concatenate(parts), whole)



def _copy(r):
    return SimResult(**{k: (getattr(r, k).copy() if k != "tick_size" else r.tick_size)
                        for k in SimResult.__slots__})


@pytest.mark.parametrize("chunk", [1, 97, 5_000])
def test_chunks_dropped_as_made_reuse_buffers_and_stay_equal(chunk):
    # A caller that drops each chunk: the chunk after next is written into its buffers (the
    # same addresses come back), and every chunk, copied when it arrives, is what one run
    # gives. A caller that keeps a view of a chunk's array (or the chunk) keeps its values:
    # that chunk's buffers are never reused.
    n = 600 if chunk == 1 else 30_000
    whole = simulate(n, seed=11, levels=3)
    copies, addresses = [], []
    for r in simulate_chunks(n, chunk_size=chunk, seed=11, levels=3):
        copies.append(_copy(r))
        addresses.append(r.bid_sz.__array_interface__["data"][0])
    assert _same(SimResult.concatenate(copies), whole)
    full = n // chunk                               # chunks of exactly chunk rows
    assert len(set(addresses[:full])) <= 2 < full   # two sets of buffers, alternating
    views, kept = [], []
    for i, r in enumerate(simulate_chunks(n, chunk_size=chunk, seed=11, levels=3)):
        if i % 3 == 0:
            views.append((i, r.bid_sz[:, 0], r.ts[1:]))     # views of two of its arrays
        if i % 3 == 1:
            kept.append((i, r))
    for i, bq, ts in views:
        assert np.array_equal(bq, whole.bid_sz[i * chunk:(i + 1) * chunk, 0])
        assert np.array_equal(ts, whole.ts[i * chunk + 1:(i + 1) * chunk])
    for i, r in kept:
        assert _same(r, SimResult(**{k: (getattr(whole, k)[i * chunk:(i + 1) * chunk]
                                         if k in ("ts", "event_type", "side", "price", "size",
                                                  "bid_px", "bid_sz", "ask_px", "ask_sz")
                                         else getattr(r, k)) for k in SimResult.__slots__}))


def test_engine_out_buffers_are_checked():
    sim = LOBSimulator(0, levels=2)
    good = sim._engine.run(10, 0.01)
    bad = list(good)
    bad[5] = np.empty((10, 3))
    with pytest.raises(ValueError, match="bid_px"):
        sim._engine.run(10, 0.01, tuple(bad))
    bad = list(good)
    bad[1] = np.empty(10, np.int64)
    with pytest.raises(ValueError, match="event_type"):
        sim._engine.run(10, 0.01, tuple(bad))

def _ols_r2(x, y):
    X = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    res = y - X @ coef
    return coef[1], 1.0 - res @ res / ((y - y.mean()) @ (y - y.mean()))


def test_ofi_explains_mid_changes(sim):
    """Cont-Kukanov-Stoikov: dmid over 10 s bars regresses on OFI with R^2 > 0.3, beta > 0."""
    e = ofi_fast.l1_ofi(*sim.best())
    every = 10_000_000_000
    b = ofi_fast.bars(sim.ts, e, every=every)
    m = ofi_fast.bars(sim.ts, sim.mid, every=every)
    assert np.all(m.count > 0)             # ~75 events a second: no empty 10 s bar here
    dmid = np.diff(np.concatenate([[sim.mid[0]], m.last]))
    beta, r2 = _ols_r2(b.sum, dmid)
    assert beta > 0 and r2 > 0.3, (beta, r2)


def test_levels_one_and_params():
    r = simulate(5_000, seed=1, levels=1, tick_size=0.5, start_price=50.0)
    assert r.bid_px.shape == (5_000, 1)
    assert np.all(np.rint(r.bid_px / 0.5) * 0.5 == r.bid_px)
    assert abs(r.mid[0] - 50.25) < 10


@pytest.mark.parametrize("kw", [dict(levels=0), dict(tick_size=0.0), dict(cancel_rate=-1.0),
                                dict(limit_decay=1.5), dict(mean_size=50.0),
                                dict(market_rate=float("nan")), dict(block=65_537)])
def test_bad_parameters(kw):
    with pytest.raises(ValueError):
        LOBSimulator(0, **kw)
    with pytest.raises(ValueError):
        simulate(-1)


@given(seed=st.integers(0, 2**32 - 1), levels=st.integers(1, 4),
       limit_rate=st.floats(0.5, 20), cancel_rate=st.floats(0.05, 3),
       market_rate=st.floats(0, 5), block=st.sampled_from([16, 64, 256]),
       n=st.integers(1, 3000))
def test_invariants_for_any_parameters(seed, levels, limit_rate, cancel_rate, market_rate,
                                       block, n):
    r = simulate(n, seed=seed, levels=levels, limit_rate=limit_rate, cancel_rate=cancel_rate,
                 market_rate=market_rate, block=block)
    assert len(r) == n and np.all(np.diff(r.ts) >= 0)
    assert np.all(r.bid_px[:, 0] < r.ask_px[:, 0])
    assert np.all(r.bid_sz >= 100.0) and np.all(r.ask_sz >= 100.0)   # >= one lot everywhere
    assert np.all(r.size > 0)
    assert np.all(np.diff(np.rint(r.bid_px / r.tick_size), axis=1) == -1)
    # an execution's price is the touch it hit, before the event
    ex = r.trade_index[r.trade_index > 0]
    side = r.side[ex]
    before = np.where(side == 1, r.bid_px[ex - 1, 0], r.ask_px[ex - 1, 0])
    np.testing.assert_array_equal(r.price[ex], before)


# ------------------------------------------------------------------ the compiled event loop
from sim_numpy_oracle import NumpyLOBSimulator  # noqa: E402


def test_compiled_loop_equals_the_numpy_engine_default_run():
    """Issue 13 item 6: the compiled loop gives the numpy block engine's streams bit for bit
    (with the oracle's own pool size, stream version 2): the default parameters."""
    new = LOBSimulator(0).run(300_000)
    old = NumpyLOBSimulator(0).run(300_000)
    assert _same(new, old)


@given(seed=st.integers(0, 2**32 - 1), levels=st.integers(1, 6),
       limit_rate=st.floats(0.5, 20), cancel_rate=st.floats(0.05, 3),
       market_rate=st.floats(0, 5), inside_rate=st.sampled_from([0.0, 3.0, 20.0]),
       lot=st.sampled_from([100.0, 1.0, 0.1, 0.3]), size_lots=st.floats(1.0, 5.0),
       block=st.sampled_from([16, 37, 256]), n=st.integers(1, 4000),
       split=st.integers(0, 4000))
def test_compiled_loop_equals_the_numpy_engine(seed, levels, limit_rate, cancel_rate,
                                               market_rate, inside_rate, lot, size_lots,
                                               block, n, split):
    """Any parameters, any split into run() calls, lots that are not exact binary fractions
    (0.1, 0.3: the order of the size additions matters, and is the old engine's)."""
    kw = dict(levels=levels, limit_rate=limit_rate, cancel_rate=cancel_rate,
              market_rate=market_rate, inside_rate=inside_rate, lot=lot,
              mean_size=lot * size_lots, block=block)
    old = NumpyLOBSimulator(seed, **kw).run(n)
    sim = LOBSimulator(seed, **kw)
    k = min(split, n)
    new = SimResult.concatenate([sim.run(k), sim.run(n - k)])
    assert _same(new, old)
    ref = NumpyLOBSimulator(seed, **kw)
    ref.run(n)
    assert (sim.bid_tick, sim.ask_tick) == (ref.bid_tick, ref.ask_tick)
    assert np.array_equal(sim.qb, ref.qb) and np.array_equal(sim.qa, ref.qa)


@pytest.mark.parametrize("block,n,split", [(4_096, 9_000, 4_000), (4_097, 9_000, 4_100),
                                           (10_000, 25_000, 12_345), (65_536, 140_000, 70_000)])
def test_blocks_larger_than_the_pool_size(block, n, split):
    """Stream version 2: the pools hold max(POOL_SIZE, block) draws per refill, as the numpy
    engine's do; the largest block (65,536) is still allowed."""
    old = NumpyLOBSimulator(3, block=block).run(n)
    sim = LOBSimulator(3, block=block)
    assert _same(SimResult.concatenate([sim.run(split), sim.run(n - split)]), old)


def test_engine_pools_hold_a_block():
    """SimEngine refuses pools smaller than a block (a block's draws would run past them)."""
    from ofi_fast._simulate import SimEngine
    rng = np.random.default_rng(0)
    args = (rng, 2, 256, 100.0, 0.0025, 1.5, 20.0, 1.0, 0.5, np.ones(2), np.full(2, 200.0),
            np.full(2, 200.0), 0, 10_000)
    SimEngine(*args, 256).run(1_000, 0.01)
    with pytest.raises(ValueError, match="pool_size"):
        SimEngine(*args, 255)


def test_pairwise_sum_is_numpys():
    """The block's total rate is numpy's pairwise sum, operation for operation."""
    from ofi_fast._simulate import _pairwise_sum
    rng = np.random.default_rng(2)
    for n in list(range(0, 140)) + [255, 256, 257, 1000, 4099]:
        for _ in range(5):
            a = rng.random(n) * 10.0 ** rng.integers(-4, 6, n)
            assert _pairwise_sum(a) == a.sum(), n


@pytest.mark.parametrize("kw", [{}, dict(mean_size=400.0), dict(levels=2, mean_size=100.0)])
def test_generator_state_after_a_run_is_the_numpy_engines(kw):
    """The engine draws from the Generator's bit generator in C (numpy's distribution functions,
    pools, one Poisson per touch emptied): afterwards the bit generator is where the numpy
    engine's Generator calls leave it (the same draws, no more, no fewer), for the geometric
    search (p >= 1/3: default, p = 1) and its inversion (p = 0.25), and it still serves the
    Generator's own calls."""
    sim, ref = LOBSimulator(5, **kw), NumpyLOBSimulator(5, **kw)
    for n in (1, 70_000, 3):
        assert _same(sim.run(n), ref.run(n))
        assert sim.rng.bit_generator.state == ref.rng.bit_generator.state
    assert sim.rng.random() == ref.rng.random()



def test_run_holds_the_bit_generators_lock():
    """run() draws under the bit generator's lock: while another holder has it, run waits (so
    a Generator shared between threads is never drawn from by two at once); its events are
    then the same as without the wait."""
    import threading
    sim, ref = LOBSimulator(11), LOBSimulator(11)
    got = []
    lock = sim.rng.bit_generator.lock
    with lock:
        th = threading.Thread(target=lambda: got.append(sim.run(500)))
        th.start()
        th.join(0.3)
        assert th.is_alive() and not got
    th.join()
    assert _same(got[0], ref.run(500))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU ld's --exclude-libs")
def test_numpy_random_functions_stay_private_to_the_module():
    # _simulate links numpy's libnpyrandom.a statically; its functions must not be exported
    # (another extension with its own copy, or numpy's, could otherwise bind to ours)
    import ctypes
    from ofi_fast import _simulate
    lib = ctypes.CDLL(_simulate.__file__)
    assert hasattr(lib, "PyInit__simulate")
    for name in ("random_poisson", "random_geometric", "random_standard_uniform_fill"):
        assert not hasattr(lib, name), name
