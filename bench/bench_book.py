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
from ofi_fast._book import _EmptyApply

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


@pytest.fixture(scope="session")
def stream():
    s, p, q = realistic_stream(int(N * 1.2))
    return s[:N], p[:N], q[:N]


@pytest.fixture(scope="session")
def py_stream(stream):
    s, p, q = stream
    return s[:N_PY].tolist(), p[:N_PY].tolist(), q[:N_PY].tolist()


def run(benchmark, fn, n, setup=None, rounds=5):
    benchmark.extra_info["events"] = n
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------------ Book.apply_many
def test_book_apply_many(benchmark, stream):
    s, p, q = stream
    book = Book(1.0)
    run(benchmark, lambda: book.apply_many(s, p, q), len(p), setup=book.reset)
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
@pytest.mark.parametrize("levels", [1, 10])
def test_bookofi_update_many(benchmark, stream, levels):
    s, p, q = stream
    ts = np.arange(len(p), dtype=np.int64)
    o = BookOFI(1.0, levels=levels)
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
