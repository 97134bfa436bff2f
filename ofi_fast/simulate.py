"""A seeded limit-order-book simulator on a tick grid: the embedded default of ``ofi-fast``.

The model is a continuous-time, queue-reactive book in the spirit of Cont, Stoikov & Talreja
(2010, "A stochastic model for order book dynamics") and Cont & de Larrard (2013, "Price
dynamics in a Markovian limit order market"), with ``levels`` contiguous price levels per side:

- **limit orders** arrive at the j-th level behind each touch (j = 0 is the touch) as Poisson
  processes of rate ``limit_rate * limit_decay**j`` per second;
- **cancellations** hit level j at rate ``cancel_rate * q_j / mean_size`` (each resting order
  is cancelled at rate ``cancel_rate``, so queues are mean-reverting, not explosive);
- **market orders** of each direction arrive at rate ``market_rate`` and execute against the
  opposite touch;
- while the spread is wider than one tick, **price-improving limit orders** arrive inside the
  spread, one tick better than the touch, at rate ``inside_rate`` per side.

Prices move only through order flow: when a cancellation or a market order empties the touch
queue, the next level becomes the touch (the mid moves half a tick and the spread widens), and
a price-improving order narrows it again. Order sizes are ``lot * Geometric(lot / mean_size)``.

Decisions the literature leaves open, made here and relied on by the tests:

- Market orders do not walk the book: one larger than the touch queue executes the whole queue
  (and empties it). Most market orders in large-tick books are smaller than the touch queue.
- Levels behind the touch are never emptied by cancellations (a cancellation that would empty
  one leaves one lot), so the top ``levels`` levels are always contiguous ticks; a level
  uncovered at the back when the touch moves away is drawn from its stationary size
  distribution (Poisson around ``limit_rate * limit_decay**j * mean_size / cancel_rate``).
  So the simulated book never shows an empty level; the arrays still use the feeds' convention
  (NaN price, size 0) should a caller construct one.
- Event rates are recomputed from the book state at the start of each block of events and at
  each price change (the rates of a queue-reactive model are piecewise constant between them).

Output: :class:`SimResult`, the same arrays the feeds produce — per event ``ts`` (int64 ns),
``event_type`` (1 new limit order, 3 cancellation, 4 execution: the LOBSTER codes), ``side``
(+1 bid / -1 ask: the book side the event changes; for an execution the side of the resting
order, so a buyer-initiated trade has side -1, as in LOBSTER), ``price`` and ``size``; the
top-``levels`` book *after* each event, ``bid_px``, ``bid_sz``, ``ask_px``, ``ask_sz`` of shape
(n, levels), best first; and the trades: ``trade_ts``, ``trade_price``, ``trade_size``,
``trade_side`` (aggressor: +1 buyer-initiated, -1 seller-initiated) and ``trade_index`` (the
event's row).

Event loop (``ofi_fast/_simulate.pyx``, compiled): the rates are fixed for a block of
``block`` pre-drawn events and recomputed at its end; the block ends at the first event that
would empty a queue or improve the spread (a *break*), which is applied to the book there.
The loop consumes the same draws in the same order, with the same floating-point operations,
as the numpy block engine it replaced (kept in tests/sim_numpy_oracle.py and held against it
bit for bit); it draws from the Generator's bit generator in C (numpy's own distribution
functions) while holding the bit generator's lock, so a Generator shared with another thread
is never drawn from by both at once. The draws come in pools, refilled ``POOL_SIZE`` (or
``block``, if larger) uniforms, then as many order sizes, then as many exponentials at a
time; the pool size is part of the stream. Stream version 2 (this release): pools of 4,096
draws per kind, so a short run does not pay for 65,536 (a 1e4-event run: 1,090 -> 359
instructions per event in the engine, 2.3-2.6x less time); version 1 (earlier releases):
65,536. The same seed gives other events than under version 1 (the same model, the same
distribution of events). About 325 instructions per event from 1e5 events on; 40-50 ns per
event in chunks written into reused buffers, more for fresh output pages (bench/RESULTS.md,
issue 13 sim5 and sim7).

numpy plus that one compiled module; imports nothing else from the package.
"""

from __future__ import annotations

import sys
from typing import Iterator

import numpy as np

from ofi_fast._simulate import SimEngine

ADD = 1          # new limit order (LOBSTER type 1)
CANCEL = 3       # cancellation (LOBSTER types 2 and 3)
EXECUTE = 4      # execution of a visible resting order (LOBSTER type 4)
POOL_SIZE = 4096      # draws of each kind per refill, at least block (stream version 2)
MAX_BLOCK = 65_536

__all__ = ["ADD", "CANCEL", "EXECUTE", "LOBSimulator", "SimResult", "simulate",
           "simulate_chunks"]


class SimResult:
    """Arrays of one simulated stretch (see the module docstring for every field's meaning).

    Event arrays have length ``n``; book arrays shape ``(n, levels)``; trade arrays one entry
    per execution. Prices are in currency units, ``tick * tick_size`` (the same float for the
    same tick, so exact comparisons are safe); sizes are whole multiples of the lot, in shares.
    """

    __slots__ = ("ts", "event_type", "side", "price", "size", "bid_px", "bid_sz", "ask_px",
                 "ask_sz", "trade_ts", "trade_price", "trade_size", "trade_side",
                 "trade_index", "tick_size")

    def __init__(self, **arrays):
        for k in self.__slots__:
            setattr(self, k, arrays[k])

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def __repr__(self) -> str:
        return (f"SimResult(events={len(self)}, levels={self.bid_px.shape[1]}, "
                f"trades={self.trade_ts.shape[0]}, tick_size={self.tick_size})")

    @property
    def levels(self) -> int:
        return int(self.bid_px.shape[1])

    @property
    def mid(self) -> np.ndarray:
        """Mid price after each event, (best bid + best ask) / 2."""
        return 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0])

    def best(self):
        """``(bid_px, bid_sz, ask_px, ask_sz)`` at the touch, each of length n (contiguous)."""
        return (np.ascontiguousarray(self.bid_px[:, 0]), np.ascontiguousarray(self.bid_sz[:, 0]),
                np.ascontiguousarray(self.ask_px[:, 0]), np.ascontiguousarray(self.ask_sz[:, 0]))

    @staticmethod
    def concatenate(parts) -> "SimResult":
        """Join consecutive results (e.g. the chunks of :func:`simulate_chunks`)."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        out = {}
        offset = 0
        idx = []
        for p in parts:
            idx.append(p.trade_index + offset)
            offset += len(p)
        for k in SimResult.__slots__:
            if k == "tick_size":
                out[k] = parts[0].tick_size
            elif k == "trade_index":
                out[k] = np.concatenate(idx)
            else:
                out[k] = np.concatenate([getattr(p, k) for p in parts])
        return SimResult(**out)


class LOBSimulator:
    """The simulator's state and parameters; :meth:`run` continues from where it stopped.

    ``LOBSimulator(seed=0, *, levels=5, tick_size=0.01, start_price=100.0, start_ts=34_200e9,
    limit_rate=5.0, limit_decay=0.85, cancel_rate=0.5, market_rate=1.5, inside_rate=20.0,
    mean_size=200.0, lot=100.0, block=256)``

    ``block`` (16 .. 65,536; below 16: 16) is the number of events drawn at fixed rates; a
    block larger than ``POOL_SIZE`` makes the pools ``block`` draws per refill (part of the
    stream, as ``block`` itself is).

    Rates are per second; ``start_ts`` is in ns (default 09:30:00 as ns after midnight, as in
    LOBSTER files). The same seed and parameters give the same events, however the run is split
    into :meth:`run` calls.
    """

    def __init__(self, seed=0, *, levels=5, tick_size=0.01, start_price=100.0,
                 start_ts=34_200_000_000_000, limit_rate=5.0, limit_decay=0.85,
                 cancel_rate=0.5, market_rate=1.5, inside_rate=20.0, mean_size=200.0,
                 lot=100.0, block=256):
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
        if int(block) > MAX_BLOCK:
            raise ValueError(f"block must be <= {MAX_BLOCK:,}, got {block!r}")
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
        bid_tick = int(round(start_price / tick_size))   # the ask touch is one tick above
        qb = self._draw_depth(np.arange(K))              # sizes at bid_tick - j
        qa = self._draw_depth(np.arange(K))              # sizes at ask_tick + j
        m = self.q_mean[K - 1] / self.lot                # a level uncovered at the back
        self._engine = SimEngine(
            self.rng, K, self.block, self.lot, self.cancel_rate / self.mean_size,
            self.market_rate, self.inside_rate, float(max(m - 1.0, 0.0)),
            self.lot / self.mean_size, self.limit, qb, qa, int(start_ts), bid_tick,
            max(POOL_SIZE, self.block))

    # the state lives in the compiled engine
    qb = property(lambda self: self._engine.qb, doc="Bid sizes now, touch first.")
    qa = property(lambda self: self._engine.qa, doc="Ask sizes now, touch first.")
    bid_tick = property(lambda self: self._engine.bid_tick, doc="Best bid tick now.")
    ask_tick = property(lambda self: self._engine.ask_tick, doc="Best ask tick now.")
    ts = property(lambda self: self._engine.ts,
                  doc="ns: time at which the last finished block ended (the next starts there).")

    def _draw_depth(self, j) -> np.ndarray:
        """Sizes for levels ``j`` behind the touch, from their stationary distribution."""
        m = self.q_mean[j] / self.lot
        return self.lot * (1.0 + self.rng.poisson(np.maximum(m - 1.0, 0.0)))

    def run(self, n_events) -> SimResult:
        """Simulate the next ``n_events`` events and return their arrays.

        Splitting a run into several calls gives the same events as one call (a block drawn
        but not used up is kept for the next call)."""
        n = int(n_events)
        if n < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events!r}")
        return self._run(n, None)

    def _run(self, n: int, out) -> SimResult:
        ts, etype, side, price, size, bid_px, bid_sz, ask_px, ask_sz = \
            self._engine.run(n, self.tick_size, out)
        trade = np.flatnonzero(etype == EXECUTE)
        return SimResult(
            ts=ts, event_type=etype, side=side, price=price, size=size,
            bid_px=bid_px, bid_sz=bid_sz, ask_px=ask_px, ask_sz=ask_sz,
            trade_ts=ts[trade], trade_price=price[trade], trade_size=size[trade],
            trade_side=(-side[trade]).astype(np.int8), trade_index=trade.astype(np.int64),
            tick_size=self.tick_size,
        )

    def chunks(self, n_events, chunk_size=1_000_000) -> Iterator[SimResult]:
        """Yield the next ``n_events`` events in results of at most ``chunk_size`` events.

        A chunk's event and book arrays are written into the buffers of the chunk before the
        last one when nothing outside this generator refers to that result or to any of
        those arrays any more (no view, no memoryview, no other name: reference counts say
        so), which saves faulting in fresh pages (about a third of the cost per event, see
        bench/RESULTS.md); a chunk the caller keeps, or a view of its arrays, is never
        written again."""
        left = int(n_events)
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        held = []          # the last results yielded, newest last
        while left > 0:
            k = min(left, chunk_size)
            out = None
            if len(held) == 2:
                out = _free_buffers(held, k)
            res = self._run(k, out)
            del out
            held.append(res)
            del res
            yield held[-1]
            left -= k


# event and book arrays of a SimResult, in SimEngine.run's order
_BUFFERS = ("ts", "event_type", "side", "price", "size", "bid_px", "bid_sz", "ask_px", "ask_sz")


def _free_buffers(held: list, n: int):
    """Pop the oldest result of ``held`` and return its nine arrays for SimEngine.run's
    ``out`` when they have n rows and nothing but that result refers to it or to them;
    else None. ``held`` then keeps only the newest result."""
    old = held.pop(0)
    # references: `old` here and getrefcount's argument (the list entry is gone)
    if sys.getrefcount(old) != 2 or len(old) != n:
        return None
    arrays = tuple(getattr(old, k) for k in _BUFFERS)
    for a in arrays:
        # references: the result's slot, the tuple, the loop variable, getrefcount's argument
        if sys.getrefcount(a) != 4 or a.base is not None:
            return None
    return arrays


def simulate(n_events=100_000, *, seed=0, levels=5, **params) -> SimResult:
    """Simulate ``n_events`` events of the book (see the module docstring); reproducible.

    ``params`` are :class:`LOBSimulator`'s keyword arguments (rates per second, sizes in
    shares, ``tick_size``, ``start_price``, ``start_ts`` in ns).
    """
    return LOBSimulator(seed, levels=levels, **params).run(n_events)


def simulate_chunks(n_events, *, chunk_size=1_000_000, seed=0, levels=5,
                    **params) -> Iterator[SimResult]:
    """:func:`simulate` in chunks, for memory bounded by ``chunk_size``; the concatenated
    chunks equal ``simulate(n_events, seed=seed, ...)`` whatever the chunk size."""
    return LOBSimulator(seed, levels=levels, **params).chunks(n_events, chunk_size)
