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
