"""The numpy block engine of ofi_fast.simulate as it was before the event loop was compiled
(ofi_fast/_simulate.pyx): the oracle the tests hold the compiled loop against, bit for bit.
Kept verbatim (only this docstring, the imports, the class name and the pool size differ), so
"the same stream for a given seed" is checked, not asserted from memory.

The pool size is part of the stream: ``pool_size`` draws of each kind per refill, at least
``block``. Stream version 2 (the default here): 4,096; version 1 (the releases before it,
this engine as it was): 65,536. Written here, not imported from ofi_fast.simulate, so a change
of the package's pool size fails the tests until this version is changed too.
"""

from typing import Iterator

import numpy as np

from ofi_fast.simulate import ADD, CANCEL, EXECUTE, SimResult

class NumpyLOBSimulator:
    """The simulator's state and parameters; :meth:`run` continues from where it stopped.

    ``LOBSimulator(seed=0, *, levels=5, tick_size=0.01, start_price=100.0, start_ts=34_200e9,
    limit_rate=5.0, limit_decay=0.85, cancel_rate=0.5, market_rate=1.5, inside_rate=20.0,
    mean_size=200.0, lot=100.0, block=256, pool_size=4096)``

    Rates are per second; ``start_ts`` is in ns (default 09:30:00 as ns after midnight, as in
    LOBSTER files). The same seed and parameters give the same events, however the run is split
    into :meth:`run` calls.
    """

    def __init__(self, seed=0, *, levels=5, tick_size=0.01, start_price=100.0,
                 start_ts=34_200_000_000_000, limit_rate=5.0, limit_decay=0.85,
                 cancel_rate=0.5, market_rate=1.5, inside_rate=20.0, mean_size=200.0,
                 lot=100.0, block=256, pool_size=4096):
        levels = int(levels)
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        for name, v in (("tick_size", tick_size), ("limit_rate", limit_rate),
                        ("cancel_rate", cancel_rate), ("mean_size", mean_size), ("lot", lot)):
            if not (v > 0 and np.isfinite(v)):
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        for name, v in (("market_rate", market_rate), ("inside_rate", inside_rate)):
            if not (v >= 0 and np.isfinite(v)):
                raise ValueError(f"{name} must be >= 0 and finite, got {v!r}")
        if not 0 < limit_decay <= 1:
            raise ValueError(f"limit_decay must be in (0, 1], got {limit_decay!r}")
        if mean_size < lot:
            raise ValueError("mean_size must be >= lot")
        self.levels = K = levels
        self.tick_size = float(tick_size)
        self.lot = float(lot)
        self.mean_size = float(mean_size)
        self.block = max(16, int(block))
        self.rng = np.random.default_rng(seed)
        self.limit = float(limit_rate) * float(limit_decay) ** np.arange(K)
        self.cancel_rate = float(cancel_rate)
        self.market_rate = float(market_rate)
        self.inside_rate = float(inside_rate)
        # stationary mean queue size per level (inflow limit*mean_size = outflow cancel*q)
        self.q_mean = np.maximum(self.limit * self.mean_size / self.cancel_rate, self.lot)
        self.ts = int(start_ts)                          # ns, time of the last event
        self.bid_tick = int(round(start_price / tick_size))
        self.ask_tick = self.bid_tick + 1
        self.qb = self._draw_depth(np.arange(K))         # sizes at bid_tick - j
        self.qa = self._draw_depth(np.arange(K))         # sizes at ask_tick + j
        # channel -> (column in [bid 0..K-1 | ask 0..K-1], sign, event type, side)
        C = 4 * K + 4
        col = np.zeros(C, np.int64)
        sgn = np.zeros(C, np.float64)
        etype = np.zeros(C, np.int8)
        side = np.zeros(C, np.int8)
        j = np.arange(K)
        col[0:K], col[K:2 * K], col[2 * K:3 * K], col[3 * K:4 * K] = j, K + j, j, K + j
        sgn[0:2 * K], sgn[2 * K:4 * K] = 1.0, -1.0
        etype[0:2 * K], etype[2 * K:4 * K] = ADD, CANCEL
        side[0:K], side[K:2 * K], side[2 * K:3 * K], side[3 * K:4 * K] = 1, -1, 1, -1
        col[4 * K], sgn[4 * K], etype[4 * K], side[4 * K] = K, -1.0, EXECUTE, -1   # market buy
        col[4 * K + 1], sgn[4 * K + 1], etype[4 * K + 1], side[4 * K + 1] = 0, -1.0, EXECUTE, 1
        etype[4 * K + 2], side[4 * K + 2] = ADD, 1                                # inside bid
        etype[4 * K + 3], side[4 * K + 3] = ADD, -1                               # inside ask
        self._col, self._sgn, self._etype, self._side = col, sgn, etype, side
        self._offset = np.concatenate([-j, j])    # tick offset of each column from its touch
        self._blk = None     # the block being consumed: (ch, sz, t, col, m, k); see run()
        self._cur = 0        # events of that block already emitted
        self._pool_size = max(int(pool_size), self.block)
        self._pool_u = self._pool_sz = self._pool_ex = np.empty(0)
        self._used = 0       # draws of the pools already consumed

    def _draw_depth(self, j) -> np.ndarray:
        """Sizes for levels ``j`` behind the touch, from their stationary distribution."""
        m = self.q_mean[j] / self.lot
        return self.lot * (1.0 + self.rng.poisson(np.maximum(m - 1.0, 0.0)))

    def _rates(self) -> np.ndarray:
        K = self.levels
        r = np.empty(4 * K + 4)
        r[0:K] = self.limit
        r[K:2 * K] = self.limit
        r[2 * K:3 * K] = self.cancel_rate / self.mean_size * self.qb
        r[3 * K:4 * K] = self.cancel_rate / self.mean_size * self.qa
        r[4 * K] = r[4 * K + 1] = self.market_rate
        inside = self.inside_rate if self.ask_tick - self.bid_tick > 1 else 0.0
        r[4 * K + 2] = r[4 * K + 3] = inside
        return r

    def _take(self, w):
        """The next ``w`` draws of (uniform, order size, standard exponential) from the pools.

        Draws are pooled in large batches (fewer generator calls) and consumed in order, only
        as far as events are used, so the stream of events depends only on the seed."""
        if self._used + w > self._pool_u.shape[0]:
            rest = slice(self._used, None)
            N = self._pool_size
            rng = self.rng
            self._pool_u = np.concatenate([self._pool_u[rest], rng.random(N)])
            self._pool_sz = np.concatenate(
                [self._pool_sz[rest], self.lot * rng.geometric(self.lot / self.mean_size, N)])
            self._pool_ex = np.concatenate([self._pool_ex[rest], rng.standard_exponential(N)])
            self._used = 0
        s = slice(self._used, self._used + w)
        return self._pool_u[s], self._pool_sz[s], self._pool_ex[s]

    def _draw_block(self, q):
        """Draw ``block`` events at the current rates and find the first break among them."""
        K = self.levels
        W = self.block
        u, sz, ex = self._take(W)
        r = self._rates()
        total = r.sum()
        ch = np.searchsorted(np.cumsum(r), u * total, side="right")
        np.minimum(ch, len(r) - 1, out=ch)
        t = self.ts + np.cumsum(np.ceil(ex * (1e9 / total)).astype(np.int64))
        col = self._col[ch]
        rows = np.arange(W)
        m = np.zeros((W, 2 * K))
        m[rows, col] = self._sgn[ch] * sz
        np.cumsum(m, axis=0, out=m)
        m += q
        bad = (m[rows, col] <= 0.0) | (ch >= 4 * K + 2)
        start = 0
        while True:
            brk = np.flatnonzero(bad[start:])
            if not brk.size:
                k = W
                break
            k = start + int(brk[0])
            j = int(col[k])
            if not (2 * K < ch[k] < 4 * K and j != K):
                break                    # touch emptied or spread improved: a real break
            # A cancellation would empty level j behind the touch: it leaves one lot instead
            # (see the module docstring). Shrink it in place and look further; only when the
            # level holds a single lot is the event dropped (in _break).
            c = (m[k - 1, j] if k else q[j]) - self.lot
            if c <= 0:
                break
            if start == 0:
                sz = sz.copy()           # the pool's slice is shared
            m[k:, j] += sz[k] - c
            sz[k] = c
            bad[k:] = (m[rows[k:], col[k:]] <= 0.0) | (ch[k:] >= 4 * K + 2)
            start = k + 1
        self._used += min(k + 1, W)      # draws after the break are left for the next block
        # the next block starts after this one's break event, or after its last event
        self.ts = int(t[k] if k < W else t[W - 1])
        return ch, sz, t, col, m, k

    def run(self, n_events) -> SimResult:
        """Simulate the next ``n_events`` events and return their arrays.

        Splitting a run into several calls gives the same events as one call (a block drawn
        but not used up is kept for the next call)."""
        n = int(n_events)
        if n < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events!r}")
        K = self.levels
        ts = np.empty(n, np.int64)
        etype = np.empty(n, np.int8)
        side = np.empty(n, np.int8)
        ptick = np.empty(n, np.int64)
        size = np.empty(n, np.float64)
        btick = np.empty(n, np.int64)        # best bid tick after each event
        atick = np.empty(n, np.int64)
        bsz = np.empty((n, K), np.float64)   # bid sizes after each event, best first
        asz = np.empty((n, K), np.float64)
        pos = 0
        while pos < n:
            if self._blk is None:
                self._blk = self._draw_block(np.concatenate([self.qb, self.qa]))
                self._cur = 0
            ch, sz, t, col, m, k = self._blk
            cur = self._cur
            take = min(k - cur, n - pos)
            if take:
                s = slice(pos, pos + take)
                b = slice(cur, cur + take)
                c = ch[b]
                cc = col[b]
                ts[s] = t[b]
                etype[s] = self._etype[c]
                side[s] = self._side[c]
                ptick[s] = np.where(cc < K, self.bid_tick, self.ask_tick) + self._offset[cc]
                size[s] = sz[b]
                btick[s] = self.bid_tick
                atick[s] = self.ask_tick
                bsz[s] = m[b, :K]
                asz[s] = m[b, K:]
                cur += take
                pos += take
                self._cur = cur
                self.qb, self.qa = m[cur - 1, :K].copy(), m[cur - 1, K:].copy()
            if cur < k or pos == n:
                break
            self._blk = None
            if k == len(ch):
                continue
            ev = self._break(int(ch[k]), float(sz[k]))
            if ev is not None:
                ts[pos] = t[k]
                etype[pos], side[pos], ptick[pos], size[pos] = ev
                btick[pos] = self.bid_tick
                atick[pos] = self.ask_tick
                bsz[pos] = self.qb
                asz[pos] = self.qa
                pos += 1
        return self._result(ts, etype, side, ptick, size, btick, atick, bsz, asz)

    def _result(self, ts, etype, side, ptick, size, btick, atick, bsz, asz):
        K = self.levels
        tick = self.tick_size
        lv = np.arange(K)
        trade = np.flatnonzero(etype == EXECUTE)
        return SimResult(
            ts=ts, event_type=etype, side=side, price=ptick * tick, size=size,
            bid_px=_prices(btick, -lv, tick), bid_sz=bsz,
            ask_px=_prices(atick, lv, tick), ask_sz=asz,
            trade_ts=ts[trade], trade_price=ptick[trade] * tick, trade_size=size[trade],
            trade_side=(-side[trade]).astype(np.int8), trade_index=trade.astype(np.int64),
            tick_size=tick,
        )

    def _break(self, ch, sz):
        """Apply one event that empties a queue or improves the spread.

        Returns ``(event_type, side, price_tick, size)`` or None when the event is dropped
        (a cancellation at a level behind the touch that holds a single lot)."""
        K = self.levels
        if ch == 4 * K + 2:                              # bid inside the spread
            self.bid_tick += 1
            self.qb = np.concatenate([[sz], self.qb[:-1]])
            return ADD, 1, self.bid_tick, sz
        if ch == 4 * K + 3:                              # ask inside the spread
            self.ask_tick -= 1
            self.qa = np.concatenate([[sz], self.qa[:-1]])
            return ADD, -1, self.ask_tick, sz
        j = int(self._col[ch])
        is_bid = j < K
        q = self.qb if is_bid else self.qa
        lvl = j if is_bid else j - K
        etype = int(self._etype[ch])
        side = 1 if is_bid else -1
        if lvl > 0:                                      # never empty a level behind the touch
            c = q[lvl] - self.lot
            if c <= 0:
                return None
            q[lvl] -= c
            tk = self.bid_tick - lvl if is_bid else self.ask_tick + lvl
            return etype, side, tk, c
        # the touch empties: the next level becomes the touch, a new level appears at the back
        c = q[0]
        tk = self.bid_tick if is_bid else self.ask_tick
        q = np.concatenate([q[1:], self._draw_depth(np.array([K - 1]))])
        if is_bid:
            self.qb = q
            self.bid_tick -= 1
        else:
            self.qa = q
            self.ask_tick += 1
        return etype, side, tk, c

    def chunks(self, n_events, chunk_size=1_000_000) -> Iterator[SimResult]:
        """Yield the next ``n_events`` events in results of at most ``chunk_size`` events."""
        left = int(n_events)
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        while left > 0:
            k = min(left, chunk_size)
            yield self.run(k)
            left -= k


def _prices(touch, offset, tick):
    """``(touch[:, None] + offset) * tick`` as float64 without an int64 temporary; the same
    tick always gives the same float (integers below 2**53 convert exactly)."""
    out = np.empty((touch.shape[0], offset.shape[0]), np.float64)
    np.add(touch[:, None], offset, out=out)
    out *= tick
    return out
