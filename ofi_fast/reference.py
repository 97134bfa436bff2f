"""Pure-Python reference implementation of every ofi_fast kernel: the oracle for the tests.

Same names and semantics as the compiled façade, written for clarity, not speed. It imports
nothing from the rest of the package (only the standard library), so it stays an independent
oracle. Each section mirrors one compiled module.
"""

from __future__ import annotations

import math
from collections import deque

INF = math.inf


# ---------------------------------------------------------------------------------------------
# Errors (mirrors ofi_fast.errors by name; the tests compare the type names and fields)
# ---------------------------------------------------------------------------------------------
class RefError(ValueError):
    def __init__(self, kind: str, field: str, index: int = 0):
        super().__init__(f"{kind}: {field}[{index}]")
        self.kind, self.field, self.index = kind, field, index


# ---------------------------------------------------------------------------------------------
# _ring: rolling sums
# ---------------------------------------------------------------------------------------------
class RollingSum:
    """Rolling sum over a count window, a time window (ts in (t - window_time, t]) or all.

    The sum is recomputed exactly (math.fsum) over the window contents, so it is the exact
    oracle for the compiled compensated sum.
    """

    def __init__(self, window=None, window_time=None, capacity=None, grow=False):
        self.window, self.window_time = window, window_time
        self.capacity = capacity if capacity is not None else (window or 65536)
        self.grow = grow
        self.reset()

    def reset(self):
        self.items = deque()
        self.last_ts = None
        self.all = []

    def update(self, ts, value):
        if self.last_ts is not None and ts < self.last_ts:
            raise RefError("TimeOrderError", "ts")
        if not math.isfinite(value):
            raise RefError("NonFiniteError", "value")
        items = list(self.items)
        if self.window_time is not None:
            items = [(t, v) for t, v in items if t > ts - self.window_time]
            if len(items) >= self.capacity and not self.grow:
                raise RefError("CapacityError", "ts")
            if len(items) >= self.capacity:
                self.capacity *= 2
        elif self.window is not None:
            items = items[-(self.window - 1):] if self.window > 1 else []
        items.append((ts, value))
        self.items = deque(items)
        self.all.append(value)
        self.last_ts = ts
        return self.value

    @property
    def value(self):
        if self.window is None and self.window_time is None:
            return math.fsum(self.all)
        return math.fsum(v for _, v in self.items)

    @property
    def count(self):
        if self.window is None and self.window_time is None:
            return len(self.all)
        return len(self.items)


# ---------------------------------------------------------------------------------------------
# _ofi: best-level OFI (Cont, Kukanov & Stoikov 2014, eq. 10)
# ---------------------------------------------------------------------------------------------
def _side(px, sz, empty_px, price_field, size_field):
    if not math.isfinite(sz):
        raise RefError("NonFiniteError", size_field)
    if sz < 0:
        raise RefError("NegativeSizeError", size_field)
    if math.isfinite(px):
        return px
    if sz == 0 and (math.isnan(px) or px == empty_px):
        return empty_px
    raise RefError("NonFiniteError", price_field)


def l1_ofi_event(prev, cur):
    """e_n from prev = (bid_px, bid_sz, ask_px, ask_sz) and cur, by the case table of CKS."""
    pb0, qb0, pa0, qa0 = prev
    pb1, qb1, pa1, qa1 = cur
    if pb1 > pb0:
        bid = qb1
    elif pb1 == pb0:
        bid = qb1 - qb0
    else:
        bid = -qb0
    if pa1 < pa0:
        ask = -qa1
    elif pa1 == pa0:
        ask = -(qa1 - qa0)
    else:
        ask = qa0
    return bid + ask


class OFI:
    """Streaming best-level OFI with an optional count or time window (see ofi_fast.OFI)."""

    def __init__(self, window=None, window_time=None, capacity=None, grow=False):
        self.roll = RollingSum(window, window_time, capacity, grow)
        self.reset()

    def reset(self):
        self.prev = None
        self.roll.reset()
        self.n_events = self.n_crossed = self.n_locked = 0
        self.es = []

    def update(self, ts, bid_px, bid_sz, ask_px, ask_sz):
        bid_px = _side(bid_px, bid_sz, -INF, "bid_px", "bid_sz")
        ask_px = _side(ask_px, ask_sz, INF, "ask_px", "ask_sz")
        cur = (bid_px, bid_sz, ask_px, ask_sz)
        e = 0.0 if self.prev is None else float(l1_ofi_event(self.prev, cur))
        self.roll.update(ts, e)
        self.es.append(e)
        self.prev = cur
        self.n_events += 1
        self.n_crossed += bid_px > ask_px
        self.n_locked += bid_px == ask_px
        return e

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz):
        n = len(bid_px)
        ts = [0] * n if ts is None else ts
        return [self.update(ts[i], bid_px[i], bid_sz[i], ask_px[i], ask_sz[i]) for i in range(n)]

    @property
    def value(self):
        return self.roll.value

    @property
    def total(self):
        return math.fsum(self.es)

    @property
    def count(self):
        return self.roll.count


def l1_ofi(bid_px, bid_sz, ask_px, ask_sz):
    """e_n per event (first event 0); plain lists in, list of floats out."""
    return OFI().update_many(None, bid_px, bid_sz, ask_px, ask_sz)


# ---------------------------------------------------------------------------------------------
# _impact: bars
# ---------------------------------------------------------------------------------------------
def bars(ts, values, *, every):
    """Clock bars [k*every, (k+1)*every) from the first event's bar to the last, empty included.

    Returns a dict of lists: start, sum, count, first, last (None for empty first/last).
    """
    if not len(ts):
        return {"start": [], "sum": [], "count": [], "first": [], "last": []}
    for i in range(1, len(ts)):
        if ts[i] < ts[i - 1]:
            raise RefError("TimeOrderError", "ts", i)
    k0, k1 = ts[0] // every, ts[-1] // every
    out = {"start": [k * every for k in range(k0, k1 + 1)], "sum": [0.0] * (k1 - k0 + 1),
           "count": [0] * (k1 - k0 + 1), "first": [None] * (k1 - k0 + 1),
           "last": [None] * (k1 - k0 + 1)}
    for t, v in zip(ts, values):
        b = t // every - k0
        if out["count"][b] == 0:
            out["first"][b] = v
        out["sum"][b] += v
        out["count"][b] += 1
        out["last"][b] = v
    return out


# ---------------------------------------------------------------------------------------------
# _book: L2 order book from price-level deltas (dict per side), book imbalance, weighted mid
# ---------------------------------------------------------------------------------------------
class Book:
    """Dict-based price-level book in integer ticks (see ofi_fast.Book for the semantics)."""

    def __init__(self, tick_size, crossed="raise", strict=False, capacity=1024):
        if crossed not in ("raise", "keep", "drop_stale"):
            raise RefError("OFIError", "crossed")
        self.tick_size, self.crossed, self.strict = float(tick_size), crossed, strict
        inv = round(1.0 / self.tick_size)
        self.inv = inv if inv >= 1 and abs(1.0 / self.tick_size - inv) <= 1e-9 * inv else 0
        self.reset()

    def _px(self, ticks):
        """Ticks -> price: ticks / (1 / tick_size) when that is an integer, else * tick_size."""
        return ticks / float(self.inv) if self.inv else ticks * self.tick_size

    def reset(self):
        self.bids, self.asks = {}, {}
        self.n_updates = self.n_crossed = self.n_dropped = self.n_missing = 0

    def _tick(self, price, field="price", index=0):
        if not math.isfinite(price):
            raise RefError("NonFiniteError", field, index)
        x = price / self.tick_size
        r = round(x)
        if abs(r) >= 4e18 or abs(x - r) > 1e-6 + abs(x) * 1e-13:
            raise RefError("OFIError", field, index)
        return int(r)

    def apply(self, side, price, size, index=0):
        if side not in (1, -1):
            raise RefError("OFIError", "side", index)
        if not math.isfinite(size):
            raise RefError("NonFiniteError", "size", index)
        if size < 0:
            raise RefError("NegativeSizeError", "size", index)
        t = self._tick(price, "price", index)
        mine, other = (self.bids, self.asks) if side == 1 else (self.asks, self.bids)
        if size == 0:
            if t in mine:
                del mine[t]
            elif self.strict:
                raise RefError("OFIError", "price", index)
            else:
                self.n_missing += 1
            self.n_updates += 1
            return
        def crosses(o):   # o: a tick on the other side
            return t >= o if side == 1 else o >= t
        crossed_now = bool(other) and crosses(min(other) if side == 1 else max(other))
        if crossed_now and self.crossed == "raise":
            raise RefError("CrossedBookError", "price", index)
        mine[t] = size
        if crossed_now and self.crossed == "drop_stale":
            for o in [o for o in other if crosses(o)]:
                del other[o]
                self.n_dropped += 1
        elif self.crossed == "keep" and self.bids and self.asks \
                and max(self.bids) >= min(self.asks):
            self.n_crossed += 1
        self.n_updates += 1

    def apply_many(self, side, price, size):
        for i in range(len(price)):
            self.apply(int(side[i]), price[i], size[i], i)
        return len(price)

    def load_snapshot(self, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None):
        new = {}
        for name, px, sz in (("bid", bid_px, bid_sz), ("ask", ask_px, ask_sz)):
            if px is None:
                continue
            d = {}
            for i, (p, q) in enumerate(zip(px, sz)):
                if not math.isfinite(q):
                    raise RefError("NonFiniteError", name + "_sz", i)
                if q < 0:
                    raise RefError("NegativeSizeError", name + "_sz", i)
            for i, (p, q) in enumerate(zip(px, sz)):
                if q > 0:
                    d[self._tick(p, name + "_px", i)] = float(q)
            new[name] = d
        bids = new.get("bid", self.bids)
        asks = new.get("ask", self.asks)
        if bids and asks and max(bids) >= min(asks) and self.crossed == "raise":
            raise RefError("CrossedBookError", "bid_px", 0)
        self.bids, self.asks = dict(bids), dict(asks)

    def levels(self, side):
        """[(tick, size), ...] best first."""
        if side == 1:
            return sorted(self.bids.items(), key=lambda kv: -kv[0])
        return sorted(self.asks.items())

    def top(self, n=10):
        """(bid_px, bid_sz, ask_px, ask_sz) lists of length n, best first; NaN / 0 when absent."""
        out = []
        for side in (1, -1):
            lv = self.levels(side)[:n]
            px = [self._px(float(t)) for t, _ in lv] + [math.nan] * (n - len(lv))
            sz = [q for _, q in lv] + [0.0] * (n - len(lv))
            out += [px, sz]
        return tuple(out)

    @property
    def best_bid(self):
        return self._px(float(max(self.bids))) if self.bids else math.nan

    @property
    def best_ask(self):
        return self._px(float(min(self.asks))) if self.asks else math.nan

    @property
    def mid(self):
        if not self.bids or not self.asks:
            return math.nan
        return self._px((float(max(self.bids)) + float(min(self.asks))) * 0.5)

    @property
    def spread(self):
        if not self.bids or not self.asks:
            return math.nan
        return self._px(float(min(self.asks) - max(self.bids)))

    @property
    def weighted_mid(self):
        if not self.bids or not self.asks:
            return math.nan
        b, a = max(self.bids), min(self.asks)
        qb, qa = self.bids[b], self.asks[a]
        return self._px((a * qb + b * qa) / (qb + qa))

    def imbalance(self, levels=1, decay=1.0):
        bs = [q for _, q in self.levels(1)[:levels]]
        as_ = [q for _, q in self.levels(-1)[:levels]]
        wb = sum(decay ** m * q for m, q in enumerate(bs))
        wa = sum(decay ** m * q for m, q in enumerate(as_))
        return 0.0 if wb + wa == 0 else (wb - wa) / (wb + wa)


# ---------------------------------------------------------------------------------------------
# _ofi (multi-level): Xu, Gould & Howison 2018; depth-normalised and integrated OFI of
# Cont, Cucuringu & Zhang 2023 (eq. 3-4)
# ---------------------------------------------------------------------------------------------
class MultiLevelOFI:
    """Per-level e_m (CKS eq. 10 on level-m inputs, levels by rank), windowed sums, depth
    scale Q, normalised and integrated OFI (see ofi_fast.MultiLevelOFI)."""

    def __init__(self, levels, window=None, window_time=None, capacity=None, grow=False,
                 weights=None):
        self.levels, self.window, self.window_time = levels, window, window_time
        self.capacity = capacity if capacity is not None else (window or 65536)
        self.grow = grow
        self.weights = None
        if weights is not None:
            s = sum(abs(x) for x in weights)
            w = [x / s for x in weights]
            self.weights = w if sum(w) >= 0 else [-x for x in w]
        self.reset()

    def reset(self):
        self.prev = None
        self.items = deque()     # (ts, [e_1..e_L, depth]) in the window
        self.all = []
        self.last_ts = None
        self.n_events = 0

    def update(self, ts, bid_px, bid_sz, ask_px, ask_sz):
        L = self.levels
        if len(bid_px) != L:
            raise RefError("OFIError", "bid_px")
        cur = []
        for m in range(L):
            b = _side(bid_px[m], bid_sz[m], -INF, "bid_px", "bid_sz")
            a = _side(ask_px[m], ask_sz[m], INF, "ask_px", "ask_sz")
            cur.append((b, bid_sz[m], a, ask_sz[m]))
        if self.last_ts is not None and ts < self.last_ts:
            raise RefError("TimeOrderError", "ts")
        items = list(self.items)
        if self.window_time is not None:
            items = [(t, v) for t, v in items if t > ts - self.window_time]
            if len(items) >= self.capacity:
                if not self.grow:
                    raise RefError("CapacityError", "ts")
                self.capacity *= 2
        elif self.window is not None:
            items = items[-(self.window - 1):] if self.window > 1 else []
        if self.prev is None:
            e = [0.0] * L
        else:
            e = [float(l1_ofi_event(self.prev[m], cur[m])) for m in range(L)]
        depth = math.fsum(c[1] + c[3] for c in cur)
        items.append((ts, e + [depth]))
        self.items = deque(items)
        self.all.append(e + [depth])
        self.prev = cur
        self.last_ts = ts
        self.n_events += 1
        return e

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz):
        n = len(bid_px)
        ts = [0] * n if ts is None else ts
        return [self.update(ts[i], bid_px[i], bid_sz[i], ask_px[i], ask_sz[i]) for i in range(n)]

    def _rows(self):
        if self.window is None and self.window_time is None:
            return self.all
        return [v for _, v in self.items]

    @property
    def values(self):
        rows = self._rows()
        return [math.fsum(r[m] for r in rows) for m in range(self.levels)]

    @property
    def total(self):
        return [math.fsum(r[m] for r in self.all) for m in range(self.levels)]

    @property
    def count(self):
        return len(self._rows())

    @property
    def depth(self):
        rows = self._rows()
        if not rows:
            return 0.0
        return math.fsum(r[self.levels] for r in rows) / (2 * len(rows) * self.levels)

    @property
    def normalized(self):
        q = self.depth
        return [v / q if q > 0 else 0.0 for v in self.values]

    @property
    def integrated(self):
        if self.weights is None:
            return math.nan
        return math.fsum(w * x for w, x in zip(self.weights, self.normalized))

    def fit(self, sample):
        self.weights, self.explained_variance_ratio = integrated_weights(sample)
        return self.weights


def mlofi(bid_px, bid_sz, ask_px, ask_sz):
    """Per-level e_{m,n} for lists of top-L rows; the first row is all zeros."""
    L = len(bid_px[0]) if len(bid_px) else 1
    return MultiLevelOFI(L).update_many(None, bid_px, bid_sz, ask_px, ask_sz)


def integrated_weights(sample, iterations=10000):
    """First principal vector of the centred sample covariance (ddof 1) by power iteration,
    L1-normalised, sign so that sum(w) > 0; returns (weights, explained_variance_ratio)."""
    n, L = len(sample), len(sample[0])
    mean = [math.fsum(r[j] for r in sample) / n for j in range(L)]
    cov = [[math.fsum((r[i] - mean[i]) * (r[j] - mean[j]) for r in sample) / (n - 1)
            for j in range(L)] for i in range(L)]
    v = [1.0 + 0.1 * j for j in range(L)]
    lam = 0.0
    for _ in range(iterations):
        w = [math.fsum(cov[i][j] * v[j] for j in range(L)) for i in range(L)]
        norm = math.sqrt(math.fsum(x * x for x in w))
        w = [x / norm for x in w]
        done = max(abs(a - b) for a, b in zip(w, v)) < 1e-15
        v, lam = w, norm
        if done:
            break
    s = sum(abs(x) for x in v)
    v = [x / s for x in v]
    if sum(v) < 0:
        v = [-x for x in v]
    trace = math.fsum(cov[i][i] for i in range(L))
    return v, lam / trace


class BookOFI:
    """Reference BookOFI: a dict Book plus MultiLevelOFI over its top `levels` after each delta
    (prices in ticks; absent levels -inf / +inf with size 0)."""

    def __init__(self, tick_size, levels=10, window=None, window_time=None, capacity=None,
                 grow=False, crossed="raise", strict=False, weights=None):
        self.book = Book(tick_size, crossed=crossed, strict=strict)
        self.ofi = MultiLevelOFI(levels, window, window_time, capacity, grow, weights)
        self.levels = levels

    def _state(self):
        L = self.levels
        b = self.book.levels(1)[:L]
        a = self.book.levels(-1)[:L]
        bp = [float(t) for t, _ in b] + [-INF] * (L - len(b))
        bs = [q for _, q in b] + [0.0] * (L - len(b))
        ap = [float(t) for t, _ in a] + [INF] * (L - len(a))
        az = [q for _, q in a] + [0.0] * (L - len(a))
        return bp, bs, ap, az

    def update(self, ts, side, price, size, index=0):
        if self.ofi.last_ts is not None and ts < self.ofi.last_ts:
            raise RefError("TimeOrderError", "ts", index)
        self.book.apply(side, price, size, index)
        return self.ofi.update(ts, *self._state())[0]

    def update_many(self, ts, side, price, size, levels=False, batch_end=None):
        """batch_end[i] False: the delta only updates the book (e = 0, no OFI event); the
        row ending the batch is one event between batch states."""
        n = len(price)
        ts = [self.ofi.last_ts or 0] * n if ts is None else ts
        rows = []
        for i in range(n):
            if batch_end is not None and not batch_end[i]:
                if self.ofi.last_ts is not None and ts[i] < self.ofi.last_ts:
                    raise RefError("TimeOrderError", "ts", i)
                self.book.apply(int(side[i]), price[i], size[i], i)
                rows.append([0.0] * self.levels)
                continue
            self.update(ts[i], int(side[i]), price[i], size[i], i)
            rows.append(list(self.ofi.all[-1][:self.levels]))
        e1 = [r[0] for r in rows]
        return (e1, rows) if levels else e1

    def load_snapshot(self, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None):
        self.book.load_snapshot(bid_px, bid_sz, ask_px, ask_sz)
        self.ofi.reset()
        self.ofi.prev = [tuple(x) for x in zip(*self._state())]

    @property
    def values(self):
        return self.ofi.values
