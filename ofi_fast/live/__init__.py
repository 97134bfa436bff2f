"""Live Binance feeds: the websocket and the REST depth snapshot through the same sync state
machine as the recordings (:class:`ofi_fast.feeds.binance.BinanceSync`), so that a live session
and its recording give the same book and the same bars.

- :class:`BinanceStream` (an async iterator of :class:`~ofi_fast.feeds.binance.BinanceChunk`,
  the chunks :class:`~ofi_fast.feeds.BinanceReader` yields): connects to the combined stream
  (diff depth at 100 ms, trades, bookTicker), buffers the diffs, fetches the REST snapshot
  (standard library ``urllib`` in a thread), syncs by the exchange's rules, and handles the
  faults: a dropped connection reconnects with capped exponential backoff and a fresh snapshot
  (the book invalid until then, each outage in ``quality.disconnects``); a sequence gap resyncs
  from a fresh snapshot (counted in ``quality.gaps`` / ``resyncs``); no message for
  ``silence`` seconds is a dead connection; a connection older than ``max_age`` (Binance closes
  them at 24 h) is replaced by a planned reconnect; a snapshot older than the buffered diffs is
  fetched again; malformed messages are counted and skipped (the first 20 kept,
  ``quality.parse_first``).
- :func:`bars`: an async iterator of :class:`ofi_fast.pipeline.StreamBar`, driving
  :class:`ofi_fast.BookOFI` and :class:`ofi_fast.TradeFlow` as :func:`ofi_fast.stream` does.

Needs ``websockets`` (``pip install 'ofi_fast[live]'``); nothing here is imported by
``import ofi_fast``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, AsyncIterator, Callable

import numpy as np

from ofi_fast.errors import OFIError
from ofi_fast.feeds._common import NO_TIME, ErrorLog, json_int
from ofi_fast.feeds._l2 import (FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT, BookDeltas, Columns,
                                Quotes, Trades)
from ofi_fast.feeds._recorded import JSON_ERRORS, loads
from ofi_fast._binance_decode import DiffBuffers
from ofi_fast.feeds.binance import BinanceChunk, BinanceSync, _px, _sz
from ofi_fast.pipeline import CROSSED_POLICY, StreamBar, _every_ns, _on_grid
from ofi_fast.quality import DataQuality, Gap

__all__ = ["BinanceStream", "LiveError", "LiveLatency", "bars"]

#: Default endpoints, per market: (websocket base, REST base, REST depth path, trade stream).
ENDPOINTS = {
    "usdm": ("wss://fstream.binance.com", "https://fapi.binance.com", "/fapi/v1/depth",
             "aggTrade"),
    "spot": ("wss://stream.binance.com:9443", "https://api.binance.com", "/api/v3/depth",
             "trade"),
}

_NS = 1_000_000_000


class LiveError(OFIError):
    """A live session that cannot start or go on (bad arguments, websockets missing)."""


class LiveLatency:
    """Latencies of a live session, ns: ``exchange`` (local receive time minus the exchange's
    event time ``E``, per depth diff: includes the clocks' offset) and ``signal`` (local
    receive, ``perf_counter_ns`` right after the websocket returned the message, to the
    signal updated: decoding, sync, BookOFI; per depth diff applied live, the diffs replayed
    from the buffer at a snapshot left out: they waited for it); ``signal_cpu``: the
    same span in the thread's CPU time (``thread_time_ns``: what the work costs, without the
    time the process waited for a core on a loaded machine)."""

    def __init__(self) -> None:
        self.exchange: list[int] = []
        self.signal: list[int] = []
        self.signal_cpu: list[int] = []     # the same span in this thread's CPU time

    @staticmethod
    def percentiles(v: list[int], q=(50, 99)) -> tuple[float, ...]:
        """Percentiles of one list (NaN when empty)."""
        if not v:
            return tuple(math.nan for _ in q)
        return tuple(float(x) for x in np.percentile(np.asarray(v, np.int64), q))


_DIRECT = ("sync", "first")


def _diff_deltas(data, ts_local, dec: DiffBuffers | None = None) -> BookDeltas | None:
    """The rows of one accepted diff as BookDeltas (the values of :meth:`BinanceSync.diff`'s
    rows, bit for bit); None for a diff without levels. The compiled decoder (``dec``, or a
    new one) takes the plain shape; anything else is converted the file reader's way
    (:func:`_levels_py`: the same values, or its ValueError / TypeError)."""
    dec = DiffBuffers() if dec is None else dec
    e = data.get("E")
    ts_ex = json_int(e) * 1_000_000 if e is not None else NO_TIME
    n = dec.fill(data["b"], data["a"], ts_ex)
    if n < 0:
        rows = _levels_py(data)
        n = len(rows)
        if n == 0:
            return None
        side = np.array([r[0] for r in rows], np.int8)
        px = np.array([r[1] for r in rows], np.float64)
        sz = np.array([r[2] for r in rows], np.float64)
        flags = np.zeros(n, np.uint8)
        flags[-1] = FLAG_BATCH_END
    elif n == 0:
        return None
    else:
        side, px, sz, flags = dec.rows()
    return BookDeltas(np.full(n, ts_ex, np.int64), np.full(n, ts_local, np.int64), side, px, sz,
                      np.full(n, json_int(data["u"]), np.int64), flags)


def _levels_py(data) -> list[tuple[int, float, float]]:
    """A diff's rows (side, price, size) as :meth:`BinanceSync.diff` builds them (the general
    path, for what the compiled decoder does not take); a bad value is a ValueError."""
    try:
        return ([(1, _px(p), _sz(q)) for p, q in data["b"]]
                + [(-1, _px(p), _sz(q)) for p, q in data["a"]])
    except ValueError as exc:
        raise ValueError(f"bad price or size ({exc})") from None


#: what BinanceStream's internal iterator yields for one applied diff whose rows are in its
#: DiffBuffers (``_diff``: rows, ts_exchange, ts_local, update_id); the public iterator turns
#: it into a chunk with the quotes waiting (:meth:`BinanceStream._diff_chunk`), the bars take
#: the rows from the buffers and leave the quotes to their own batches (they do not use them)
_DIFF = object()
#: what the internal iterator yields when the bars' own per-diff path (:meth:`_LiveBars.step`,
#: ``BinanceStream._sink``) closed bars: they are in ``BinanceStream._bars_out``
_BARS = object()
#: ``last_ts`` for DiffBuffers.step before any book time
_NO_LAST = -(1 << 63)


def _empty(cls):
    return Columns(cls).flush()


class BinanceStream:
    """Live diff depth, trades and best quotes of one Binance symbol, synced on REST snapshots.

    ``async for chunk in BinanceStream("BTCUSDT", market="usdm"):`` yields one
    :class:`~ofi_fast.feeds.binance.BinanceChunk` per message that produced rows (a snapshot
    comes with the buffered diffs it made applicable), in the units of the feeds (ns). After
    each chunk ``recv_ns`` is the ``perf_counter_ns`` at which its message was received and
    ``valid`` whether the book is in sync.

    Parameters: ``market`` "usdm" or "spot"; ``ws_url`` / ``rest_url``: the bases of the
    websocket (``<ws_url>/stream?streams=...``) and of the REST depth endpoint (Binance's by
    default; a local replay in tests); ``depth_ms`` the diff-depth speed (100); ``trades``
    "aggTrade" (usdm default) or "trade" (spot default); ``limit`` the snapshot's levels;
    ``clock`` "local" or "exchange" (only recorded for :func:`bars`); ``record``: a path (".gz":
    gzip) written with every message as received, ``<local ns> <raw JSON>`` per line, the
    hftbacktest layout :class:`~ofi_fast.feeds.BinanceReader` reads, snapshots included. The
    lines are written in the order the sync consumed them: diffs buffered for a snapshot come
    right after it, so the file reader, whose first-snapshot and in-sync rules then see what
    the live machine saw, rebuilds the same book (malformed messages are counted, not recorded).
    Faults: ``silence`` s without a message -> reconnect; ``backoff`` = (first, cap) s of the
    exponential reconnect delay; ``max_age`` s -> planned reconnect (Binance closes a
    connection at 24 h); ``max_buffer`` diffs held for a snapshot at most (older ones dropped,
    counted as ``dropped["gap"]``); ``duration`` s: stop after that long (None: run until
    cancelled or :meth:`close`); ``log``: called with one line per reconnect (the reason).
    """

    def __init__(self, symbol: str, market: str = "usdm", *, ws_url: str | None = None,
                 rest_url: str | None = None, clock: str = "local",
                 record: str | None = None, depth_ms: int = 100, trades: str | None = None,
                 limit: int = 1000, silence: float = 10.0, backoff: tuple[float, float] = (0.5, 30.0),
                 max_age: float = 23.5 * 3600, max_buffer: int = 100_000,
                 duration: float | None = None, snapshot_timeout: float = 10.0,
                 log: Callable[[str], None] | None = None):
        if market not in ENDPOINTS:
            raise LiveError(f"market must be 'usdm' or 'spot', not {market!r}")
        if clock not in ("local", "exchange"):
            raise LiveError(f"clock must be 'local' or 'exchange', not {clock!r}")
        if not isinstance(symbol, str) or not symbol.isalnum():
            raise LiveError(f"symbol must be letters and digits, like BTCUSDT, not {symbol!r}")
        ws0, rest0, self._depth_path, tr0 = ENDPOINTS[market]
        trades = trades or tr0
        if trades not in ("trade", "aggTrade"):
            raise LiveError(f"trades must be 'trade' or 'aggTrade', not {trades!r}")
        for name, v in (("silence", silence), ("max_age", max_age), ("limit", limit),
                        ("max_buffer", max_buffer), ("snapshot_timeout", snapshot_timeout)):
            if not (isinstance(v, (int, float)) and v > 0):
                raise LiveError(f"{name} must be a positive number, not {v!r}")
        if not (0 < backoff[0] <= backoff[1]):
            raise LiveError(f"backoff must be (first, cap) with 0 < first <= cap, not {backoff!r}")
        self.symbol = symbol.upper()
        self.market = market
        self.clock = clock
        self.ws_url = (ws_url or ws0).rstrip("/")
        self.rest_url = (rest_url or rest0).rstrip("/")
        s = self.symbol.lower()
        self.streams = [f"{s}@depth@{depth_ms}ms", f"{s}@{trades}", f"{s}@bookTicker"]
        self.limit = int(limit)
        self.silence = float(silence)
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.max_age = float(max_age)
        self.max_buffer = int(max_buffer)
        self.duration = duration
        self.snapshot_timeout = float(snapshot_timeout)
        self.record = record
        self.log = log
        self.path = f"binance-{market} {self.symbol} (live)"
        self.errors = ErrorLog(self.path, "skip")
        self.snap_errors = None
        self.sync = BinanceSync(market=market, symbol=self.symbol, on_gap="resync",
                                where=self.path, buffer_gaps=True)
        self.stats = self.sync.stats
        self.stats.update({"connections": 0, "reconnects": 0, "silences": 0, "planned": 0,
                           "snapshot_fetches": 0, "snapshot_refetches": 0,
                           "snapshot_errors": 0, "snapshot_error_first": [],
                           "buffer_overflow": 0})
        self.disconnects: list[dict[str, Any]] = []
        self.latency = LiveLatency()
        self.recv_ns = 0
        self.no = 0                      # messages received (the "line" of reports)
        self._closed = False
        self._rec = None
        self._held: dict[int, tuple[int, bytes]] = {}
        self._e_empty = (_empty(BookDeltas), _empty(Trades), _empty(Quotes))
        self._dec = DiffBuffers()
        self._dec.expect(self.symbol)
        self._diff: tuple = (0, NO_TIME, NO_TIME, 0)
        self._sink: _LiveBars | None = None   # set by bars(): its per-diff path, no hop
        self.direct = 0                  # diffs applied by that path (DiffBuffers.step)
        self._bars_out: list[StreamBar] = []

    # -- public ----------------------------------------------------------------------------
    @property
    def valid(self) -> bool:
        """True while the book is in sync."""
        return self.sync.valid

    def close(self) -> None:
        """Stop: the connection is closed and the iterator ends."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            asyncio.ensure_future(ws.close())

    @property
    def quality(self) -> DataQuality:
        """The :class:`~ofi_fast.quality.DataQuality` of the session so far (reconnects and
        their invalid spans in ``disconnects``, gaps, resyncs, drops by cause, malformed)."""
        from ofi_fast.feeds.sources import _binance_quality
        d = _binance_quality(self, self.clock)
        dropped = {k: int(v) for k, v in d.pop("dropped", {}).items() if v}
        if self.stats["duplicates"]:
            dropped["duplicate"] = self.stats["duplicates"]
        dis = tuple(self._disconnect_gap(r) for r in self.disconnects)
        return DataQuality(source=self.path, unit="messages", rows_read=self._rows,
                           rows_applied=self._rows, trades_read=self.stats["trades"],
                           dropped=dropped, reconnects=self.stats["reconnects"],
                           disconnects=dis, **d)

    def _disconnect_gap(self, r) -> Gap:
        key = "ts_local" if self.clock == "local" else "ts_exchange"
        t0 = r[key] if r[key] != NO_TIME else r["ts_local"]
        rs = r.get("resync_" + key)
        if rs == NO_TIME:
            rs = r.get("resync_ts_local")
        now = time.time_ns() if self.clock == "local" or self._last_e is None else self._last_e
        end = rs if rs is not None else now
        return Gap(path=self.path, line=r["line"], detail=r["detail"], ts=int(t0),
                   resync_ts=None if rs is None else int(rs), resync_line=r.get("resync_line"),
                   rows_invalid=0, seconds_invalid=max(0, int(end) - int(t0)) / _NS)

    # -- the connection loop -----------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[BinanceChunk]:
        return self._chunks()

    async def _chunks(self):
        """The public iterator: every chunk as its own arrays (a diff decoded into the reused
        buffers is copied out: a caller may keep the chunks)."""
        async for c in self._run():
            yield self._diff_chunk() if c is _DIFF else c

    def _diff_chunk(self) -> BinanceChunk:
        """The diff :data:`_DIFF` stands for, as a BinanceChunk of fresh arrays."""
        n, ts_ex, ts_local, u = self._diff
        side, px, sz, flags = self._dec.rows()
        q = self._pending[2] if self._pending is not None else None
        quotes = q.flush() if q is not None and q.rows else self._e_empty[2]
        return BinanceChunk(BookDeltas(np.full(n, ts_ex, np.int64), np.full(n, ts_local, np.int64),
                                       side, px, sz, np.full(n, u, np.int64), flags),
                            self._e_empty[1], quotes)

    async def _run(self):
        try:
            import websockets
        except ImportError:
            raise LiveError("ofi_fast.live needs websockets (pip install 'ofi_fast[live]')"
                            ) from None
        self._rows = 0
        if self.record is not None:
            try:
                self._rec = (gzip.open(self.record, "wb", compresslevel=3)
                             if str(self.record).endswith(".gz") else open(self.record, "wb"))
            except OSError as exc:
                raise LiveError(f"{self.record}: cannot write the recording ({exc})") from None
        url = f"{self.ws_url}/stream?streams={'/'.join(self.streams)}"
        t_end = None if self.duration is None else time.monotonic() + float(self.duration)
        delay = self.backoff[0]
        try:
            while not self._closed:
                reason = None
                try:
                    async with websockets.connect(url, max_size=None, open_timeout=self.silence,
                                                  compression=None) as ws:
                        self.stats["connections"] += 1
                        self._ws = ws
                        reason = "closed by the server"
                        async for chunk in self._session(ws, t_end):
                            delay = self.backoff[0]
                            yield chunk
                        reason = self._end_reason
                except asyncio.CancelledError:
                    raise
                except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException
                        ) as exc:
                    reason = f"{reason or 'connect failed'} ({type(exc).__name__}: {exc})"[:200]
                left = self._pending
                self._pending = None
                if left is not None and any(c.rows for c in left):
                    yield self._chunk(*left)            # quotes still riding along
                if self._closed or (t_end is not None and time.monotonic() >= t_end):
                    break
                self._lost(reason)
                if reason.startswith("planned"):
                    continue                             # no backoff for a planned reconnect
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.backoff[1])
        finally:
            if self._rec is not None:
                self._rec.close()
                self._rec = None

    def _lost(self, reason: str) -> None:
        """The connection ended: the book is invalid until a fresh snapshot resyncs it."""
        self.stats["reconnects"] += 1
        if self.log is not None:
            self.log(f"{self.path}: {reason}; reconnecting")
        # diffs of the old connection can never be joined to the next snapshot
        # (not recorded either: the file reader must not join them to the next snapshot)
        self.stats["dropped_gap"] += len(self.sync.buffer)
        if self.sync.state == "gap" and self.stats["gap_records"]:
            self.stats["gap_records"][-1]["dropped"] += len(self.sync.buffer)
        self._held.clear()
        self.sync.buffer = []
        was = self.sync.state
        self.sync.state = "gap" if was == "gap" else "wait"   # an open gap resyncs later
        if was in ("sync", "first", "gap") or not self.disconnects:
            ts_l = time.time_ns()
            ts_e = self._last_e if self._last_e is not None else NO_TIME
            self.disconnects.append({"line": self.no, "detail": reason, "ts_local": ts_l,
                                     "ts_exchange": ts_e, "resync_line": None})

    _ws = None
    _fatal: LiveError | None = None
    _why: str | None = None
    _last_rx = 0.0
    _pending = None
    recv_cpu_ns = 0
    #: bookTicker rows ride along with the next depth or trade chunk (or go out once this many
    #: wait): one chunk per quote would cost more than the quote (the bars do not use them)
    quote_batch = 64
    single_diff = False     # the chunk in hand is exactly one applied diff (bars' fast path)
    _last_e: int | None = None
    _end_reason = "stopped"
    _rows = 0

    async def _session(self, ws, t_end):
        """One connection: receive, sync, fetch snapshots, yield chunks."""
        import websockets
        st = self.stats
        sync = self.sync
        depth, trades, quotes = Columns(BookDeltas), Columns(Trades), Columns(Quotes)
        self._pending = (depth, trades, quotes)
        t_open = time.monotonic()
        snap_task: asyncio.Task | None = self._spawn_fetch()
        clock = time.perf_counter_ns
        cpu = time.thread_time_ns
        recv = ws.recv
        dec = self._dec
        exch = self.clock == "exchange"
        watch = asyncio.ensure_future(self._watchdog(ws, t_open, t_end))
        futures = self.market == "usdm"
        lat, lat_cpu = self.latency.signal, self.latency.signal_cpu
        rx = None          # a receive in flight while a snapshot is awaited as well
        try:
            while not self._closed:
                try:
                    if snap_task is not None and not snap_task.done():
                        # a snapshot is awaited: it is applied when it arrives, even when no
                        # message follows it (the receive in flight is kept for the next turn)
                        if rx is None:
                            rx = asyncio.ensure_future(recv(decode=False))
                        await asyncio.wait((rx, snap_task), return_when=asyncio.FIRST_COMPLETED)
                        if not rx.done():
                            snap_task = self._apply_snapshot(snap_task, depth)
                            if depth.rows:
                                yield self._chunk(depth, trades, quotes)
                            continue
                    if rx is not None:
                        fut, rx = rx, None
                        raw = await fut
                    else:
                        raw = await recv(decode=False)
                    self._last_rx = time.monotonic()
                except websockets.exceptions.ConnectionClosed as exc:
                    if self._fatal is not None:
                        raise self._fatal from None
                    if self._why is None:
                        self._end_reason = f"connection closed ({exc})"[:200]
                    else:
                        self._end_reason = self._why
                    return
                self.recv_ns = clock()
                self.recv_cpu_ns = cpu()
                ts_local = time.time_ns()
                self.no += 1
                no = self.no
                # a snapshot that came in is applied before this message
                if snap_task is not None and snap_task.done():
                    snap_task = self._apply_snapshot(snap_task, depth)
                fast = None
                scanned = True
                sink = self._sink
                if (sink is not None and sync.state == "sync" and not depth.rows
                        and sink.ofi is not None and sync.judge is None):
                    # the common case in one compiled call: a plain diff of the symbol, in
                    # sequence (the rule of BinanceSync.accept in state "sync"), of the bar
                    # the book is in: applied to the bars' BookOFI (anything else: nothing
                    # done, the state machine below decides)
                    last = sink.last_ts
                    r = dec.step(raw, ts_local, exch, sync.prev_u, futures, sink.ofi,
                                 _NO_LAST if last is None else last, sink.every,
                                 sink.fast_bar())
                    if r == 1:
                        lat.append(clock() - self.recv_ns)
                        lat_cpu.append(cpu() - self.recv_cpu_ns)
                        st["depth_messages"] += 1
                        sync.commit(dec.u)
                        self.direct += 1
                        if dec.has_E:
                            self._last_e = e = dec.E * 1_000_000
                            self.latency.exchange.append(ts_local - e)
                        if self._rec is not None:
                            self._write(ts_local, raw)
                        self._rows += dec.n
                        out = sink.applied(dec)
                        if out:
                            self._bars_out = out
                            yield _BARS
                        continue
                    scanned = r == 0          # -1: not a plain diff, decode in full
                try:
                    data = None
                    if scanned and sync.state in _DIRECT and not depth.rows:
                        # the common case: a diff of the plain shape, scanned straight into
                        # the decoder's buffers (anything else: None, decoded in full below)
                        data = dec.scan(raw, ts_local, exch)
                        if data is not None and data.get("s") != self.symbol:
                            data = None
                    if data is not None:
                        st["depth_messages"] += 1
                        if sync.accept(no, ts_local, data):
                            u = data["u"]
                            if dec.n:
                                e = data.get("E")
                                fast = _DIFF
                                self._diff = (dec.n, NO_TIME if e is None else e * 1_000_000,
                                              ts_local, u)
                            sync.commit(u)
                    else:
                        msg = loads(raw)
                        data = msg.get("data", msg) if isinstance(msg, dict) else None
                        if not isinstance(data, dict):
                            raise ValueError("JSON is not an object")
                        if (data.get("e") == "depthUpdate" and sync.state in _DIRECT
                                and not depth.rows and data.get("s") == self.symbol):
                            # a diff the scanner does not take (another layout): its
                            # decoded lists into the same buffers (same rules, same values)
                            st["depth_messages"] += 1
                            if sync.accept(no, ts_local, data):
                                e = data.get("E")
                                ts_ex = json_int(e) * 1_000_000 if e is not None else NO_TIME
                                u = json_int(data["u"])
                                n = dec.fill(data["b"], data["a"], ts_ex if exch else ts_local)
                                if n > 0:            # rows in the decoder's buffers
                                    fast = _DIFF
                                    self._diff = (n, ts_ex, ts_local, u)
                                elif n < 0:          # not the plain shape: the general way
                                    fast = _diff_deltas(data, ts_local, dec)
                                sync.commit(u)
                        else:
                            sync.feed(no, ts_local, data, depth, trades, quotes)
                except (*JSON_ERRORS, KeyError, IndexError, AttributeError) as exc:
                    self.errors.bad(no, f"bad Binance message ({type(exc).__name__}: "
                                        f"{str(exc)[:80]}): {bytes(raw[:80])!r}")
                    data = None
                if data is not None:
                    if data.get("e") == "depthUpdate":
                        e = data.get("E")
                        if isinstance(e, int):
                            self._last_e = e * 1_000_000
                            self.latency.exchange.append(ts_local - self._last_e)
                        if sync.buffer and sync.buffer[-1][0] == no:
                            self._held[no] = (ts_local, bytes(raw))   # buffered: written later
                            if len(sync.buffer) > self.max_buffer:
                                old = sync.buffer.pop(0)
                                st["buffer_overflow"] += 1
                                st["dropped_gap"] += 1
                                self._held.pop(old[0], None)
                        elif self._rec is not None:
                            self._write(ts_local, raw)
                    elif self._rec is not None:
                        self._write(ts_local, raw)
                if sync.state == "gap" and snap_task is None:
                    snap_task = self._spawn_fetch()
                if fast is _DIFF:
                    self._rows += self._diff[0]
                    yield _DIFF         # quotes waiting are flushed only for a public chunk
                elif fast is not None:
                    self._rows += fast.side.shape[0]
                    self.single_diff = True              # one diff, no trade
                    yield BinanceChunk(fast, self._e_empty[1],
                                       quotes.flush() if quotes.rows else self._e_empty[2])
                    self.single_diff = False
                elif sink is not None and not depth.rows and (trades.rows or quotes.rows):
                    # bars(): the trades straight to the bars (no chunk of arrays, no hop);
                    # the quotes are counted (stats["quotes"]) and not used by the bars
                    if len(quotes.rows) >= self.quote_batch:
                        quotes.rows.clear()
                    if trades.rows:
                        out = sink.trades(trades.rows, self)
                        trades.rows.clear()
                        if out:
                            self._bars_out = out
                            yield _BARS
                elif depth.rows or trades.rows or len(quotes.rows) >= self.quote_batch:
                    yield self._chunk(depth, trades, quotes)
        finally:
            watch.cancel()
            if snap_task is not None and not snap_task.done():
                snap_task.cancel()
            if rx is not None:
                if not rx.done():
                    rx.cancel()
                elif not rx.cancelled():
                    rx.exception()            # retrieved: the session is over anyway

    async def _watchdog(self, ws, t_open, t_end):
        """Close the connection when it has been silent for ``silence`` s (dead), when it is
        ``max_age`` s old (planned reconnect) or at the end of ``duration``: one timer task per
        connection instead of a timeout around every receive."""
        st = self.stats
        self._why = None
        self._last_rx = t_open
        while True:
            now = time.monotonic()
            due = [self._last_rx + self.silence, t_open + self.max_age]
            if t_end is not None:
                due.append(t_end)
            wait = min(due) - now
            if wait > 0:
                await asyncio.sleep(min(wait, 0.25 * self.silence) + 0.001)
                continue
            if t_end is not None and now >= t_end:
                self._closed = True
                self._why = "stopped"
            elif now >= t_open + self.max_age:
                st["planned"] += 1
                self._why = "planned reconnect (connection age)"
            else:
                st["silences"] += 1
                self._why = f"no message for {self.silence:g} s"
                ws.transport.abort()          # a dead peer would not answer a close frame
                return
            await ws.close()
            return

    def _chunk(self, depth, trades, quotes) -> BinanceChunk:
        e_d, e_t, e_q = self._e_empty
        self._rows += len(depth)
        return BinanceChunk(depth.flush() if len(depth) else e_d,
                            trades.flush() if len(trades) else e_t,
                            quotes.flush() if len(quotes) else e_q)

    def _write(self, ts_local: int, raw) -> None:
        if self._rec is not None:
            self._rec.write(b"%d " % ts_local + bytes(raw).strip() + b"\n")

    def _write_held(self, no: int) -> None:
        """Record a diff that was held for a snapshot, now that the sync consumed it."""
        held = self._held.pop(no, None)
        if held is not None:
            self._write(*held)

    def _apply_snapshot(self, task, depth):
        """Feed a fetched snapshot (or fetch again: failed, or older than the buffered
        diffs); returns the task still to wait for (None when applied)."""
        st = self.stats
        try:
            ts_local, body, snap = task.result()
        except LiveError:
            raise
        except (OSError, ValueError, urllib.error.URLError, asyncio.TimeoutError) as exc:
            # a request that failed (network, timeout, 5xx, a body that is no snapshot) is not
            # a message lost: counted apart, its reason kept, and asked again
            st["snapshot_errors"] += 1
            why = f"snapshot request failed ({type(exc).__name__}: {str(exc)[:120]})"
            if len(st["snapshot_error_first"]) < 20:
                st["snapshot_error_first"].append((self.no, why))
            if self.log is not None:
                self.log(f"{self.path}: {why}; asking again")
            return self._spawn_fetch(delay=self.backoff[0])
        sync = self.sync
        try:
            old = sync.snapshot_is_old(int(snap["lastUpdateId"]))
        except (KeyError, TypeError, ValueError) as exc:
            self.errors.bad(self.no, f"bad snapshot ({type(exc).__name__}: {exc})")
            return self._spawn_fetch(delay=self.backoff[0])
        if old:
            st["snapshot_refetches"] += 1
            return self._spawn_fetch(delay=0.05)
        held = [no for no, _, _ in sync.buffer]
        n_rows = len(depth)
        try:
            sync.snapshot(self.no, ts_local, snap, depth)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            del depth.rows[n_rows:]
            self.errors.bad(self.no, f"bad snapshot ({type(exc).__name__}: {exc})")
            return self._spawn_fetch(delay=self.backoff[0])
        g = st["gap_records"][-1] if st["gap_records"] else None
        if g is not None and g["resync_line"] == self.no and g["resync_ts_exchange"] == NO_TIME:
            # a spot snapshot has no exchange time: the resync is at the last one received
            g["resync_ts_exchange"] = self._last_e if self._last_e is not None else NO_TIME
        self._write(ts_local, body)
        for no in held:
            self._write_held(no)
        if self.disconnects and self.disconnects[-1]["resync_line"] is None:
            r = self.disconnects[-1]
            r["resync_line"], r["resync_ts_local"] = self.no, ts_local
            e = snap.get("E")
            r["resync_ts_exchange"] = int(e) * 1_000_000 if isinstance(e, int) else (
                self._last_e if self._last_e is not None else NO_TIME)
        return None

    def _spawn_fetch(self, delay: float = 0.0) -> asyncio.Task:
        """Start a snapshot request; a refusal (LiveError) ends the connection at once, so it
        reaches the caller even when no message comes (Binance sends nothing for an unknown
        symbol's streams)."""
        task = asyncio.ensure_future(self._fetch(delay))

        def done(t):
            if not t.cancelled() and isinstance(t.exception(), LiveError):
                self._fatal = t.exception()
                ws = self._ws
                if ws is not None and ws.transport is not None:
                    ws.transport.abort()
        task.add_done_callback(done)
        return task

    async def _fetch(self, delay: float = 0.0):
        """GET the REST depth snapshot (urllib in a thread): (local ns, body, decoded)."""
        if delay:
            await asyncio.sleep(delay)
        self.stats["snapshot_fetches"] += 1
        url = f"{self.rest_url}{self._depth_path}?symbol={self.symbol}&limit={self.limit}"

        def get():
            try:
                with urllib.request.urlopen(url, timeout=self.snapshot_timeout) as r:
                    return r.read()
            except urllib.error.HTTPError as exc:
                if 400 <= exc.code < 500 and exc.code not in (418, 429):
                    # a request the exchange refuses (e.g. an unknown symbol): retrying will
                    # not help; rate limits (418 / 429) are retried with the backoff
                    body = exc.read()[:200].decode("utf-8", "replace")
                    raise LiveError(f"{url}: HTTP {exc.code}: {body}") from None
                raise
        body = await asyncio.to_thread(get)
        ts_local = time.time_ns()
        snap = json.loads(body)
        if not isinstance(snap, dict) or "lastUpdateId" not in snap:
            raise ValueError(f"not a depth snapshot: {body[:80]!r}")
        return ts_local, body, snap


# ---- bars ----------------------------------------------------------------------------------

class _LiveBars:
    """The bar logic of :func:`ofi_fast.stream` fed message by message, with the book and the
    trades as two time-ordered streams that need not be ordered with each other: bar k is
    closed when both have moved past it, or when anything later than its end + ``lateness``
    has arrived. Its book fields (OFI window, mid) are the book's state after the last message
    of a bar <= k, its TFI the trade flow's after the last trade of a bar <= k: what the merged
    replay of a recording (:func:`ofi_fast.stream`, one time-sorted pass) reads at its close.
    """

    def __init__(self, every, window, levels, tick_size, classify, lateness, clock):
        import ofi_fast
        self.every, self.window, self.levels = every, window, levels
        self.tick = tick_size
        self.lateness = lateness
        self.clock = clock
        self.flow = ofi_fast.TradeFlow(window_time=window, grow=True, classify=classify)
        self.ofi = None
        self.acc: dict[int, list] = {}   # bar -> [n, ofi, nt, first_mid, any_depth]
        self.dclose: dict[int, tuple[float, float]] = {}   # depth bar -> (ofi value, mid)
        self.dk = self.tk = None           # bar of the last book message / trade
        self.last_ts = None                # last book unit time (non-decreasing)
        self.mid = math.nan
        self.max_ts = None
        self.prev = math.nan               # mid at the close of the last bar emitted
        self.cur = (0.0, math.nan)         # depth state at the last emitted bar's close
        self.emitted = None                # last bar emitted
        self.late = 0
        self.lat_cpu: list[int] = []
        self.recv_cpu = 0
        self.tclose: dict[int, float] = {}  # trade bar -> TFI when the trades moved past it
        self.tcur = math.nan               # TFI at the last emitted bar's close
        self._snap: list = []
        self.spans: list[tuple[int, int | None]] = []   # invalid (from, to) in the bar clock
        self.seen = None                   # the stream's (gaps, outages, snapshots) of spans
        # max_ts from which _emit may close a bar when nothing but max_ts changes (the
        # per-diff path: same bar, no trade, nothing held): set by every _emit
        self.due = -(1 << 63)
        self.stream: BinanceStream | None = None

    def refresh(self, stream: BinanceStream) -> None:
        """The invalid spans, recomputed when the stream's gaps / outages / snapshots moved."""
        key = (len(stream.stats["gap_records"]), len(stream.disconnects),
               stream.stats["snapshots"])
        if key != self.seen:
            self.spans, self.seen = _spans(stream), key

    def fast_bar(self) -> int:
        """The bar a diff may take the per-diff path into (:meth:`applied`): the book's
        current bar when it is still open; -1 (no bar) otherwise."""
        k = self.dk
        if k is None or (self.emitted is not None and k <= self.emitted):
            return -1
        return k

    def trades(self, rows, stream: BinanceStream) -> list[StreamBar]:
        """Trade rows of one message (``Columns(Trades).rows`` tuples): what :meth:`add`
        does with a chunk of these trades only, without building it."""
        i = 1 if self.clock == "local" else 0
        for r in rows:
            self._trade(r[i], r[2], r[3], r[4])
        self.refresh(stream)
        return self._emit(hold=_hold(stream))

    def _trade(self, ti: int, price: float, size: float, side: int) -> None:
        """One trade at ``ti`` (the bars' clock) into its bar and the trade flow."""
        k = self._not_late(ti // self.every)
        if self.tk is not None and k > self.tk:
            self.tclose[self.tk] = self._tfi()
        if self.tk is None or k > self.tk:
            self.tk = k
        self._bar(k)[2] += 1
        self.flow.update(ti, price, size, side)
        if self.max_ts is None or ti > self.max_ts:
            self.max_ts = ti

    def applied(self, dec: DiffBuffers) -> list[StreamBar] | None:
        """A diff that :meth:`DiffBuffers.step` applied to the book, in bar :meth:`fast_bar`
        at time ``dec.t``: what :meth:`add_diff` does after its BookOFI call (the bar's sums,
        mid, times), and the bars it closes (None when none: the usual case)."""
        acc = self.acc[self.dk]
        acc[1] += dec.e
        acc[0] += 1
        m = dec.mid
        if m == m:
            if acc[3] != acc[3]:
                acc[3] = m
            self.mid = m
        t = dec.t
        self.last_ts = t
        if self.max_ts is None or t > self.max_ts:
            self.max_ts = t
        if self.max_ts >= self.due:
            self.refresh(self.stream)
            return self._emit()
        return None

    def _not_late(self, k):
        """A message of a bar already emitted (later than ``lateness``) goes to the next one,
        counted in ``late``."""
        if self.emitted is not None and k <= self.emitted:
            self.late += 1
            return self.emitted + 1
        return k

    def _bar(self, k):
        a = self.acc.get(k)
        if a is None:
            a = self.acc[k] = [0, 0.0, 0, math.nan]
        return a

    def _depth_enter(self, k):
        if self.dk is not None and k > self.dk:
            self.dclose[self.dk] = (self.ofi.value if self.ofi is not None else 0.0, self.mid)
        if self.dk is None or k > self.dk:
            self.dk = k
        self._bar(k)

    def _set_mid(self, m, a):
        if m == m:
            if math.isnan(a[3]):
                a[3] = m
            self.mid = m

    def add(self, chunk: BinanceChunk, recv_ns: int | None, lat: list[int] | None,
            hold: int | None = None, single: bool = False):
        """One chunk of :class:`BinanceStream`; returns the bars it closed (none that ends
        after ``hold``, the time of the oldest diff held for a snapshot)."""
        d, t = chunk.depth, chunk.trades
        n = d.side.shape[0]
        if single and self.ofi is not None:      # one diff, no trade: the short way
            tsa = d.ts_local if self.clock == "local" else d.ts_exchange
            ts = int(tsa[0])
            if ts != NO_TIME:
                if self.last_ts is not None and ts < self.last_ts:
                    ts = self.last_ts
                k = self._not_late(ts // self.every)
                self._depth_enter(k)
                acc = self.acc[k]
                ofi = self.ofi
                e = ofi.update_many(tsa, d.side, d.price, d.size,
                                    batch_end=d.flags.astype(np.bool_))
                if lat is not None and recv_ns is not None:
                    lat.append(time.perf_counter_ns() - recv_ns)
                    self.lat_cpu.append(time.thread_time_ns() - self.recv_cpu)
                acc[1] += float(e[-1])
                acc[0] += 1
                self._set_mid(ofi.book.mid, acc)
                self.last_ts = ts
                if self.max_ts is None or ts > self.max_ts:
                    self.max_ts = ts
                return self._emit(hold=hold)
        if n:
            ts = (d.ts_local if self.clock == "local" else d.ts_exchange)
            flags = d.flags
            snap = (flags & FLAG_SNAPSHOT) != 0
            be = (flags & FLAG_BATCH_END) != 0
            ends = np.flatnonzero(be | np.r_[snap[1:] != snap[:-1], True])
            starts = np.r_[0, ends[:-1] + 1]
            u_ts = ts[ends].copy()
            u_snap = snap[starts]
            miss = u_ts == NO_TIME
            if miss.any():                     # a snapshot without a time: the time around it
                ok = ~miss
                fill = self.last_ts if self.last_ts is not None else (
                    int(u_ts[ok][0]) if ok.any() else None)
                if fill is None and self.clock == "exchange" and self.stream is not None:
                    fill = self.stream._last_e     # alone in its chunk (applied on arrival):
                                                   # the last exchange time received
                if fill is None:
                    fill = int(d.ts_local[0])
                u_ts[miss] = fill
            # as ofi_fast.stream: a snapshot takes the time of the diffs buffered for it, and
            # book times are made non-decreasing
            rev = np.minimum.accumulate(u_ts[::-1])[::-1]
            u_ts = np.where(u_snap, rev, u_ts)
            if self.last_ts is not None:
                u_ts = np.maximum(u_ts, self.last_ts)
            np.maximum.accumulate(u_ts, out=u_ts)
            if self.ofi is None:
                import ofi_fast
                from ofi_fast.feeds.sources import infer_tick_size
                self.tick = self.tick or infer_tick_size(d.price)
                self.ofi = ofi_fast.BookOFI(self.tick, levels=self.levels,
                                            window_time=self.window, grow=True,
                                            crossed=CROSSED_POLICY)
            ofi = self.ofi
            bts = ts if self.clock == "local" else d.ts_exchange
            # diffs replayed from the buffer at a snapshot waited for it by design: their
            # latency is not the client's (not counted)
            resync = bool(u_snap.any())
            for j in range(ends.shape[0]):
                a, b = int(starts[j]), int(ends[j]) + 1
                k = self._not_late(int(u_ts[j]) // self.every)
                self._depth_enter(k)
                acc = self.acc[k]
                if u_snap[j]:
                    if flags[a] & FLAG_CLEAR:
                        self._snap = []
                    self._snap.append((d.side[a:b], d.price[a:b], d.size[a:b]))
                    if be[b - 1]:
                        sd, px, sz = (np.concatenate(x) for x in zip(*self._snap))
                        ofi.load_snapshot(px[sd > 0], sz[sd > 0], px[sd < 0], sz[sd < 0])
                        self._snap = []
                        self._set_mid(ofi.book.mid, acc)
                else:
                    tsu = bts[a:b]
                    if self.clock == "exchange":
                        tsu = np.where(tsu == NO_TIME, u_ts[j], tsu)
                    e = ofi.update_many(tsu, d.side[a:b], d.price[a:b], d.size[a:b],
                                        batch_end=be[a:b])
                    if lat is not None and recv_ns is not None and not resync:
                        lat.append(time.perf_counter_ns() - recv_ns)
                        self.lat_cpu.append(time.thread_time_ns() - self.recv_cpu)
                    acc[1] += float(e[-1])
                    acc[0] += 1
                    if be[b - 1]:
                        self._set_mid(ofi.book.mid, acc)
            self.last_ts = int(u_ts[-1])
            self.max_ts = self.last_ts if self.max_ts is None else max(self.max_ts, self.last_ts)
        nt = t.side.shape[0]
        if nt:
            tts = t.ts_local if self.clock == "local" else t.ts_exchange
            for i in range(nt):
                self._trade(int(tts[i]), float(t.price[i]), float(t.size[i]), int(t.side[i]))
        return self._emit(hold=hold)

    def _tfi(self):
        return self.flow.imbalance if not self.flow.empty else math.nan

    def add_diff(self, dec: DiffBuffers, n: int, recv_ns: int | None, lat: list[int] | None,
                 hold: int | None = None) -> list[StreamBar] | None:
        """One applied diff of ``n`` > 0 rows in ``dec`` (all at the time ``dec.ts[0]`` of the
        bar clock), straight into the BookOFI from the decoder's buffers: what :meth:`add`
        does with that diff as a one-diff chunk, without building the chunk. Returns the bars
        it closed, or None when it cannot take the diff (no book yet, no time): then the
        caller passes the chunk to :meth:`add`."""
        ofi = self.ofi
        ts = int(dec.ts[0])
        if ofi is None or ts == NO_TIME:
            return None
        if self.last_ts is not None and ts < self.last_ts:
            ts = self.last_ts
        k = self._not_late(ts // self.every)
        self._depth_enter(k)
        acc = self.acc[k]
        e = dec.apply(ofi)          # update_many's loop and errors, on the buffers in place
        if lat is not None and recv_ns is not None:
            lat.append(time.perf_counter_ns() - recv_ns)
            self.lat_cpu.append(time.thread_time_ns() - self.recv_cpu)
        acc[1] += e
        acc[0] += 1
        self._set_mid(dec.mid, acc)
        self.last_ts = ts
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        return self._emit(hold=hold)

    def _emit(self, final=False, hold=None):
        out = []
        self.due = 1 << 62             # nothing open: only a new bar (a slower path) changes it
        while self.acc:
            k = min(self.acc)
            end = (k + 1) * self.every
            if hold is not None and not final and end > hold:
                self.due = -(1 << 63)  # held: the next call decides
                break                  # diffs held for a snapshot may still fall in bar k
            done = final or (self.max_ts is not None and self.max_ts >= end + self.lateness) or (
                self.dk is not None and self.dk > k and self.tk is not None and self.tk > k)
            if not done:
                self.due = end + self.lateness     # the other conditions need a new bar
                break
            # each side's state at the end of bar k: read when it moved past k, or now
            if k in self.tclose:
                self.tcur = self.tclose.pop(k)
            elif self.tk is None or self.tk <= k:
                self.tcur = self._tfi()
            tfi = self.tcur
            n, ofi, ntr, first = self.acc.pop(k)
            if k in self.dclose:
                self.cur = self.dclose.pop(k)
            elif self.dk is not None and self.dk <= k:
                self.cur = (self.ofi.value if self.ofi is not None else 0.0, self.mid)
            ow, last = self.cur
            prev = self.prev
            if math.isnan(prev) and not math.isnan(last):
                prev = first
            dm = last - prev if not math.isnan(prev) else math.nan
            if self.tick and not math.isnan(dm):
                dm = float(_on_grid(np.array([dm]), self.tick)[0])
            start = k * self.every
            valid = not any(start + self.every > a and (b is None or start <= b)
                            for a, b in self.spans)
            out.append(StreamBar(int(start), n, ntr, ofi, float(ow), float(tfi), last, dm,
                                 valid))
            self.prev = last
            self.emitted = k
        return out

    def finish(self):
        """The bars still open (at the end of the session)."""
        return self._emit(final=True)


async def bars(stream: BinanceStream, *, every: float = 10.0, window: float = 1.0,
               levels: int = 1, tick_size: float | None = None,
               classify: str | None = "tick", lateness: float | None = None
               ) -> AsyncIterator[StreamBar]:
    """Bars of a live :class:`BinanceStream` as they close: :class:`ofi_fast.pipeline.StreamBar`
    (the columns of :func:`ofi_fast.stream`), by the stream's clock (``stream.clock``).

    ``every`` / ``window`` seconds as in :func:`ofi_fast.stream`; ``levels``: the BookOFI's
    levels (1: best-level OFI, as ``ofi_fast.stream``); ``tick_size``: the book's grid
    (default inferred from the first snapshot). ``lateness`` (s): how long past a bar's end a
    message of the other stream may still arrive (default 0 on the local clock, whose times are
    the arrival order; 1 s on the exchange clock, where trades and depth come on two streams):
    a bar is yielded once both streams have moved past it, or once a message later than its end
    + ``lateness`` has arrived; a message later still for a bar already yielded is counted in
    ``stream.stats["late"]`` and goes to the next bar. ``valid`` is False for bars that overlap
    a gap or an outage before its resync. Receive-to-signal latencies (one per applied diff)
    go to ``stream.latency.signal``. At the end of the stream the open bars are yielded.
    """
    every_ns = _every_ns(every)
    window_ns = _every_ns(window, "window")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise LiveError(f"levels must be a positive integer, not {levels!r}")
    if lateness is None:
        lateness = 0.0 if stream.clock == "local" else 1.0
    lb = _LiveBars(every_ns, window_ns, levels, tick_size, classify,
                   int(round(float(lateness) * _NS)), stream.clock)
    lat = stream.latency.signal
    lb.lat_cpu = stream.latency.signal_cpu
    lb.stream = stream
    stream.stats["late"] = 0
    dec = stream._dec
    stream._sink = lb             # the diffs of the common case go to lb.applied directly
    try:
        async for chunk in stream._run():
            if chunk is _BARS:                        # closed by a diff of the per-diff path
                stream.stats["late"] = lb.late
                for b in stream._bars_out:
                    yield b
                continue
            lb.refresh(stream)                        # invalid spans change with these only
            hold = _hold(stream)
            lb.recv_cpu = stream.recv_cpu_ns
            out = None
            if chunk is _DIFF:
                out = lb.add_diff(dec, stream._diff[0], stream.recv_ns, lat, hold)
                if out is None:
                    chunk = stream._diff_chunk()
            if out is None:
                out = lb.add(chunk, stream.recv_ns, lat, hold, stream.single_diff)
            for b in out:
                stream.stats["late"] = lb.late
                yield b
        lb.spans = _spans(stream)
        stream.stats["late"] = lb.late
        for b in lb.finish():
            yield b
    finally:
        stream._sink = None


def _hold(stream: BinanceStream) -> int | None:
    """The time (bar clock) of the oldest diff held for a snapshot; None when none is."""
    buf = stream.sync.buffer
    if not buf:
        return None
    _, t_loc, data = buf[0]
    e = data.get("E")
    return t_loc if stream.clock == "local" or not isinstance(e, int) else e * 1_000_000


def _spans(stream: BinanceStream) -> list[tuple[int, int | None]]:
    """Invalid spans (start, resync or None) of a stream, in its clock: gaps and outages."""
    if not stream.stats["gap_records"] and not stream.disconnects:
        return []
    q = stream.quality
    return [(g.ts, g.resync_ts) for g in (*q.gaps, *q.disconnects)]
