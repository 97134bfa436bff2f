"""Book, BookOFI: ns per update on 1e6 realistic L2 deltas, beside the usual Python books.

Run: python -m pytest bench/bench_book.py --benchmark-only --benchmark-columns=min,median

The stream (seeded, built once per session): 60 % set a size within 10 ticks of the mid
(never crossing), 30 % delete a level within 10 ticks of the touch (the best level when that
price is empty), 5 % set a level 10-3000 ticks from the touch, 5 % delete the oldest live
level (orders age out, so the depth stays bounded); every update is valid for all books (no
crossing, no deletion of a missing level), so each baseline does exactly the same work.
Baselines in the same run: the ``order-book`` package (C extension, SortedDict per side),
a ``sortedcontainers.SortedDict`` book, and a plain-dict book (best = max/min on demand is
not measured: only the update is).
"""

import numpy as np
import pytest

from ofi_fast import Book, BookOFI
from ofi_fast._book import _EmptyApply, _row_loops

# the builds of the C row loops (_book_row.h, OFI_V3_DISPATCH): the one the CPU takes by
# default and, beside it in the same run, the baseline (SSE2) build
LOOPS = ["default", "baseline"]


@pytest.fixture
def loops(request):
    """Run the benchmark with the named row loops (default: what import chose)."""
    old = _row_loops()
    if request.param != "default":
        _row_loops(request.param)
    yield request.param
    _row_loops(old)

N = 1_000_000          # compiled batch paths
N_PY = 200_000         # per-call Python loops (the ns/update is what is compared)


def realistic_stream(n, seed=42):
    """(side int8, price float64 in ticks, size float64) of about 0.97 n valid updates."""
    from collections import deque
    rng = np.random.default_rng(seed)
    side = rng.choice(np.array([1, -1], np.int8), n)
    u = rng.random(n)
    off = rng.integers(0, 10, n)
    far = rng.integers(10, 3000, n)
    qty = rng.integers(1, 100, n).astype(np.float64)
    book = Book(1.0)                       # used only to know the touch in O(1)
    levels = {1: set(), -1: set()}
    born = {1: deque(), -1: deque()}       # levels in creation order: far deletes age them out
    out_s = np.empty(n, np.int8)
    out_p = np.empty(n, np.float64)
    out_q = np.empty(n, np.float64)
    k = 0
    bb, ba = 99_999, 100_001
    for i in range(n):
        s = int(side[i])
        lv = levels[s]
        r = u[i]
        touch = bb if s == 1 else ba
        if r < 0.30:                       # delete near the touch (the touch if absent)
            if not lv:
                continue
            p = touch - s * int(off[i])
            if p not in lv:
                p = touch
            q = 0.0
        elif r < 0.35:                     # delete an old level (usually far by now)
            while born[s] and born[s][0] not in lv:
                born[s].popleft()
            if not born[s]:
                continue
            p = born[s].popleft()
            q = 0.0
        elif r < 0.40:                     # set a far level
            p = touch - s * int(far[i])
            q = qty[i]
        else:                              # set a size around the mid, never crossing
            c = (bb + ba - (i & 1)) // 2   # either side may take the middle tick
            p = min(c - int(off[i]), ba - 1) if s == 1 else max(c + 1 + int(off[i]), bb + 1)
            q = qty[i]
        book.apply(s, p, q)
        if q == 0.0:
            lv.discard(p)
        elif p not in lv:
            lv.add(p)
            born[s].append(p)
        if book.bid_levels:
            bb = book.best_bid_tick
        if book.ask_levels:
            ba = book.best_ask_tick
        out_s[k], out_p[k], out_q[k] = s, p, q
        k += 1
    return out_s[:k], out_p[:k], out_q[:k]


_CACHE = {}


def _realistic():
    """The first N rows of realistic_stream (built once per session)."""
    if "stream" not in _CACHE:
        s, p, q = realistic_stream(int(N * 1.2))
        _CACHE["stream"] = (s[:N], p[:N], q[:N])
    return _CACHE["stream"]


@pytest.fixture(scope="session")
def stream():
    return _realistic()


@pytest.fixture(scope="session")
def py_stream(stream):
    s, p, q = stream
    return s[:N_PY].tolist(), p[:N_PY].tolist(), q[:N_PY].tolist()


def run(benchmark, fn, n, setup=None, rounds=5):
    benchmark.extra_info["events"] = n
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------------ Book.apply_many
@pytest.mark.parametrize("loops", LOOPS, indirect=True)
def test_book_apply_many(benchmark, stream, loops):
    # 15 rounds (10 ms each): issue 13's <= 12 ns row; with 5 its min read 12.5-12.8 in
    # full-file runs and 9.3-10.6 when rerun a minute later (2026-12-02)
    s, p, q = stream
    book = Book(1.0)
    run(benchmark, lambda: book.apply_many(s, p, q), len(p), setup=book.reset, rounds=15)
    assert book.n_updates == len(p)


# ------------------------------------------------------------------ flat cost, deep inserts
@pytest.mark.parametrize("n", [10_000, 100_000, 1_000_000, 10_000_000, 30_000_000])
def test_book_apply_many_flat(benchmark, stream, n):
    """Flat cost: the first n deltas of the stream (n <= 1e6), or n / 1e6 passes of the whole
    stream on one book, reset between passes (the reset is timed too)."""
    s, p, q = stream
    book = Book(1.0)
    if n <= len(p):
        s, p, q = s[:n], p[:n], q[:n]
        run(benchmark, lambda: book.apply_many(s, p, q), n, setup=book.reset)
        return

    def passes():
        for _ in range(n // len(p)):
            book.reset()
            book.apply_many(s, p, q)
    run(benchmark, passes, n, rounds=3 if n < 30_000_000 else 1)


@pytest.mark.parametrize("order", ["deeper", "better"])
def test_book_million_levels_at_one_end(benchmark, order):
    """Issue 14: 1e6 bid levels, each deeper (or better) than all others, from an empty book
    of capacity 1 (was 114 s for "deeper": every insert moved the whole side)."""
    n = 1_000_000
    px = (2e6 - np.arange(n)) if order == "deeper" else (1.0 + np.arange(n))
    side = np.ones(n, np.int8)
    z = np.full(n, 2.0)
    holder = {}

    def setup():
        holder["b"] = Book(1.0, capacity=1)
    run(benchmark, lambda: holder["b"].apply_many(side, px, z), n, setup=setup, rounds=3)


# ------------------------------------------------------------------ per-call from Python
def test_book_apply_python(benchmark, py_stream):
    s, p, q = py_stream
    book = Book(1.0)

    def loop():
        ap = book.apply
        for i in range(len(p)):
            ap(s[i], p[i], q[i])
    run(benchmark, loop, len(p), setup=book.reset)


def test_empty_call_floor(benchmark, py_stream):
    """The floor: an empty cpdef method with Book.apply's exact signature
    (``_EmptyApply.apply(int side, double price, double size)``), same Python loop: what
    any per-call compiled method pays before doing any work."""
    s, p, q = py_stream
    e = _EmptyApply()

    def loop():
        ap = e.apply
        for i in range(len(p)):
            ap(s[i], p[i], q[i])
    run(benchmark, loop, len(p))


def test_order_book_package(benchmark, py_stream):
    order_book = pytest.importorskip("order_book")
    s, p, q = py_stream
    holder = {}

    def setup():
        holder["ob"] = order_book.OrderBook()

    def loop():
        ob = holder["ob"]
        bids, asks = ob.bids, ob.asks
        for i in range(len(p)):
            side = bids if s[i] == 1 else asks
            if q[i] == 0.0:
                del side[p[i]]
            else:
                side[p[i]] = q[i]
    run(benchmark, loop, len(p), setup=setup)


def test_sortedcontainers_book(benchmark, py_stream):
    sc = pytest.importorskip("sortedcontainers")
    s, p, q = py_stream
    holder = {}

    def setup():
        holder["b"] = (sc.SortedDict(), sc.SortedDict())

    def loop():
        bids, asks = holder["b"]
        for i in range(len(p)):
            side = bids if s[i] == 1 else asks
            if q[i] == 0.0:
                del side[p[i]]
            else:
                side[p[i]] = q[i]
    run(benchmark, loop, len(p), setup=setup)


def test_dict_book(benchmark, py_stream):
    s, p, q = py_stream
    holder = {}

    def setup():
        holder["b"] = ({}, {})

    def loop():
        bids, asks = holder["b"]
        for i in range(len(p)):
            side = bids if s[i] == 1 else asks
            if q[i] == 0.0:
                del side[p[i]]
            else:
                side[p[i]] = q[i]
    run(benchmark, loop, len(p), setup=setup)


# ------------------------------------------------------------------ top(10)
TOP_CALLS = 100_000


@pytest.fixture(scope="session")
def loaded_book(stream):
    s, p, q = stream
    book = Book(1.0)
    book.apply_many(s, p, q)
    return book


def test_book_top10(benchmark, loaded_book):
    """top(10): a new (4, 10) array per call (one allocation)."""
    t = loaded_book.top

    def loop():
        for _ in range(TOP_CALLS):
            t(10)
    run(benchmark, loop, TOP_CALLS)


def test_book_top10_out(benchmark, loaded_book):
    """top(10, out=) into one caller-owned (4, 10) array."""
    t = loaded_book.top
    out = np.empty((4, 10))

    def loop():
        for _ in range(TOP_CALLS):
            t(10, out)
    run(benchmark, loop, TOP_CALLS)


def test_order_book_top10(benchmark, stream):
    order_book = pytest.importorskip("order_book")
    s, p, q = stream
    ob = order_book.OrderBook()
    for i in range(N_PY):
        side = ob.bids if s[i] == 1 else ob.asks
        if q[i] == 0.0:
            del side[float(p[i])]
        else:
            side[float(p[i])] = float(q[i])

    def loop():
        bids, asks = ob.bids, ob.asks
        for _ in range(TOP_CALLS):
            [bids.index(j) for j in range(10)], [asks.index(j) for j in range(10)]
    run(benchmark, loop, TOP_CALLS, rounds=3)


# ------------------------------------------------------------------ BookOFI
@pytest.mark.parametrize("loops", LOOPS, indirect=True)
@pytest.mark.parametrize("levels", [1, 10])
def test_bookofi_update_many(benchmark, stream, levels, loops):
    s, p, q = stream
    ts = np.arange(len(p), dtype=np.int64)
    o = BookOFI(1.0, levels=levels)
    run(benchmark, lambda: o.update_many(ts, s, p, q), len(p), setup=o.reset)


def test_bookofi_update_many_fractional_sizes(benchmark, stream):
    """The realistic stream with every size + 0.5: no whole-size rows (equities' share
    counts are whole; crypto sizes are not), so each row takes the compensated sums."""
    s, p, q = stream
    q = np.where(q > 0, q + 0.5, 0.0)
    ts = np.arange(len(p), dtype=np.int64)
    o = BookOFI(1.0, levels=10)
    run(benchmark, lambda: o.update_many(ts, s, p, q), len(p), setup=o.reset)


def test_bookofi_update_many_levels_out(benchmark, stream):
    s, p, q = stream
    ts = np.arange(len(p), dtype=np.int64)
    o = BookOFI(1.0, levels=10)
    run(benchmark, lambda: o.update_many(ts, s, p, q, levels=True), len(p), setup=o.reset)


def test_bookofi_python_baseline(benchmark, py_stream):
    """order-book + best-level OFI (CKS eq. 10) in a Python loop: what users write today."""
    order_book = pytest.importorskip("order_book")
    s, p, q = py_stream
    n = len(p) // 4
    holder = {}

    def setup():
        holder["ob"] = order_book.OrderBook()

    def loop():
        ob = holder["ob"]
        bids, asks = ob.bids, ob.asks
        prev = None
        out = [0.0] * n
        for i in range(n):
            side = bids if s[i] == 1 else asks
            if q[i] == 0.0:
                del side[p[i]]
            else:
                side[p[i]] = q[i]
            cur = (bids.index(0) if len(bids) else (-1e300, 0.0),
                   asks.index(0) if len(asks) else (1e300, 0.0))
            if prev is not None:
                (pb0, qb0), (pa0, qa0) = prev
                (pb1, qb1), (pa1, qa1) = cur
                out[i] = ((qb1 if pb1 >= pb0 else 0) - (qb0 if pb1 <= pb0 else 0)
                          - (qa1 if pa1 <= pa0 else 0) + (qa0 if pa1 >= pa0 else 0))
            prev = cur
        return out
    run(benchmark, loop, n, setup=setup)


# ------------------------------------------------------------------ issue 13: tick ladder
# Workloads (each: a snapshot, then deltas that every book applies in full):
#   usdm / spot: the Binance BTCUSDT diff-depth recordings of ../shared/data (tick 0.1 USD-M,
#     0.01 spot), synced on their REST snapshot; rows of one message end at FLAG_BATCH_END;
#   deep10k: 10,000 levels a side on consecutive ticks, 1e6 updates at uniformly random
#     levels of the book (30 % deletes, re-set later), so depth stays ~10,000;
#   deep10k_sparse: the same with the levels 10 ticks apart (100,000 ticks a side: deeper
#     than the ladder window, so most updates go to the far blocks).
# Baselines in the same run: a numba @njit dense tick ladder over the whole price range (the
# limit: one array slot per tick of the range, best kept by scanning), the `order-book`
# package (C SortedDict per side) from Python, polars-order-book's top-10 plugin (book + top
# levels per row; BookOFI's peer).
WORKLOADS = ["usdm", "spot", "deep10k", "deep10k_sparse"]


def workload(name):
    """(tick_size, snapshot (bid_px, bid_sz, ask_px, ask_sz), side, price, size, batch_end)."""
    if name in _CACHE:
        return _CACHE[name]
    if name == "realistic":                # the stream of test_book_apply_many, no snapshot
        s, p, q = _realistic()
        e = np.empty(0)
        return (1.0, (e, e, e, e), s, p, q, np.ones(len(p), bool))
    if name in ("usdm", "spot"):
        import os
        from pathlib import Path
        from ofi_fast.feeds import FLAG_BATCH_END, FLAG_SNAPSHOT, read_binance
        data = os.environ.get("OFI_FAST_DATA",                # as tests/conftest.py
                              Path(__file__).resolve().parent.parent.parent / "shared" / "data")
        path = Path(data) / "binance_hftbacktest" / name / "btcusdt_20240808.gz"
        if not path.exists():
            pytest.skip(f"{path} not available")
        d = read_binance(path).depth
        snap = (d.flags & FLAG_SNAPSHOT) != 0
        first = int(np.flatnonzero(~snap)[0])
        bid, ask = snap & (d.side == 1), snap & (d.side == -1)
        out = (0.1 if name == "usdm" else 0.01,
               (d.price[bid], d.size[bid], d.price[ask], d.size[ask]),
               d.side[first:], d.price[first:], d.size[first:],
               (d.flags[first:] & FLAG_BATCH_END) != 0)
    else:
        gap = 1 if name == "deep10k" else 10
        n_levels, n = 10_000, 1_000_000
        rng = np.random.default_rng(3)
        bids = 1_000_000 - gap * np.arange(1, n_levels + 1)
        asks = 1_000_000 + gap * np.arange(1, n_levels + 1)
        side = rng.choice(np.array([1, -1], np.int8), n)
        idx = rng.integers(0, n_levels, n)
        px = np.where(side == 1, bids[idx], asks[idx]).astype(np.float64)
        sz = rng.integers(1, 50, n).astype(np.float64)
        sz[rng.random(n) < 0.3] = 0.0
        out = (1.0, (bids.astype(np.float64), np.full(n_levels, 5.0),
                     asks.astype(np.float64), np.full(n_levels, 5.0)),
               side, px, sz, np.ones(n, bool))
    _CACHE[name] = out
    return out


@pytest.mark.parametrize("name", WORKLOADS)
def test_ladder_book_apply_many(benchmark, name):
    tick, snap, s, p, q, end = workload(name)
    book = Book(tick)

    def setup():
        book.reset()
        book.load_snapshot(*snap)
    run(benchmark, lambda: book.apply_many(s, p, q, batch_end=end), len(p), setup=setup)
    assert book.n_updates == len(p)


@pytest.mark.parametrize("name", ["deep10k", "deep10k_sparse"])
def test_ladder_book_apply_many_built_by_deltas(benchmark, name):
    """The same deltas on a book whose 10,000 levels a side came as deltas, not as a snapshot:
    the inserts widen the ladder as a snapshot sizes it (side_grow / side_fit: 131,072 slots
    on the sparse book, helper deep7; before, most updates went to the far blocks). The
    baseline is test_ladder_order_book_baseline (a dict book does not care how its levels
    came)."""
    tick, snap, s, p, q, end = workload(name)
    side0 = np.concatenate([np.ones(len(snap[0]), np.int8), -np.ones(len(snap[2]), np.int8)])
    px0, sz0 = np.concatenate([snap[0], snap[2]]), np.concatenate([snap[1], snap[3]])
    book = Book(tick)

    def setup():
        book.reset()
        book.apply_many(side0, px0, sz0)
    run(benchmark, lambda: book.apply_many(s, p, q, batch_end=end), len(p), setup=setup)
    assert book.n_updates == len(px0) + len(p)


@pytest.mark.parametrize("levels", [1, 10])
@pytest.mark.parametrize("name", WORKLOADS)
def test_ladder_bookofi_update_many(benchmark, name, levels):
    tick, snap, s, p, q, end = workload(name)
    ts = np.arange(len(p), dtype=np.int64)
    o = BookOFI(tick, levels=levels)

    def setup():
        o.reset()
        o.load_snapshot(*snap)
    run(benchmark, lambda: o.update_many(ts, s, p, q, batch_end=end), len(p), setup=setup)


def _dense_ladder():
    numba = pytest.importorskip("numba")

    @numba.njit(nogil=True)
    def apply(side, price, size, inv, base, bid, ask):
        nt = bid.shape[0]
        bb, ba = -1, nt
        for t in range(nt - 1, -1, -1):
            if bid[t] > 0.0:
                bb = t
                break
        for t in range(nt):
            if ask[t] > 0.0:
                ba = t
                break
        for i in range(side.shape[0]):
            t = np.int64(price[i] * inv + 0.5) - base
            q = size[i]
            if side[i] == 1:
                bid[t] = q
                if q > 0.0:
                    if t > bb:
                        bb = t
                elif t == bb:
                    while bb >= 0 and bid[bb] == 0.0:
                        bb -= 1
            else:
                ask[t] = q
                if q > 0.0:
                    if t < ba:
                        ba = t
                elif t == ba:
                    while ba < nt and ask[ba] == 0.0:
                        ba += 1
        return bb, ba
    return apply


@pytest.mark.parametrize("name", WORKLOADS + ["realistic"])
def test_ladder_dense_numba_baseline(benchmark, name):
    """The limit: a dense array over the whole price range (one slot per tick; 2 x 8 bytes x
    range: e.g. 24 MB on USD-M), best bid/ask kept by a scan after the best is deleted.
    "realistic": the stream of test_book_apply_many (a range of about 6,000 ticks), the
    baseline of the <= 12 ns target."""
    tick, snap, s, p, q, end = workload(name)
    apply = _dense_ladder()
    inv = 1.0 / tick
    allp = np.concatenate([snap[0], snap[2], p])
    base = int(allp.min() * inv + 0.5) - 1
    nt = int(allp.max() * inv + 0.5) - base + 2
    bid, ask = np.zeros(nt), np.zeros(nt)
    bt = (snap[0] * inv + 0.5).astype(np.int64) - base
    at = (snap[2] * inv + 0.5).astype(np.int64) - base

    def setup():
        bid[:] = 0.0
        ask[:] = 0.0
        bid[bt] = snap[1]
        ask[at] = snap[3]
    setup()
    apply(s[:10], p[:10], q[:10], inv, base, bid, ask)          # compile outside the timing
    run(benchmark, lambda: apply(s, p, q, inv, base, bid, ask), len(p), setup=setup)
    benchmark.extra_info["range_ticks"] = nt


@pytest.mark.parametrize("name", WORKLOADS)
def test_ladder_order_book_baseline(benchmark, name):
    order_book = pytest.importorskip("order_book")
    tick, snap, s, p, q, end = workload(name)
    m = min(len(p), N_PY)
    sl, pl, ql = s[:m].tolist(), p[:m].tolist(), q[:m].tolist()
    holder = {}

    def setup():
        ob = order_book.OrderBook()
        for px_, sz_ in zip(snap[0].tolist(), snap[1].tolist()):
            ob.bids[px_] = sz_
        for px_, sz_ in zip(snap[2].tolist(), snap[3].tolist()):
            ob.asks[px_] = sz_
        holder["ob"] = ob

    def loop():
        ob = holder["ob"]
        bids, asks = ob.bids, ob.asks
        for i in range(m):
            side = bids if sl[i] == 1 else asks
            if ql[i] == 0.0:
                if pl[i] in side:
                    del side[pl[i]]
            else:
                side[pl[i]] = ql[i]
    run(benchmark, loop, m, setup=setup)


@pytest.mark.parametrize("levels", [1, 10])
@pytest.mark.parametrize("name", WORKLOADS)
def test_ladder_polars_order_book_baseline(benchmark, name, levels):
    """polars-order-book (Rust plugin): the book plus its top `levels` levels after every
    row, for the snapshot rows and then the deltas (BookOFI's peer). ns per delta row."""
    pl = pytest.importorskip("polars")
    pob = pytest.importorskip("polars_order_book")
    tick, snap, s, p, q, end = workload(name)
    price = np.concatenate([snap[0], snap[2], p])
    qty = np.concatenate([snap[1], snap[3], q])
    is_bid = np.concatenate([np.ones(len(snap[0]), bool), np.zeros(len(snap[2]), bool),
                             s == 1])
    # the plugin takes integers: prices in ticks, sizes in 1e-8 units (exact for Binance)
    df = pl.DataFrame({"price": np.rint(price / tick).astype(np.int64),
                       "qty": np.rint(qty * 1e8).astype(np.int64), "is_bid": is_bid})
    expr = pob.top_n_levels_from_price_updates("price", "qty", "is_bid", n=levels)
    run(benchmark, lambda: df.select(expr), len(p))
