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

    def push(self, ts, value):
        """Add (ts, value), evicting what leaves the window; nothing is returned."""
        if self.last_ts is not None and ts < self.last_ts:
            raise RefError("TimeOrderError", "ts")
        if not math.isfinite(value):
            raise RefError("NonFiniteError", "value")
        if self.window_time is not None:
            expired = 0
            while expired < len(self.items) and self.items[expired][0] <= ts - self.window_time:
                expired += 1
            if len(self.items) - expired >= self.capacity:
                if not self.grow:
                    raise RefError("CapacityError", "ts")
                self.capacity *= 2
            for _ in range(expired):
                self.items.popleft()
        elif self.window is not None and len(self.items) == self.window:
            self.items.popleft()
        self.items.append((ts, value))
        self.all.append(value)
        self.last_ts = ts

    def update(self, ts, value):
        self.push(ts, value)
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
        self.roll.push(ts, e)
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
def bars(ts, values, *, every, closed="left"):
    """Clock bars [k*every, (k+1)*every) from the first event's bar to the last, empty included.

    ``closed="right"``: bars (k*every, (k+1)*every] (CKS eq. 12), still labelled by k*every.
    Returns a dict of lists: start, sum, count, first, last (None for empty first/last).
    """
    if not len(ts):
        return {"start": [], "sum": [], "count": [], "first": [], "last": []}
    for i in range(1, len(ts)):
        if ts[i] < ts[i - 1]:
            raise RefError("TimeOrderError", "ts", i)
    if closed == "right":
        # k*every < t <= (k+1)*every  <=>  k = ceil(t / every) - 1
        out = bars([-((-t) // every) * every - 1 for t in ts], values, every=every)
        return out
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
# _trades: trade-sign classification, trade flow imbalance, BVC, VPIN
# ---------------------------------------------------------------------------------------------
def _ref_tick_rule(prices):
    """Tick rule (Lee & Ready 1991) with zero-tick carry-forward; 0 before the first change."""
    out, last, prev = [], 0, None
    for p in prices:
        if prev is not None and p != prev:
            last = 1 if p > prev else -1
        out.append(last)
        prev = p
    return out


def _ref_sign(method, p, tick, bid, ask):
    """One trade's sign given its tick-rule sign and the prevailing quote (NaN = none)."""
    if method == "tick":
        return tick
    if not (bid < ask):  # missing, locked or crossed quote: tick rule
        return tick
    if method == "emo":
        return 1 if p == ask else (-1 if p == bid else tick)
    mid = (bid + ask) / 2
    if p > mid:
        return 1
    if p < mid:
        return -1
    return 0 if method == "quote" else tick


def classify_trades(price, size=None, *, method, bid_px=None, ask_px=None, ts=None,
                    quote_ts=None, quote_lag=0, tick_size=None):
    """Signs +1/-1/0 per trade (see ofi_fast.classify_trades); plain lists in, list out."""
    if method not in ("tick", "quote", "lee_ready", "emo"):
        raise RefError("OFIError", "method")
    rnd = (lambda x: x) if tick_size is None else (lambda x: float(round(x / tick_size)))
    price = [rnd(float(p)) for p in price]
    for i, p in enumerate(price):
        if not math.isfinite(p):
            raise RefError("NonFiniteError", "price", i)
    ticks = _ref_tick_rule(price)
    n = len(price)
    if method == "tick":
        return ticks
    if quote_ts is None:
        bids = [rnd(float(b)) for b in bid_px]
        asks = [rnd(float(a)) for a in ask_px]
    else:
        bids, asks = [], []
        for i in range(n):
            j = None
            for k in range(len(quote_ts)):  # the last quote with quote_ts <= ts - lag
                if quote_ts[k] <= ts[i] - quote_lag:
                    j = k
            bids.append(math.nan if j is None else rnd(float(bid_px[j])))
            asks.append(math.nan if j is None else rnd(float(ask_px[j])))
    return [_ref_sign(method, price[i], ticks[i], bids[i], asks[i]) for i in range(n)]


class Classifier:
    """Streaming classifier: update_quote(ts, bid, ask), update(ts, price) -> +1/-1/0."""

    def __init__(self, method="lee_ready", quote_lag=0):
        self.method, self.quote_lag = method, quote_lag
        self.quotes = []
        self.prev = None
        self.last = 0

    def update_quote(self, ts, bid_px, ask_px):
        self.quotes.append((ts, bid_px, ask_px))

    def tick(self, price):
        if self.prev is not None and price != self.prev:
            self.last = 1 if price > self.prev else -1
        self.prev = price
        return self.last

    def update(self, ts, price):
        q = [x for x in self.quotes if x[0] <= ts - self.quote_lag]
        bid, ask = (q[-1][1], q[-1][2]) if q else (math.nan, math.nan)
        return _ref_sign(self.method, price, self.tick(price), bid, ask)


class TradeFlow:
    """Trade flow imbalance over a count / time window or the whole stream (ofi_fast.TradeFlow).

    Window contents are kept as a list and every volume is summed exactly with math.fsum.
    """

    def __init__(self, window=None, window_time=None, classify=None, capacity=None, grow=False,
                 window_volume=None):
        self.window, self.window_time, self.classify = window, window_time, classify
        self.window_volume = window_volume
        if window_volume is not None and capacity is None:
            capacity = 65536
        self.capacity = capacity if capacity is not None else (window or 65536)
        self.grow = grow
        self.reset()

    def reset(self):
        self.items = []              # (ts, size, side) in the window
        self.cls = Classifier(self.classify or "tick")
        self.bid = self.ask = math.nan
        self.last_ts = None
        self.n_events = self.n_classified = 0

    def update_quote(self, ts, bid_px, ask_px):
        self.bid, self.ask = bid_px, ask_px

    def update(self, ts, price, size, side=0):
        if self.last_ts is not None and ts < self.last_ts:
            raise RefError("TimeOrderError", "ts")
        if not math.isfinite(price):
            raise RefError("NonFiniteError", "price")
        if not math.isfinite(size):
            raise RefError("NonFiniteError", "size")
        if size < 0:
            raise RefError("NegativeSizeError", "size")
        if side not in (-1, 0, 1):
            raise RefError("OFIError", "side")
        items = self.items
        if self.window_time is not None:
            items = [x for x in items if x[0] > ts - self.window_time]
            if len(items) >= self.capacity:
                if not self.grow:
                    raise RefError("CapacityError", "ts")
                self.capacity *= 2
        elif self.window is not None:
            items = items[len(items) - self.window + 1:] if len(items) >= self.window else items
        if self.classify is not None:
            tick = self.cls.tick(price)
            if side == 0:
                side = _ref_sign(self.classify, price, tick, self.bid, self.ask)
                self.n_classified += side != 0
        items.append((ts, size, side))
        if self.window_volume is not None:
            # the shortest run of latest trades holding >= window_volume; the oldest of them
            # counts only the part that makes the total exactly window_volume
            acc, keep = 0.0, []
            for t, v, sd in reversed(items):
                keep.append((t, v, sd))
                acc += v
                if acc >= self.window_volume:
                    t, v, sd = keep[-1]
                    keep[-1] = (t, v - (acc - self.window_volume), sd)
                    break
            items = keep[::-1]
            if len(items) > self.capacity:
                if not self.grow:
                    raise RefError("CapacityError", "ts")
                self.capacity *= 2
        self.items = items
        self.last_ts = ts
        self.n_events += 1
        return side * size

    def update_many(self, ts, price, size, side=None, *, bid_px=None, ask_px=None):
        n = len(price)
        ts = [self.last_ts or 0] * n if ts is None else ts
        side = [0] * n if side is None else side
        out, imb = [], []
        for i in range(n):
            if bid_px is not None:
                self.update_quote(ts[i], bid_px[i], ask_px[i])
            out.append(self.update(ts[i], price[i], size[i], side[i]))
            imb.append(self.imbalance)
        return out, imb

    def _vol(self, s):
        return math.fsum(v for _, v, sd in self.items if sd == s)

    buy_volume = property(lambda self: self._vol(1))
    sell_volume = property(lambda self: self._vol(-1))
    unknown_volume = property(lambda self: self._vol(0))
    n_buy = property(lambda self: sum(1 for x in self.items if x[2] == 1))
    n_sell = property(lambda self: sum(1 for x in self.items if x[2] == -1))
    n_unknown = property(lambda self: sum(1 for x in self.items if x[2] == 0))
    count = property(lambda self: len(self.items))

    @property
    def net(self):
        return self.buy_volume - self.sell_volume

    @property
    def imbalance(self):
        b, s = self.buy_volume, self.sell_volume
        return (b - s) / (b + s) if b + s > 0 else 0.0


def trade_flow(ts, price, size, side=None, *, window=None, window_time=None, classify=None,
               bid_px=None, ask_px=None, rolling=False, capacity=None, grow=False,
               window_volume=None):
    """Signed volume per trade (and the rolling imbalance with rolling=True)."""
    out, imb = TradeFlow(window, window_time, classify, capacity, grow,
                         window_volume).update_many(
        ts, price, size, side, bid_px=bid_px, ask_px=ask_px)
    return (out, imb) if rolling else out


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def bvc(ts, price, size, *, every, window=50, sigma=None):
    """BVC over clock bars (see ofi_fast.bvc); returns a dict of lists."""
    import statistics
    k0, k1 = ts[0] // every, ts[-1] // every
    nb = k1 - k0 + 1
    vol, last = [0.0] * nb, [None] * nb
    for t, p, s in zip(ts, price, size):
        k = t // every - k0
        vol[k] += s
        last[k] = p
    for k in range(1, nb):
        if last[k] is None:
            last[k] = last[k - 1]
    dp = [math.nan] + [last[k] - last[k - 1] for k in range(1, nb)]
    sig, frac = [], []
    for i in range(nb):
        if sigma is not None:
            sg = sigma
        else:
            past = [d for d in dp[max(0, i - window):i] if not math.isnan(d)]
            sg = statistics.stdev(past) if len(past) >= 2 else math.nan
        sig.append(sg)
        frac.append(normal_cdf(dp[i] / sg) if sg > 0 and not math.isnan(dp[i]) else 0.5)
    return {"start": [(k0 + k) * every for k in range(nb)], "volume": vol, "last": last,
            "dp": dp, "sigma": sig, "buy_fraction": frac}


def vpin(ts, size, side=None, *, buy_fraction=None, bucket_volume, n_buckets):
    """VPIN at each bucket close: lists (ts, vpin, buy, sell), trades split across buckets.

    Written independently of the compiled kernel: the trades' cumulative volume is cut at the
    multiples of V, so bucket k holds the part of each trade inside [k V, (k + 1) V).
    """
    n = len(size)
    if buy_fraction is None:
        buy_fraction = [0.5] * n if side is None else [0.5 * (s + 1) for s in side]
    V = bucket_volume
    out_ts, out_v, out_b, out_s, imbs = [], [], [], [], []
    cum, k, buy = 0.0, 0, 0.0
    for t, v, f in zip(ts, size, buy_fraction):
        lo, hi = cum, cum + v
        while hi >= (k + 1) * V and v > 0:
            piece = (k + 1) * V - max(lo, k * V)
            buy += piece * f
            imbs.append(abs(V - 2 * buy))
            out_ts.append(t)
            out_b.append(buy)
            out_s.append(V - buy)
            out_v.append(math.fsum(imbs[-n_buckets:]) / (n_buckets * V)
                         if len(imbs) >= n_buckets else math.nan)
            k += 1
            buy = 0.0
        if hi > max(lo, k * V):
            buy += (hi - max(lo, k * V)) * f
        cum = hi
    return out_ts, out_v, out_b, out_s


# ---------------------------------------------------------------------------------------------
# _book: L2 order book from price-level deltas (dict per side), book imbalance, weighted mid
# ---------------------------------------------------------------------------------------------
class Book:
    """Dict-based price-level book in integer ticks (see ofi_fast.Book for the semantics).
    Crossing is judged at message ends only (rows with batch_end True)."""

    def __init__(self, tick_size, crossed="keep", strict=False, capacity=1024):
        if crossed not in ("raise", "keep"):
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
        self.n_updates = self.n_crossed = self.n_locked = self.n_missing = 0

    def _tick(self, price, field="price", index=0):
        if not math.isfinite(price):
            raise RefError("NonFiniteError", field, index)
        x = price / self.tick_size
        r = round(x)
        if abs(r) >= 4e18 or abs(x - r) > 1e-6 + abs(x) * 1e-13:
            raise RefError("OFIError", field, index)
        return int(r)

    def apply(self, side, price, size, index=0, batch_end=True):
        if side not in (1, -1):
            raise RefError("OFIError", "side", index)
        if not math.isfinite(size):
            raise RefError("NonFiniteError", "size", index)
        if size < 0:
            raise RefError("NegativeSizeError", "size", index)
        t = self._tick(price, "price", index)
        mine = self.bids if side == 1 else self.asks
        if size == 0 and t not in mine and self.strict:
            raise RefError("OFIError", "price", index)
        if batch_end and self.crossed == "raise":     # refused if the end state would cross
            after = dict(mine)
            if size == 0:
                after.pop(t, None)
            else:
                after[t] = size
            bids, asks = (after, self.asks) if side == 1 else (self.bids, after)
            if bids and asks and max(bids) >= min(asks):
                raise RefError("CrossedBookError", "price", index)
        if size == 0:
            if t in mine:
                del mine[t]
            else:
                self.n_missing += 1
        else:
            mine[t] = size
        self.n_updates += 1
        if batch_end:
            self._judge()

    def _judge(self):
        """End of a message: count a crossed / locked state (nothing is ever removed)."""
        if not self.bids or not self.asks:
            return
        b, a = max(self.bids), min(self.asks)
        if b == a:
            self.n_locked += 1
        elif b > a:
            self.n_crossed += 1

    def apply_many(self, side, price, size, batch_end=None):
        for i in range(len(price)):
            self.apply(int(side[i]), price[i], size[i], i,
                       True if batch_end is None else bool(batch_end[i]))
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
                 grow=False, crossed="keep", strict=False, weights=None):
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
                self.book.apply(int(side[i]), price[i], size[i], i, batch_end=False)
                rows.append([0.0] * self.levels)
                continue
            self.update(ts[i], int(side[i]), price[i], size[i], i)
            rows.append(list(self.ofi.all[-1][:self.levels]))
        e1 = [r[0] for r in rows]
        return (e1, rows) if levels else e1

    def load_snapshot(self, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None, ts=None,
                      allow_older=False):
        """The snapshot happens at ts (None: the last event's time); older than the last
        event -> TimeOrderError unless allow_older (then the time order restarts at ts)."""
        last = self.ofi.last_ts
        if ts is not None and last is not None and ts < last and not allow_older:
            raise RefError("TimeOrderError", "ts", 0)
        self.book.load_snapshot(bid_px, bid_sz, ask_px, ask_sz)
        self.ofi.reset()
        self.ofi.prev = [tuple(x) for x in zip(*self._state())]
        self.ofi.last_ts = last if ts is None else ts

    @property
    def values(self):
        return self.ofi.values
def event_bars(values, *, every, ts=None):
    """Bars of ``every`` consecutive events; start = index (or ts) of each bar's first event."""
    out = {"start": [], "sum": [], "count": [], "first": [], "last": []}
    for j in range(0, len(values), every):
        chunk = list(values[j:j + every])
        out["start"].append(j if ts is None else ts[j])
        out["sum"].append(float(sum(chunk)))
        out["count"].append(len(chunk))
        out["first"].append(chunk[0])
        out["last"].append(chunk[-1])
    return out


def volume_bars(volume, values, *, every, ts=None):
    """Event i goes to bar floor(volume before i / every); bars are the non-empty groups."""
    out = {"start": [], "sum": [], "count": [], "first": [], "last": []}
    before, cur = 0.0, None
    for i, (v, x) in enumerate(zip(volume, values)):
        if v < 0:
            raise RefError("NegativeSizeError", "volume", i)
        k = math.floor(before / every)
        if k != cur:
            cur = k
            out["start"].append(i if ts is None else ts[i])
            for key, val in (("sum", 0.0), ("count", 0), ("first", x), ("last", x)):
                out[key].append(val)
        out["sum"][-1] += x
        out["count"][-1] += 1
        out["last"][-1] = x
        before += v
    return out


def bar_mid(ts, mid, *, every, closed="left", tick_size=None):
    """Last mid at or before each clock bar's end (carried through empty bars) and its change
    from the previous bar (CKS eq. 11); the first bar's reference is the first event's mid."""
    b = bars(ts, mid, every=every, closed=closed)
    prev = mid[0] if len(mid) else None
    out = {"start": b["start"], "mid": [], "dmid": [], "count": b["count"]}
    for last in b["last"]:
        m = prev if last is None else last
        out["mid"].append(m)
        out["dmid"].append(m - prev)
        prev = m
    if tick_size is not None:
        out["dmid_ticks"] = [d / tick_size for d in out["dmid"]]
    return out


def _solve(a, b):
    """Gaussian elimination with partial pivoting; None when (numerically) singular."""
    p = len(b)
    m = [list(map(float, a[i])) + [float(b[i])] for i in range(p)]
    for c in range(p):
        r = max(range(c, p), key=lambda i: abs(m[i][c]))
        if abs(m[r][c]) <= 1e-12 * max(1.0, max(abs(m[i][i]) for i in range(p))):
            return None
        m[c], m[r] = m[r], m[c]
        for i in range(c + 1, p):
            f = m[i][c] / m[c][c]
            for j in range(c, p + 1):
                m[i][j] -= f * m[c][j]
    x = [0.0] * p
    for i in range(p - 1, -1, -1):
        x[i] = (m[i][p] - sum(m[i][j] * x[j] for j in range(i + 1, p))) / m[i][i]
    return x


def ols_fit(xs, ys, ridge=0.0):
    """OLS with intercept by the two-pass centred normal equations (fsum): (beta list, alpha,
    r2) or (None, nan, nan) when singular. xs: list of p-tuples."""
    n = len(ys)
    if n == 0:
        return None, math.nan, math.nan
    p = len(xs[0])
    mx = [math.fsum(x[i] for x in xs) / n for i in range(p)]
    my = math.fsum(ys) / n
    dx = [[x[i] - mx[i] for i in range(p)] for x in xs]
    dy = [y - my for y in ys]
    cxx = [[math.fsum(d[i] * d[j] for d in dx) + (ridge if i == j else 0.0) for j in range(p)]
           for i in range(p)]
    cxy = [math.fsum(d[i] * e for d, e in zip(dx, dy)) for i in range(p)]
    syy = math.fsum(e * e for e in dy)
    if any(cxx[i][i] <= 0.0 for i in range(p)):
        return None, math.nan, math.nan
    beta = _solve(cxx, cxy)
    if beta is None:
        return None, math.nan, math.nan
    alpha = my - sum(b * m for b, m in zip(beta, mx))
    ssr = math.fsum((y - alpha - sum(b * xi for b, xi in zip(beta, x))) ** 2
                    for x, y in zip(xs, ys))
    r2 = 1.0 - ssr / syy if syy > 0 else math.nan
    return beta, alpha, r2


class RollingOLS:
    """Rolling OLS with intercept that refits the window from scratch on every query."""

    def __init__(self, window=None, window_time=None, n_features=1, *, capacity=None,
                 grow=False, ridge=0.0):
        self.window, self.window_time, self.p, self.ridge = window, window_time, n_features, ridge
        self.items = deque()
        self.last_ts = None

    def update(self, x, y, ts=None):
        xt = (float(x),) if self.p == 1 and not hasattr(x, "__len__") else tuple(map(float, x))
        if not all(math.isfinite(v) for v in xt):
            raise RefError("NonFiniteError", "x")
        if not math.isfinite(y):
            raise RefError("NonFiniteError", "y")
        if ts is not None and self.last_ts is not None and ts < self.last_ts:
            raise RefError("TimeOrderError", "ts")
        if ts is not None:
            self.last_ts = ts
        self.items.append((ts, xt, float(y)))
        if self.window_time is not None:
            while self.items[0][0] <= ts - self.window_time:
                self.items.popleft()
        elif self.window is not None and len(self.items) > self.window:
            self.items.popleft()
        return len(self.items)

    def _fit(self):
        return ols_fit([x for _, x, _ in self.items], [y for _, _, y in self.items], self.ridge)

    @property
    def n(self):
        return len(self.items)

    @property
    def beta(self):
        b = self._fit()[0]
        if b is None:
            return math.nan if self.p == 1 else [math.nan] * self.p
        return b[0] if self.p == 1 else b

    @property
    def alpha(self):
        return self._fit()[1]

    @property
    def r2(self):
        return self._fit()[2]

    def predict(self, x):
        b, a, _ = self._fit()
        if b is None:
            return math.nan
        xt = (x,) if self.p == 1 and not hasattr(x, "__len__") else tuple(x)
        return a + sum(bi * xi for bi, xi in zip(b, xt))


def fit_impact(ofi, dmid, *, lags=None, small_sample=False):
    """CKS eq. 14 by OLS; returns a dict with beta, alpha, r2, t_beta, t_alpha, t_beta_hc,
    t_beta_robust (Newey-West, Bartlett weights, default L = floor(4 (n/100)^(2/9))), n,
    n_skipped. NaN pairs are skipped; n < 3 gives NaN t-statistics."""
    pairs = [(x, y) for x, y in zip(ofi, dmid) if not (math.isnan(x) or math.isnan(y))]
    n = len(pairs)
    L = (math.floor(4 * (n / 100) ** (2 / 9)) if n else 0) if lags is None else lags
    L = min(L, max(n - 1, 0))
    nan = math.nan
    out = dict(beta=nan, alpha=nan, r2=nan, t_beta=nan, t_alpha=nan, t_beta_hc=nan,
               t_beta_robust=nan, lags=L, n=n, n_skipped=len(ofi) - n)
    if n < 2:
        return out
    xs = [x for x, _ in pairs]
    ys = [y for _, y in pairs]
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    sxy = math.fsum((x - mx) * (y - my) for x, y in pairs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx <= 0:
        return out
    beta = sxy / sxx
    alpha = my - beta * mx
    out.update(beta=beta, alpha=alpha, r2=sxy * sxy / (sxx * syy) if syy > 0 else nan)
    if n < 3:
        return out
    e = [y - alpha - beta * x for x, y in pairs]
    s2 = math.fsum(v * v for v in e) / (n - 2)
    u = [(x - mx) * v for x, v in zip(xs, e)]
    f = n / (n - 2) if small_sample else 1.0
    uu = math.fsum(v * v for v in u)
    om = uu + 2 * math.fsum((1 - j / (L + 1)) * math.fsum(u[t] * u[t - j] for t in range(j, n))
                            for j in range(1, L + 1))

    def t(se):
        return beta / se if se > 0 else (math.copysign(math.inf, beta) if beta else nan)

    out.update(t_beta=t(math.sqrt(s2 / sxx)),
               t_alpha=alpha / math.sqrt(s2 * (1 / n + mx * mx / sxx)) if s2 > 0 else nan,
               t_beta_hc=t(math.sqrt(f * uu) / sxx),
               t_beta_robust=t(math.sqrt(f * max(om, 0.0)) / sxx))
    return out
class VPIN:
    """Streaming VPIN oracle: keeps every trade and recomputes with vpin() (see ofi_fast.VPIN)."""

    def __init__(self, bucket_volume, n_buckets):
        self.bucket_volume, self.n_buckets = bucket_volume, n_buckets
        self.ts, self.size, self.frac = [], [], []

    def update(self, ts, size, side=0):
        return self.update_fraction(ts, size, 0.5 * (side + 1))

    def update_fraction(self, ts, size, buy_fraction):
        before = self.n_closed
        self.ts.append(ts)
        self.size.append(size)
        self.frac.append(buy_fraction)
        return self.n_closed - before

    def _buckets(self):
        return vpin(self.ts, self.size, buy_fraction=self.frac,
                    bucket_volume=self.bucket_volume, n_buckets=self.n_buckets)

    @property
    def n_closed(self):
        return len(self._buckets()[0])

    @property
    def value(self):
        v = self._buckets()[1]
        return v[-1] if v else math.nan


# ---------------------------------------------------------------------------------------------
# Feeds: the typed CSV tokenizer (ofi_fast._csv), line by line in plain Python
# ---------------------------------------------------------------------------------------------

# Column kinds and parse statuses: the values of ofi_fast._csv (tests check they agree).
CSV_SKIP, CSV_INT, CSV_INT8, CSV_SCALED, CSV_FLOAT, CSV_INT_F64 = 0, 1, 2, 3, 4, 5
CSV_BOOL, CSV_SIDE_BOOK, CSV_SIDE_TRADE, CSV_ID, CSV_MATCH = 6, 7, 8, 9, 10
CSV_OTHER = 10   # a MATCH field of another value: the line is skipped (not an error)
(CSV_OK, CSV_BAD_NUMBER, CSV_OUT_OF_RANGE, CSV_OVERFLOW, CSV_TOO_FEW, CSV_TOO_MANY,
 CSV_BAD_TOKEN, CSV_EMPTY_FIELD, CSV_EMPTY_LINE, CSV_TOO_LONG) = range(10)
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_WORDS = {CSV_BOOL: {b"true": 1, b"false": 0}, CSV_SIDE_BOOK: {b"bid": 1, b"ask": -1},
          CSV_SIDE_TRADE: {b"buy": 1, b"sell": -1, b"unknown": 0}}


class CSVFieldError(ValueError):
    """(status, 1-based line, 0-based field) of the first malformed line."""

    def __init__(self, status, line, field):
        super().__init__(status, line, field)
        self.status, self.line, self.field = status, line, field


def _digits_end(s, i):
    while i < len(s) and 48 <= s[i] <= 57:
        i += 1
    return i


def _int_prefix(s):
    """(value or None, end) of ``[+-]?[0-9]+`` at the start of ``s``."""
    i = 1 if s[:1] in (b"+", b"-") else 0
    j = _digits_end(s, i)
    return (int(s[:j]) if j > i else None), j


def _csv_field(spec, s, prev_sentinel):
    """(status, value, hit_sentinel, bad_id) of one field under ``spec`` (a _csv.column dict)."""
    kind = spec["kind"]
    if kind == CSV_SKIP:
        return CSV_OK, None, False, False
    if kind == CSV_MATCH:
        if s == spec["token"]:
            return CSV_OK, None, False, False
        return (CSV_BAD_TOKEN if spec["strict"] else CSV_OTHER), None, False, False
    if kind in _WORDS:
        if not s:
            return CSV_EMPTY_FIELD, None, False, False
        v = _WORDS[kind].get(s)
        return (CSV_OK, v, False, False) if v is not None else (CSV_BAD_TOKEN, None, False, False)
    if kind == CSV_ID:
        v, j = _int_prefix(s)
        if v is None or j != len(s) or not _I64_MIN <= v <= _I64_MAX:
            return CSV_OK, -1, False, True
        return CSV_OK, v, False, False
    bad = CSV_EMPTY_FIELD if not s else CSV_BAD_NUMBER
    if kind == CSV_FLOAT:
        if not s and spec.get("empty") is not None:
            return CSV_OK, float(spec["empty"]), False, False
        i = 1 if s[:1] in (b"+", b"-") else 0
        j = _digits_end(s, i)
        k = j
        if s[k:k + 1] == b".":
            k = _digits_end(s, k + 1)
        if k - i - (1 if k > j else 0) <= 0:  # no digit
            return bad, None, False, False
        if s[k:k + 1] in (b"e", b"E"):
            e = k + 1 + (1 if s[k + 1:k + 2] in (b"+", b"-") else 0)
            k2 = _digits_end(s, e)
            if k2 == e:
                return CSV_BAD_NUMBER, None, False, False
            k = k2
        v = float(s[:k])
        if math.isinf(v):
            return CSV_OVERFLOW, None, False, False
        if k != len(s):
            return CSV_BAD_NUMBER, None, False, False
        if (spec.get("positive") and not v > 0) or (spec.get("nonneg") and not v >= 0):
            return CSV_OUT_OF_RANGE, None, False, False
        return CSV_OK, v, False, False
    if kind == CSV_SCALED:
        d = spec.get("digits", 0)
        i = 1 if s[:1] in (b"+", b"-") else 0
        j = _digits_end(s, i)
        whole, frac, k = s[i:j], b"", j
        if s[j:j + 1] == b".":
            k = _digits_end(s, j + 1)
            frac = s[j + 1:k]
        if not whole and not frac:
            return bad, None, False, False
        mag = int(whole or b"0") * 10**d + int(frac[:d].ljust(d, b"0") or b"0")
        if len(frac) > d and frac[d] >= ord("5"):
            mag += 1
        if mag > _I64_MAX + (s[:1] == b"-"):
            return CSV_OVERFLOW, None, False, False
        if k != len(s):
            return CSV_BAD_NUMBER, None, False, False
        v = -mag if s[:1] == b"-" else mag
    else:  # INT, INT8, INT_F64
        v, j = _int_prefix(s)
        if v is None:
            return bad, None, False, False
        if not _I64_MIN <= v <= _I64_MAX:
            return CSV_OVERFLOW, None, False, False
        if j != len(s):
            return CSV_BAD_NUMBER, None, False, False
    if kind == CSV_INT_F64 and spec.get("sentinel") is not None and v == spec["sentinel"]:
        return CSV_OK, math.nan, True, False
    lo, hi = spec.get("lo"), spec.get("hi")
    if kind == CSV_INT8:
        lo = -128 if lo is None else lo
        hi = 127 if hi is None else hi
    if (lo is not None and v < lo) or (hi is not None and v > hi) or (spec.get("nonzero")
                                                                      and v == 0):
        return CSV_OUT_OF_RANGE, None, False, False
    if kind == CSV_INT_F64:
        if spec.get("zero_after_sentinel") and prev_sentinel:
            return CSV_OK, 0.0, False, False
        return CSV_OK, float(v) / float(spec.get("divisor", 1.0)), False, False
    if kind == CSV_INT:
        v = v * spec.get("mult", 1)
        if not _I64_MIN <= v <= _I64_MAX:
            return CSV_OVERFLOW, None, False, False
    if kind in (CSV_INT, CSV_SCALED):
        v += spec.get("offset", 0)
        if not _I64_MIN <= v <= _I64_MAX:
            return CSV_OVERFLOW, None, False, False
    return CSV_OK, v, False, False


def csv_parse(columns, data: bytes, *, skip_blank=False, on_error="raise", counts=None):
    """Reference of ``ofi_fast._csv.Tokenizer``: parse ``data`` line by line.

    Lines end with ``\\n`` or ``\\r\\n`` (the last may lack it); fields are split at commas
    and each parsed by its column spec (see ofi_fast/_csv.pyx for the grammar of each kind),
    left to right, the first bad field deciding the error. Returns ``(values, bad_ids,
    bad_lines)``: ``values`` one list per column (None for skipped ones), ``bad_ids`` the
    number of ID fields read as -1 in the rows kept, ``bad_lines`` the (status, line, field)
    of the lines skipped under ``on_error="skip"``; under ``"raise"`` the first bad line raises
    :class:`CSVFieldError`. A line whose MATCH field holds another value is skipped and counted
    in ``counts["other"]`` (when a dict is given).
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    ncols = len(columns)
    out = [None if c["kind"] in (CSV_SKIP, CSV_MATCH) else [] for c in columns]
    bad_ids, bad_lines, other = 0, [], 0
    for no, line in enumerate(lines, 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        err = None
        row = []
        ids = 0
        if not line:
            if skip_blank:
                continue
            err = (CSV_EMPTY_LINE, no, -1)
        else:
            fields = line.split(b",")
            sent = False
            st = CSV_OK
            for c, spec in enumerate(columns):
                if c >= len(fields):
                    err = (CSV_TOO_FEW, no, c)
                    break
                st, v, sent, bad_id = _csv_field(spec, fields[c], sent)
                if st == CSV_OTHER:
                    break
                if st != CSV_OK:
                    err = (st, no, c)
                    break
                row.append(v)
                ids += bad_id
            if st == CSV_OTHER:
                other += 1
                continue
            if err is None and len(fields) > ncols:
                err = (CSV_TOO_MANY, no, ncols)
        if err is not None:
            if on_error == "raise":
                raise CSVFieldError(*err)
            bad_lines.append(err)
            continue
        for c, v in enumerate(row):
            if out[c] is not None:
                out[c].append(v)
        bad_ids += ids
    if counts is not None:
        counts["other"] = other
    return out, bad_ids, bad_lines


# ---------------------------------------------------------------------------------------------
# _microprice: Stoikov's (2018) micro-price (fit by counting, solve by Gaussian elimination)
# ---------------------------------------------------------------------------------------------
def microprice_bin(qb, qa, n):
    """Imbalance bin of I = qb / (qb + qa): mirror-symmetric equal-width bins (None if empty)."""
    tot = qb + qa
    if not (tot > 0 and math.isfinite(tot)):
        return None
    if qb < qa:
        return min(math.floor(qb / tot * n), n - 1)
    if qb > qa:
        return n - 1 - min(math.floor(qa / tot * n), n - 1)
    return n // 2


def _mp_solve(A, B):
    """Solve A X = B (A square list of lists, B list of lists) by Gauss-Jordan with pivoting."""
    n = len(A)
    M = [list(A[i]) + list(B[i]) for i in range(n)]
    w = len(M[0])
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(M[r][c]))
        if M[p][c] == 0:
            raise RefError("singular", "bid_px")
        M[c], M[p] = M[p], M[c]
        piv = M[c][c]
        M[c] = [v / piv for v in M[c]]
        for r in range(n):
            if r != c and M[r][c] != 0:
                f = M[r][c]
                M[r] = [a - f * b for a, b in zip(M[r], M[c])]
    return [row[n:w] for row in M]


def microprice_fit(bid_px, bid_sz, ask_px, ask_sz, tick_size, n_imbalance=10, max_spread=3,
                   n_iter=6, max_move=1.0, symmetrize=True):
    """Table g[s-1][b] (price units) of Stoikov's estimator, as ofi_fast.microprice.estimate."""
    nb, ns = n_imbalance, max_spread
    kmax = math.floor(2 * max_move + 1e-9)

    def state(i):
        b = microprice_bin(bid_sz[i], ask_sz[i], nb)
        x = (ask_px[i] - bid_px[i]) / tick_size
        if b is None or not math.isfinite(x):
            return None
        s = math.floor(x + 0.5)
        if not 1 <= s <= ns:
            return None
        return (s - 1) * nb + b

    trans = []
    for i in range(len(bid_px) - 1):
        x, y = state(i), state(i + 1)
        if x is None or y is None:
            continue
        m0 = 0.5 * (bid_px[i] + ask_px[i])
        m1 = 0.5 * (bid_px[i + 1] + ask_px[i + 1])
        d = round(2.0 * (m1 - m0) / tick_size)
        if abs(d) > kmax:
            continue
        trans.append((x, y, d))
        if symmetrize:
            mx = (x // nb) * nb + nb - 1 - x % nb
            my = (y // nb) * nb + nb - 1 - y % nb
            trans.append((mx, my, -d))
    N = ns * nb
    cnt = [0] * N
    Q = [[0.0] * N for _ in range(N)]
    T = [[0.0] * N for _ in range(N)]
    RK = [[0.0] for _ in range(N)]
    for x, y, d in trans:
        cnt[x] += 1
        if d == 0:
            Q[x][y] += 1
        else:
            T[x][y] += 1
            RK[x][0] += d * tick_size / 2.0
    for x in range(N):
        if cnt[x]:
            Q[x] = [v / cnt[x] for v in Q[x]]
            T[x] = [v / cnt[x] for v in T[x]]
            RK[x][0] /= cnt[x]
    A = [[(1.0 if i == j else 0.0) - Q[i][j] for j in range(N)] for i in range(N)]
    G = [r[0] for r in _mp_solve(A, RK)]
    Bm = _mp_solve(A, T)
    total = list(G)
    for _ in range(n_iter - 1):
        G = [sum(Bm[i][j] * G[j] for j in range(N)) for i in range(N)]
        total = [a + b for a, b in zip(total, G)]
    table = [total[s * nb:(s + 1) * nb] for s in range(ns)]
    if symmetrize:
        table = [[0.5 * (r[b] - r[nb - 1 - b]) for b in range(nb)] for r in table]
    return table


def microprice_stream(table, tick_size, bid_px, bid_sz, ask_px, ask_sz, symmetric=True):
    """Micro-price mid + g per event (NaN where no state), the lookup of Microprice.update."""
    ns, nb = len(table), len(table[0])
    out = []
    for i in range(len(bid_px)):
        qb, qa = bid_sz[i], ask_sz[i]
        if qb < 0 or qa < 0:
            raise RefError("NegativeSizeError", "bid_sz" if qb < 0 else "ask_sz", i)
        mid = 0.5 * (bid_px[i] + ask_px[i])
        x = (ask_px[i] - bid_px[i]) / tick_size
        b = microprice_bin(qb, qa, nb)
        if b is None or not (x >= 0.5 and x < ns + 0.5):
            out.append(math.nan)
            continue
        row = table[math.floor(x + 0.5) - 1]
        if qb == qa and nb % 2 == 0 and symmetric:
            g = 0.5 * (row[nb // 2 - 1] + row[nb // 2])
        else:
            g = row[b]
        out.append(mid + g)
    return out
