"""Binance spot and USD-M futures recordings: diff-depth synced onto the REST snapshot, trades,
best quotes.

Input: one message per line, gzip or plain, in any of the layouts recorders write:

- ``<local ns> <json>`` (hftbacktest's collector),
- ``<local seconds>: <json>`` (cryptofeed's raw recorder; ``wss://`` marker lines are skipped and
  counted), with the REST snapshots either in the same file or in cryptofeed's ``*.http.*`` file
  (``<url> -> <seconds>: <json>``) passed as ``snapshots=``, merged in by local time,
- bare ``<json>`` (no local time: ``ts_local`` is :data:`NO_TIME`).

Combined-stream wrappers (``{"stream":..,"data":..}``) and bare payloads are both accepted.

Synchronisation (Binance "How to manage a local order book correctly"; THEORY-DETAIL.md 7.2),
``market="spot"`` or ``"usdm"`` (default: detected from the first diff, ``pu`` present = usdm):

1. diffs that arrive before a snapshot are buffered;
2. at a snapshot with ``lastUpdateId`` L, buffered and later diffs with ``u <= L`` (spot) /
   ``u < L`` (futures) are dropped (counted in ``stats["dropped_stale"]``);
3. the first applied diff must straddle: ``U <= L + 1 <= u`` (spot) / ``U <= L <= u`` (futures);
4. afterwards ``U == previous u + 1`` (spot) / ``pu == previous u`` (futures); a diff whose
   ``u`` is not past the previous ``u`` is a message already applied (a duplicate a server
   re-sent) and is ignored (counted in ``stats["duplicates"]``).

A break of 3 or 4 raises :class:`~ofi_fast.errors.SequenceGapError` naming the ids and the line
(``on_gap="raise"``), or under ``on_gap="resync"`` is recorded in ``stats["gaps"]``; diffs are
then dropped (counted in ``stats["dropped_gap"]``) until the next snapshot re-initialises the book
(its first row carries :data:`FLAG_CLEAR`). A snapshot arriving while in sync also re-initialises.

Output (package units, see :mod:`ofi_fast.feeds._l2`): :class:`BookDeltas` rows (snapshot levels
flagged :data:`FLAG_SNAPSHOT`, the last row of each message :data:`FLAG_BATCH_END`), with
``update_id`` = the diff's ``u`` (the snapshot's ``lastUpdateId``); ``ts_exchange`` = ``E``
(snapshots: futures ``E``, spot :data:`NO_TIME`). :class:`Trades` from ``trade`` (``T``, id ``t``)
and ``aggTrade`` (``T``, id ``a``): ``m`` (buyer is maker) true = seller-initiated (-1).
:class:`Quotes` from ``bookTicker`` (spot has no event time: ``ts_exchange`` = NO_TIME).
Local and exchange clocks are kept as given: the hftbacktest capture's ``E`` runs ~1.27 s ahead of
its local clock, and nothing corrects that.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, NamedTuple

from ofi_fast.errors import ParseError, SequenceGapError
from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    NO_TIME,
    ErrorLog,
    TimeOrder,
    check_time_order,
    json_int,
)
from ofi_fast.feeds._recorded import recorded_messages
from ofi_fast.feeds._l2 import (
    FLAG_BATCH_END,
    FLAG_CLEAR,
    FLAG_SNAPSHOT,
    BookDeltas,
    Columns,
    Quotes,
    Trades,
)

_INF = float("inf")


def _px(s) -> float:
    """A price: decimal string -> float, finite and > 0 (else ValueError)."""
    v = float(s)
    if not 0.0 < v < _INF:
        raise ValueError(f"bad price {s!r}")
    return v


def _sz(s) -> float:
    """A size: decimal string -> float, finite and >= 0 (else ValueError)."""
    v = float(s)
    if not 0.0 <= v < _INF:
        raise ValueError(f"bad size {s!r}")
    return v


class BinanceChunk(NamedTuple):
    """One chunk of a Binance recording: BookDeltas, Trades, Quotes."""

    depth: BookDeltas
    trades: Trades
    quotes: Quotes

_MS = 1_000_000


def _binance_message(msg, line):
    """A recorded line's JSON must be an object; a REST snapshot carries no symbol, so take it
    from the request URL in front of it (``msg["_symbol"]``)."""
    if not isinstance(msg, dict):
        raise ValueError("JSON is not an object")
    if line.startswith(b"http") and b"symbol=" in line:
        sym = line.split(b"symbol=", 1)[1].split(b"&", 1)[0].split(b" ", 1)[0]
        msg["_symbol"] = sym.decode().upper()
    return msg


class BinanceReader:
    """Read a Binance diff-depth / trade / bookTicker recording; see the module docstring.

    Parameters
    ----------
    path : the recording (gzip or plain).
    market : ``"spot"``, ``"usdm"`` or None (detect from the first diff: ``pu`` present = usdm).
    symbol : keep this symbol only (other symbols' messages are counted in
        ``stats["other_symbol"]``); default: the symbol of the first symbol-bearing message.
    snapshots : optional file of REST snapshots (cryptofeed ``*.http.*``) merged by local time.
    chunk_rows : flush a chunk once a stream holds this many rows (a chunk may exceed it by the
        rows of one message, e.g. a 2000-level snapshot).
    on_gap : ``"raise"`` or ``"resync"``; on_error : ``"raise"`` or ``"skip"`` for malformed lines.
    time_order : ``"local"`` (the recorder's receive time) or ``"exchange"`` (the diff's ``E``):
        a diff of the symbol read that is earlier on that clock than the one before it is a
        malformed line (``ParseError`` naming file and line, or skipped and counted: the next
        diff then breaks the id chain and the book resyncs at the next snapshot); snapshots,
        trades and quotes are not judged. None (default): not judged here
        (:func:`ofi_fast.feeds.open` judges the clock of the bars).

    Iterating yields :class:`BinanceChunk` (depth, trades, quotes); :meth:`read` returns one.
    ``stats`` counts lines, messages by kind, applied / dropped diffs, gaps (see module doc).
    """

    def __init__(self, path, *, market=None, symbol=None, snapshots=None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, on_gap: str = "raise",
                 on_error: str = "raise", time_order: str | None = None):
        if market not in (None, "spot", "usdm"):
            raise ValueError(f"market must be 'spot', 'usdm' or None, not {market!r}")
        if on_gap not in ("raise", "resync"):
            raise ValueError(f"on_gap must be 'raise' or 'resync', not {on_gap!r}")
        self.path = str(path)
        self._market = market
        self._symbol = symbol.upper() if symbol else None
        self._sync: BinanceSync | None = None
        self.snapshots = snapshots
        self.chunk_rows = int(chunk_rows)
        self.on_gap = on_gap
        self.on_error = on_error
        self.time_order = check_time_order(time_order)
        self.errors = ErrorLog(self.path, on_error)
        self.snap_errors = ErrorLog(str(snapshots), on_error) if snapshots is not None else None

    @property
    def market(self) -> str | None:
        """"spot" or "usdm": as given, else detected from the first diff read."""
        return self._sync.market if self._sync is not None else self._market

    @property
    def symbol(self) -> str | None:
        """The symbol read: as given, else the first symbol-bearing message's."""
        return self._sync.symbol if self._sync is not None else self._symbol

    # -- input ---------------------------------------------------------------------------------
    def _lines(self, path, errors):
        for no, ts_local, msg in recorded_messages(path, errors, self.stats, _binance_message):
            yield no, ts_local, msg, path

    def _merged(self):
        main = self._lines(self.path, self.errors)
        if self.snapshots is None:
            yield from main
            return
        snaps = sorted(self._lines(str(self.snapshots), self.snap_errors), key=lambda r: r[1])
        i = 0
        for rec in main:
            while i < len(snaps) and rec[1] != NO_TIME and snaps[i][1] <= rec[1]:
                yield snaps[i]
                i += 1
            yield rec
        yield from snaps[i:]

    # -- driving the state machine -------------------------------------------------------------
    def __iter__(self):
        self.stats = st = new_stats()
        depth, trades, quotes = Columns(BookDeltas), Columns(Trades), Columns(Quotes)
        self._sync = sync = BinanceSync(market=self._market, symbol=self._symbol,
                                        on_gap=self.on_gap, where=self.path, stats=st)
        order = TimeOrder.of(self.errors, self.time_order, "ts_local", "E")
        if order is not None:
            sync.judge = lambda no, ts_local, data: order.ok(
                no, ts_local if order.local else (json_int(data["E"]) * _MS if "E" in data
                                                  else NO_TIME))
        n = self.chunk_rows
        try:
            for no, ts_local, msg, src in self._merged():
                st["lines"] += 1
                data = msg.get("data", msg)
                try:
                    sync.feed(no, ts_local, data, depth, trades, quotes)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    if isinstance(exc, (SequenceGapError, ParseError)):
                        raise
                    errors = self.errors if src == self.path else self.snap_errors
                    errors.bad(no, f"bad Binance message ({type(exc).__name__}: {exc})")
                if len(depth) >= n or len(trades) >= n or len(quotes) >= n:
                    yield BinanceChunk(depth.flush(), trades.flush(), quotes.flush())
            st["unsynced_at_end"] = len(sync.buffer)
            if len(depth) or len(trades) or len(quotes):
                yield BinanceChunk(depth.flush(), trades.flush(), quotes.flush())
        finally:
            self._market, self._symbol = sync.market, sync.symbol

    def read(self) -> BinanceChunk:
        """The whole file as one :class:`BinanceChunk`."""
        parts = list(self)
        return BinanceChunk(BookDeltas.concat([p.depth for p in parts]),
                            Trades.concat([p.trades for p in parts]),
                            Quotes.concat([p.quotes for p in parts]))


def new_stats() -> dict[str, Any]:
    """The counters of :class:`BinanceSync` (and of the drivers: ``lines``, ``markers``)."""
    return {
        "lines": 0, "markers": 0, "depth_messages": 0, "applied": 0, "snapshots": 0,
        "dropped_stale": 0, "dropped_gap": 0, "unsynced_at_end": 0, "trades": 0,
        "quotes": 0, "other_symbol": 0, "other_stream": 0, "gaps": [],
        "first_applied_line": None, "snapshot_lines": [], "gap_records": [],
        "symbols": set(), "duplicates": 0,
    }


class BinanceSync:
    """The snapshot / diff-depth synchronisation of one Binance symbol, message by message (the
    rules of the module docstring). One implementation with two drivers: :class:`BinanceReader`
    (a recording, line by line) and :class:`ofi_fast.live.BinanceStream` (a websocket plus REST
    snapshots), so that a recording and a live session give the same book.

    :meth:`feed` takes one decoded message (the ``data`` of a combined-stream wrapper, or a REST
    snapshot) with its position ``no`` (a line number, or a message count live) and local
    receive time, and appends its rows to the :class:`~ofi_fast.feeds._l2.Columns` given.
    ``state``: ``"wait"`` (no snapshot yet: diffs buffered), ``"first"`` (snapshot loaded, the
    straddling diff not yet seen), ``"sync"`` (the book is valid), ``"gap"`` (a break of the id
    chain: invalid until the next snapshot). ``buffer_gaps=True`` (the live driver) keeps the
    diffs that arrive after a gap for the next snapshot, as before the first one, instead of
    dropping them at once; those the snapshot makes stale count as ``dropped_gap``.
    ``stats`` (:func:`new_stats`) counts everything; malformed messages raise ValueError /
    KeyError / TypeError for the driver to count. ``judge`` (None, or ``judge(no, ts_local,
    data) -> bool``, set by a driver): a diff of the symbol for which it returns False is left
    out as if it were absent (the file reader's time order).
    """

    def __init__(self, *, market=None, symbol=None, on_gap="raise", where="",
                 stats=None, buffer_gaps=False):
        self.market = market
        self.symbol = symbol
        self.on_gap = on_gap
        self.where = where
        self.stats = new_stats() if stats is None else stats
        self.buffer_gaps = buffer_gaps
        self.judge = None
        self.state = "wait"
        self.buffer = []       # diffs waiting for a snapshot (state "wait", or "gap" live)
        self.last_id = None    # lastUpdateId of the current snapshot
        self.prev_u = None

    @property
    def valid(self) -> bool:
        """True while the book is in sync (after the straddling diff, before any gap)."""
        return self.state == "sync"

    def feed(self, no, ts_local, data, depth, trades, quotes):
        """Apply one message (see the class docstring)."""
        st = self.stats
        if "lastUpdateId" in data:
            if self._want_symbol(data.get("_symbol")):
                self.snapshot(no, ts_local, data, depth)
            return
        ev = data.get("e")
        if ev == "depthUpdate":
            if self._want_symbol(data.get("s")):
                st["depth_messages"] += 1
                if self.judge is None or self.judge(no, ts_local, data):
                    self.diff(no, ts_local, data, depth)
        elif ev in ("trade", "aggTrade"):
            if self._want_symbol(data.get("s")):
                tid = data["t"] if ev == "trade" else data["a"]
                m = data["m"]
                if not isinstance(m, bool):
                    raise ValueError(f"'m' is not a boolean: {m!r}")
                trades.append(json_int(data["T"]) * _MS, ts_local, _px(data["p"]), _sz(data["q"]),
                              -1 if m else 1, json_int(tid))
                st["trades"] += 1
        elif ev == "bookTicker" or (ev is None and "b" in data and "A" in data):
            if self._want_symbol(data.get("s")):
                e = data.get("E")
                quotes.append(json_int(e) * _MS if e is not None else NO_TIME, ts_local,
                              _px(data["b"]), _sz(data["B"]), _px(data["a"]), _sz(data["A"]),
                              json_int(data["u"]))
                st["quotes"] += 1
        else:
            st["other_stream"] += 1

    def _want_symbol(self, sym) -> bool:
        if sym is None:
            return True
        self.stats["symbols"].add(sym)
        if self.symbol is None:
            self.symbol = sym
        if sym != self.symbol:
            self.stats["other_symbol"] += 1
            return False
        return True

    def snapshot_is_old(self, last_id: int) -> bool:
        """True when a snapshot with ``lastUpdateId`` = ``last_id`` cannot join the buffered
        diffs: the oldest one it does not make stale starts after ``last_id + 1`` (spot) /
        ``last_id`` (futures), so the diffs in between are missing (fetch a newer one)."""
        futures = self.market == "usdm"
        for _, _, data in self.buffer:
            u = json_int(data["u"])
            if (u < last_id) if futures else (u <= last_id):
                continue
            return json_int(data["U"]) > (last_id if futures else last_id + 1)
        return False

    # snapshots -----------------------------------------------------------------------------------
    def snapshot(self, no, ts_local, data, depth):
        """A REST snapshot: re-initialise the book, then replay the buffered diffs."""
        st = self.stats
        last_id = json_int(data["lastUpdateId"])
        bids, asks = data["bids"], data["asks"]
        e = data.get("E")
        ts_ex = json_int(e) * _MS if e is not None else NO_TIME
        rows = ([(1, _px(p), _sz(q)) for p, q in bids]
                + [(-1, _px(p), _sz(q)) for p, q in asks])
        for i, (side, p, q) in enumerate(rows):
            flags = FLAG_SNAPSHOT | (FLAG_CLEAR if i == 0 else 0) | (
                FLAG_BATCH_END if i == len(rows) - 1 else 0)
            depth.append(ts_ex, ts_local, side, p, q, last_id, flags)
        if not rows:  # an empty book is still a reset: one clearing row with size 0
            depth.append(ts_ex, ts_local, 1, float("nan"), 0.0, last_id,
                         FLAG_SNAPSHOT | FLAG_CLEAR | FLAG_BATCH_END)
        st["snapshots"] += 1
        st["snapshot_lines"].append(no)
        after_gap = self.state == "gap"
        if after_gap and st["gap_records"]:
            g = st["gap_records"][-1]
            g["resync_line"], g["resync_ts_local"], g["resync_ts_exchange"] = no, ts_local, ts_ex
        self.last_id = last_id
        self.state = "first"
        self.prev_u = None
        buffered, self.buffer = self.buffer, []
        stale0 = st["dropped_stale"]
        for args in buffered:
            self.diff(*args, depth)
        if after_gap and self.buffer_gaps and st["dropped_stale"] > stale0:
            n = st["dropped_stale"] - stale0        # lost while the book was invalid
            st["dropped_stale"] = stale0
            st["dropped_gap"] += n
            if st["gap_records"]:
                st["gap_records"][-1]["dropped"] += n

    # diffs ---------------------------------------------------------------------------------------
    def diff(self, no, ts_local, data, depth):
        """One diff-depth message: buffer, drop (stale / duplicate / after a gap), or apply
        (its rows appended to ``depth``)."""
        if not self.accept(no, ts_local, data):
            return
        last_u = json_int(data["u"])
        e = data.get("E")
        ts_ex = json_int(e) * _MS if e is not None else NO_TIME
        rows = ([(1, _px(p), _sz(q)) for p, q in data["b"]]
                + [(-1, _px(p), _sz(q)) for p, q in data["a"]])
        if rows:
            last = rows.pop()
            depth.extend([(ts_ex, ts_local, side, p, q, last_u, 0) for side, p, q in rows])
            depth.append(ts_ex, ts_local, last[0], last[1], last[2], last_u, FLAG_BATCH_END)
        self.commit(last_u)

    def accept(self, no, ts_local, data) -> bool:
        """The sync rules for one diff: True when it is to be applied (then build its rows and
        call :meth:`commit`); False when it was buffered, dropped or broke the chain (all
        counted). A ValueError / KeyError for a malformed diff leaves the state unchanged."""
        st = self.stats
        first_u, last_u = json_int(data["U"]), json_int(data["u"])
        pu = data.get("pu")
        if self.market is None:
            self.market = "usdm" if pu is not None else "spot"
        futures = self.market == "usdm"
        if futures and pu is None:
            raise ValueError("futures diff without 'pu'")
        state = self.state
        if state == "sync":
            if last_u <= self.prev_u:          # a message seen already (a re-sent duplicate)
                st["duplicates"] += 1
                return False
            if futures:
                if json_int(pu) != self.prev_u:
                    self._gap(no, f"pu={json_int(pu)} != previous u={self.prev_u} (U={first_u}, "
                                  f"u={last_u})", first_u, last_u, ts_local, data,
                              self.prev_u)
                    return False
            elif first_u != self.prev_u + 1:
                self._gap(no, f"U={first_u} != previous u + 1 = {self.prev_u + 1} "
                              f"(u={last_u})", first_u, last_u, ts_local, data, self.prev_u)
                return False
            return True
        if state == "wait" or (state == "gap" and self.buffer_gaps):
            self.buffer.append((no, ts_local, data))
            if state == "gap":
                g = st["gap_records"][-1]
                g["last_ts_local"], g["last_ts_exchange"] = ts_local, _event_ns(data)
            return False
        if state == "first":
            L = self.last_id
            if (last_u < L) if futures else (last_u <= L):
                st["dropped_stale"] += 1
                return False
            target = L if futures else L + 1
            if not (first_u <= target <= last_u):
                self._gap(no, f"first diff after snapshot lastUpdateId={L} does not straddle "
                              f"{target}: U={first_u}, u={last_u}", first_u, last_u,
                          ts_local, data, L)
                return False
            st["first_applied_line"] = st["first_applied_line"] or no
            return True
        # "gap": waiting for the next snapshot
        st["dropped_gap"] += 1
        g = st["gap_records"][-1]
        g["dropped"] += 1
        g["last_ts_local"], g["last_ts_exchange"] = ts_local, _event_ns(data)
        return False

    def commit(self, last_u: int) -> None:
        """An accepted diff (final id ``last_u``) was applied: the book is in sync."""
        self.stats["applied"] += 1
        self.prev_u = last_u
        self.state = "sync"

    def _gap(self, no, detail, first_u, last_u, ts_local, data, prev_id):
        """A break of the id chain at ``no``: raise, or record it (``stats["gaps"]``: (line,
        detail); ``stats["gap_records"]``: one dict per gap with the ids, the times of the gap
        message and of the last diff dropped after it, the number of diffs dropped, and the
        line / times of the snapshot that resynced the book, None while none has)."""
        st = self.stats
        where = f"{self.where}:{no}"
        if self.on_gap == "raise":
            raise SequenceGapError(f"{where}: sequence gap: {detail}", field="U", index=no)
        st["gaps"].append((no, detail))
        ts_ex = _event_ns(data)
        st["gap_records"].append({
            "line": no, "detail": detail, "first_id": first_u, "last_id": last_u,
            "prev_id": prev_id, "ts_local": ts_local, "ts_exchange": ts_ex, "dropped": 1,
            "last_ts_local": ts_local, "last_ts_exchange": ts_ex, "resync_line": None,
            "resync_ts_local": None, "resync_ts_exchange": None})
        st["dropped_gap"] += 1
        self.state = "gap"


def _event_ns(data) -> int:
    """A diff's exchange event time ``E`` in ns (NO_TIME when absent or not an integer)."""
    e = data.get("E")
    return int(e) * _MS if isinstance(e, int) else NO_TIME


def read_binance(path: str | os.PathLike[str], **kwargs: Any) -> BinanceChunk:
    """Whole-file convenience: ``BinanceReader(path, **kwargs).read()``."""
    return BinanceReader(path, **kwargs).read()


def iter_binance(path: str | os.PathLike[str], **kwargs: Any) -> Iterator[BinanceChunk]:
    """Chunked reading: ``iter(BinanceReader(path, **kwargs))``."""
    return iter(BinanceReader(path, **kwargs))
