"""One way in for every input: :func:`open` detects the format and returns a :class:`Source`.

A :class:`Source` yields :class:`Chunk` s of bounded size (``chunk_rows``), each holding events
of one kind (best quotes after each event, or L2 price-level deltas) plus the trades up to the
same time, in one clock (int64 ns). ``source.quality`` is the :class:`~ofi_fast.quality.DataQuality`
of what has been read so far. Formats (:data:`FORMATS`): LOBSTER (zip or message + orderbook
pair), Binance spot / USD-M recordings, Tardis CSV, Coinbase and Kraken captures, Bitstamp L3,
and generic CSV / Parquet quotes (+ trades). ``inputs=None`` (or empty) is the embedded
simulator (:mod:`ofi_fast.simulate`).

Every failure is an :class:`~ofi_fast.errors.OFIError`: :class:`InputError` for an input that
cannot be used as given (wrong pair, unknown format, absent symbol: the message says what to
change), :class:`~ofi_fast.errors.ParseError` (file and line) for a malformed file.
"""

from __future__ import annotations

import builtins
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ofi_fast.errors import OFIError
from ofi_fast.quality import DataQuality, Gap, errorlog_fields

NS_PER_S = 1_000_000_000

#: Default rows per chunk of :func:`open` (bounds memory).
DEFAULT_CHUNK_ROWS = 1_000_000


class InputError(OFIError):
    """An input that cannot be read as given (the message names the file and what to change)."""


class Chunk:
    """Consecutive input rows of one of two kinds, plus the trades among them.

    - ``kind == "quotes"``: best quotes after each event, ``ts`` int64 ns, ``bid_px``/``ask_px``
      float64 (NaN for an empty side), ``bid_sz``/``ask_sz`` float64 (0 for an empty side);
      ``depth``: where the input has L > 1 levels (LOBSTER's order-book file, the simulator),
      the book after each event as ``(bid_px, bid_sz, ask_px, ask_sz)``, each ``(n, L)``
      float64, best level first (column 0 equals the best quotes; an empty level: price NaN,
      size 0); None otherwise;
    - ``kind == "deltas"``: L2 price-level deltas (``ofi_fast.feeds.BookDeltas`` semantics),
      ``ts`` int64 ns, ``side`` int8, ``price``, ``size`` (new absolute size) float64, ``flags``
      uint8 (FLAG_SNAPSHOT / FLAG_CLEAR / FLAG_BATCH_END);
    - ``kind is None``: trades only.
    Trades: ``trade_ts`` int64 ns, ``trade_price``/``trade_size`` float64, ``trade_side`` int8
    (aggressor: +1 buy, -1 sell, 0 unknown).
    """

    __slots__ = ("kind", "ts", "bid_px", "bid_sz", "ask_px", "ask_sz", "side", "price", "size",
                 "flags", "trade_ts", "trade_price", "trade_size", "trade_side", "depth")

    def __init__(self, kind=None, ts=None, *, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None,
                 side=None, price=None, size=None, flags=None, trade_ts=None, trade_price=None,
                 trade_size=None, trade_side=None, depth=None):
        self.kind = kind
        self.depth = depth
        self.ts = np.zeros(0, np.int64) if ts is None else ts
        self.bid_px, self.bid_sz, self.ask_px, self.ask_sz = bid_px, bid_sz, ask_px, ask_sz
        self.side, self.price, self.size, self.flags = side, price, size, flags
        if trade_ts is None:
            trade_ts, trade_price, trade_size = (np.zeros(0, np.int64), np.zeros(0),
                                                 np.zeros(0))
            trade_side = np.zeros(0, np.int8)
        self.trade_ts, self.trade_price = trade_ts, trade_price
        self.trade_size, self.trade_side = trade_size, trade_side

    def __len__(self):
        return int(self.ts.shape[0])


class Source:
    """A named stream of :class:`Chunk` (what :func:`open` returns).

    - ``name``: the input (file, or ``file:member``); ``format``: its format (:data:`FORMATS`,
      or "simulator"); ``kind``: "quotes" (best quotes after each event) or "deltas" (L2 rows);
      ``note``: how it is read, in words; ``tick_size``: the book's price grid when given.
    - ``symbol``: the instrument read (the one asked for, else the reader's first; known
      after the first chunk for multi-symbol captures); ``symbols``: every symbol the input
      holds (read from the file when first asked for).
    - :meth:`chunks` iterates the input (once per call); ``quality``: the
      :class:`~ofi_fast.quality.DataQuality` of what has been read so far.
    - ``clock``: "local" or "exchange", the clock of the chunks' timestamps.
    """

    def __init__(self, name: str, chunks: Callable[[], Iterator[Chunk]], kind: str = "quotes",
                 *, fmt: str = "", tick_size: float | None = None, note: str = "",
                 symbol: str | None = None, symbols: Callable[[], list[str]] | None = None,
                 collect: Callable[[], dict[str, Any]] | None = None, clock: str = "exchange",
                 unit: str = "messages", n_events: int | None = None):
        self.name = name
        self.format = fmt
        self.kind = kind
        self.tick_size = tick_size
        self.note = note
        self.clock = clock
        self.n_events = n_events
        self._symbol = symbol
        self._symbols = symbols
        self._symbols_cache: list[str] | None = None
        self._chunks = chunks
        self._collect = collect
        self._unit = unit
        self.rows_read = 0
        self.trades_read = 0
        self._symbol_of: Callable[[], str | None] | None = None

    @property
    def symbol(self) -> str | None:
        if self._symbol is None and self._symbol_of is not None:
            self._symbol = self._symbol_of()
        return self._symbol

    @property
    def symbols(self) -> list[str]:
        if self._symbols_cache is None:
            self._symbols_cache = sorted(self._symbols()) if self._symbols is not None else (
                [self.symbol] if self.symbol else [])
        return self._symbols_cache

    def chunks(self) -> Iterator[Chunk]:
        """The input, chunk by chunk (each call reads it again from the start)."""
        self.rows_read = self.trades_read = 0
        try:
            for c in self._chunks():
                self.rows_read += len(c)
                self.trades_read += int(c.trade_ts.shape[0])
                yield c
        except OFIError:
            raise
        except (ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise InputError(f"{self.name}: {_msg(exc)[:200]}") from None

    @property
    def quality(self) -> DataQuality:
        d: dict[str, Any] = {"messages_read": self.rows_read, "messages_applied": self.rows_read}
        if self._collect is not None:
            d.update(self._collect())
        dropped = {k: int(v) for k, v in d.pop("dropped", {}).items() if v}
        if self._unit == "rows":           # one event a row: the dropped rows were read too
            d["messages_read"] += sum(dropped.values())
        return DataQuality(source=self.name, unit=self._unit, rows_read=self.rows_read,
                           rows_applied=self.rows_read, trades_read=self.trades_read,
                           dropped=dropped, **d)

    def __repr__(self) -> str:
        return f"Source({self.name!r}, format={self.format!r}, kind={self.kind!r})"


def _msg(exc: BaseException) -> str:
    s = str(exc)
    return s.strip("'\"") if isinstance(exc, KeyError) else s


def _log_quality(*logs) -> dict[str, Any]:
    """DataQuality fields from readers' ErrorLogs (malformed lines skipped, truncation)."""
    f = errorlog_fields(*logs)
    return {"dropped": {"parse_skip": f["parse_skip"]}, "parse_first": f["parse_first"],
            "truncated": f["truncated"]}


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Merge collect() dicts: counts and ``dropped`` entries add up, the rest: first wins."""
    out: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            if k == "dropped":
                dd = out.setdefault("dropped", {})
                for c, n in v.items():
                    dd[c] = dd.get(c, 0) + int(n)
            elif k not in out:
                out[k] = v
            elif isinstance(v, int) and not isinstance(v, bool):
                out[k] += v
    return out


def _scan_symbols(path, pattern: bytes, limit: int = 1 << 30) -> set[str]:
    """Every distinct match of ``pattern`` (one group) in the (possibly gzip) file's text."""
    from ofi_fast.feeds._common import open_binary
    rx = re.compile(pattern)
    found: set[str] = set()
    tail = b""
    read = 0
    with open_binary(str(path)) as f:
        while read < limit:
            block = f.read(1 << 22)
            if not block:
                break
            read += len(block)
            buf = tail + block
            found.update(m.decode("utf-8", "replace") for m in rx.findall(buf))
            tail = buf[-256:]
    return found


def _check_symbol(path, symbol, found: set[str], what: str, option: str = "--symbol"):
    if symbol is not None and symbol not in found:
        raise InputError(f"{path}: no {what} {symbol!r} in the input; it holds "
                         f"{', '.join(sorted(found)) or 'none'} ({option})")

def _simulator_source(events, seed, levels, chunk_size):
    from ofi_fast.simulate import simulate_chunks

    def chunks():
        for r in simulate_chunks(events, chunk_size=chunk_size, seed=seed, levels=levels):
            bp, bs, ap, az = r.best()
            yield Chunk("quotes", r.ts, bid_px=bp, bid_sz=bs, ask_px=ap, ask_sz=az,
                        trade_ts=r.trade_ts, trade_price=r.trade_price,
                        trade_size=r.trade_size, trade_side=r.trade_side,
                        depth=(r.bid_px, r.bid_sz, r.ask_px, r.ask_sz) if r.levels > 1
                        else None)

    return Source(f"simulator (seed {seed}, {levels} level{'s' if levels != 1 else ''})",
                  chunks, fmt="simulator", note="best quotes after each simulated event",
                  symbol="SIM", unit="rows", n_events=events, tick_size=0.01)


# ---- LOBSTER ---------------------------------------------------------------------------------

def _lobster_source(paths, opts):
    """LOBSTER message + orderbook pair (CSV files, either order, or one of them with its pair
    next to it) or LOBSTER's zip, through :class:`ofi_fast.feeds.LobsterReader`.

    Best quotes are the level-1 columns of the order-book file (the book after each message);
    trades are the executions (types 4 and 5) with the aggressor side
    (:func:`ofi_fast.feeds.lobster_trades`). Timestamps are ns since the epoch (New York
    trading date from the file name); a pair without a date in its names is read as ns after
    midnight (date 1970-01-01, UTC).
    """
    from ofi_fast.feeds import LobsterReader, lobster_trades
    from ofi_fast.feeds.lobster import _NAME_RE
    if len(paths) > 1 and any(p.suffix.lower() == ".zip" for p in paths):
        raise InputError("give one LOBSTER zip, or one message file and one orderbook file")
    if len(paths) > 2:
        raise InputError("LOBSTER input is one zip, or a message file and an orderbook file")
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        z = paths[0]
        try:
            with zipfile.ZipFile(z) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise InputError(f"{z}: not a zip file") from None
        msg = [n for n in names if _NAME_RE.search(n) and "_message_" in n]
        if len(msg) != 1 or msg[0].replace("_message_", "_orderbook_") not in names:
            raise InputError(f"{z}: no LOBSTER message/orderbook CSV pair inside")
        msg_path, book_path, label = z, None, f"{z}:{msg[0]}"
    else:
        if len(paths) == 1:
            p = paths[0]
            if "orderbook" in p.name:
                other = p.with_name(p.name.replace("orderbook", "message"))
                paths = [other, p]
            elif "message" in p.name:
                other = p.with_name(p.name.replace("message", "orderbook"))
                paths = [p, other]
            else:
                raise InputError(f"{p}: a LOBSTER message file needs its orderbook file "
                               "(give both)")
            if not other.exists():
                raise InputError(f"{p}: its LOBSTER pair {other} does not exist (give both files)")
        msg = [p for p in paths if "message" in p.name]
        book = [p for p in paths if "orderbook" in p.name]
        if len(msg) != 1 or len(book) != 1:
            msg, book = [paths[0]], [paths[1]]      # unnamed pair: message first, as documented
        msg_path, book_path, label = msg[0], book[0], str(msg[0])
        _check_lobster_pair(msg_path, book_path)
    date = None if _NAME_RE.search(str(msg_path if book_path else label)) else "1970-01-01"
    kw = {"date": date, "tz": None} if date else {}
    try:
        reader = LobsterReader(msg_path, book_path, chunk_rows=opts["chunk_size"],
                               on_error=opts["on_error"], prefetch=opts["prefetch"], **kw)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if reader.ob_src is None:
        raise InputError(f"{label}: no LOBSTER order-book file found for it")

    def chunks():
        for c in reader:
            if c.bid_px.shape[1] == 0:
                raise InputError(f"{label}: the order-book file has no columns")
            t = lobster_trades(c)
            yield Chunk("quotes", c.ts, bid_px=np.ascontiguousarray(c.bid_px[:, 0]),
                        bid_sz=np.ascontiguousarray(c.bid_sz[:, 0]),
                        ask_px=np.ascontiguousarray(c.ask_px[:, 0]),
                        ask_sz=np.ascontiguousarray(c.ask_sz[:, 0]),
                        trade_ts=t.ts, trade_price=t.price, trade_size=t.size,
                        trade_side=t.side,
                        depth=(c.bid_px, c.bid_sz, c.ask_px, c.ask_sz)
                        if c.bid_px.shape[1] > 1 else None)

    m = _NAME_RE.search(Path(label.rsplit(":", 1)[-1]).name)
    return Source(label, chunks, fmt="lobster", tick_size=opts["tick_size"],
                  note="LOBSTER messages; best quotes from the order-book file",
                  symbol=m.group("ticker") if m else None, unit="rows",
                  collect=lambda: _log_quality(reader.errors, reader.ob_errors))


def _check_lobster_pair(msg_path, book_path):
    """Fail early (one line) on an empty file or an order book that is not the messages' one."""
    from ofi_fast.feeds._common import open_binary
    with open_binary(str(msg_path)) as fm, open_binary(str(book_path)) as fb:
        m, b = fm.readline(), fb.readline()
    if not m.strip():
        raise InputError(f"{msg_path}: empty file")
    if not b.strip():
        raise InputError(f"{book_path}: empty file")
    nb = b.count(b",") + 1
    if m.count(b",") != 5 or nb % 4:
        raise InputError(f"{book_path}: not the LOBSTER orderbook of {msg_path} "
                       f"(message row with {m.count(b',') + 1} columns, order-book row with "
                       f"{nb} columns)")


# ---- exchange L2 feeds -----------------------------------------------------------------------

def _clock_of(ts_exchange, ts_local, clock, what):
    """The timestamps to use: the local receive clock when recorded (``clock="auto"``; one clock
    for every stream of a recording, non-decreasing in file order), else the exchange's."""
    from ofi_fast.feeds import NO_TIME
    if clock == "auto":
        clock = "local" if ts_local.shape[0] and (ts_local != NO_TIME).all() else "exchange"
    ts = ts_local if clock == "local" else ts_exchange
    if ts.shape[0] and (ts == NO_TIME).any():
        i = int(np.argmax(ts == NO_TIME))
        raise InputError(f"{what}[{i}] has no {clock} timestamp (try --clock "
                       f"{'exchange' if clock == 'local' else 'local'})")
    return ts, clock


class _DeltaClock:
    """Applies one clock choice to BookDeltas (snapshot rows may lack the exchange time).

    ``--clock auto`` means the recorder's local receive clock for Binance, Coinbase, Kraken and
    Tardis (one clock shared by the book and trade streams, non-decreasing in file order;
    Kraken's per-level exchange times are not) and the exchange clock for Bitstamp."""

    def __init__(self, clock, default="local"):
        self.clock = default if clock == "auto" else clock

    def __call__(self, d, what="delta ts"):
        from ofi_fast.feeds import FLAG_SNAPSHOT, NO_TIME
        snap = (d.flags & FLAG_SNAPSHOT) != 0
        ts = (d.ts_local if self.clock == "local" else d.ts_exchange).copy()
        # a snapshot row without a time takes the time of the row before it (it resets the
        # book; its time only places it in a bar)
        miss = ts == NO_TIME
        if miss.any():
            if (miss & ~snap).any():
                i = int(np.argmax(miss & ~snap))
                raise InputError(f"{what}[{i}] has no {self.clock} timestamp (try --clock "
                               f"{'exchange' if self.clock == 'local' else 'local'})")
            ok = ~miss
            if ok.any():
                idx = np.where(ok, np.arange(ts.shape[0]), 0)
                np.maximum.accumulate(idx, out=idx)
                first = int(np.argmax(ok))
                ts = ts[idx]
                ts[:first] = ts[first]
            else:
                ts[:] = NO_TIME
        return ts


def _deltas_chunk(d, ts, trades=None, tclock=None):
    kw = {}
    if trades is not None and len(trades):
        tts, _ = _clock_of(trades.ts_exchange, trades.ts_local, tclock, "trade ts")
        kw = dict(trade_ts=tts, trade_price=trades.price, trade_size=trades.size,
                  trade_side=trades.side)
    return Chunk("deltas", ts, side=d.side, price=d.price, size=d.size, flags=d.flags, **kw)


def _binance_source(paths, opts):
    """Binance spot / USD-M recording (diff depth synced onto the REST snapshot, trades), via
    :class:`ofi_fast.feeds.BinanceReader`; a second FILE is cryptofeed's REST snapshot file."""
    from ofi_fast.feeds import BinanceReader
    if len(paths) > 2:
        raise InputError("Binance input is one recording (plus, for cryptofeed captures, its "
                       "*.http.* snapshot file)")
    main, snaps = paths[0], None
    if len(paths) == 2:
        a, b = paths
        main, snaps = (b, a) if _is_binance_http(a) else (a, b)
    sym = opts.get("symbol")
    sym = sym.upper() if sym else None
    if sym is not None:
        _check_symbol(main, sym, _binance_symbols(main), "symbol")
    dclock = _DeltaClock(opts["clock"])
    reader = BinanceReader(main, snapshots=snaps, chunk_rows=opts["chunk_size"],
                           on_gap=opts["on_gap"], symbol=sym, on_error=opts["on_error"],
                           time_order=dclock.clock)

    def chunks():
        for c in reader:
            if c.depth.ts_local.shape[0] == 0 and len(c.trades) == 0:
                continue
            yield _deltas_chunk(c.depth, dclock(c.depth), c.trades, dclock.clock)

    src = Source(str(main), chunks, "deltas", fmt="binance", tick_size=opts["tick_size"],
                 note="Binance diff depth rebuilt by ofi_fast.BookOFI; trades with true sides",
                 symbol=sym, symbols=lambda: _binance_symbols(main), clock=dclock.clock,
                 collect=lambda: _binance_quality(reader, dclock.clock))
    src._symbol_of = lambda: reader.symbol
    return src


def _binance_symbols(path) -> set[str]:
    return _scan_symbols(path, rb'"s":"([A-Z0-9]+)"') | _scan_symbols(
        path, rb"symbol=([A-Za-z0-9]+)", 1 << 26)


def _binance_quality(reader, clock) -> dict[str, Any]:
    """DataQuality fields from a BinanceReader's stats (after or during the read)."""
    st = getattr(reader, "stats", None)
    if st is None:
        return {}
    key = "ts_local" if clock == "local" else "ts_exchange"
    from ofi_fast.feeds import NO_TIME
    gaps = []
    for g in st["gap_records"]:
        t0 = g[key] if g[key] != NO_TIME else g["ts_local"]
        rs = g["resync_" + key]
        if rs is None or rs == NO_TIME:
            rs = g["resync_ts_local"]
        end = rs if rs is not None else (g["last_" + key] if g["last_" + key] != NO_TIME
                                         else g["last_ts_local"])
        gaps.append(Gap(path=reader.path, line=g["line"], detail=g["detail"], ts=int(t0),
                        first_id=g["first_id"], last_id=g["last_id"], prev_id=g["prev_id"],
                        resync_ts=None if rs is None else int(rs),
                        resync_line=g["resync_line"], rows_invalid=int(g["dropped"]),
                        seconds_invalid=(int(end) - int(t0)) / NS_PER_S))
    n_msg = st["depth_messages"] + st["snapshots"]
    q = {"messages_read": n_msg, "messages_applied": st["applied"] + st["snapshots"],
         "dropped": {"stale": st["dropped_stale"], "gap": st["dropped_gap"],
                     "unsynced_at_end": st["unsynced_at_end"]},
         "gaps": tuple(gaps), "resyncs": sum(g.resync_line is not None for g in gaps),
         "other_symbol": st["other_symbol"]}
    return _merge(q, _log_quality(reader.errors, reader.snap_errors))


def _is_binance_http(p):
    if ".http." in p.name:
        return True
    return _head(p, 1).startswith(b"http")


def _coinbase_source(paths, opts):
    from ofi_fast.feeds import CoinbaseReader
    if len(paths) != 1:
        raise InputError("Coinbase input is one capture file")
    sym = opts.get("symbol")
    if sym is not None:
        _check_symbol(paths[0], sym, _coinbase_symbols(paths[0]), "product")
    dclock = _DeltaClock(opts["clock"])
    reader = CoinbaseReader(paths[0], product=sym, chunk_rows=opts["chunk_size"],
                            on_error=opts["on_error"], time_order=dclock.clock)

    def chunks():
        for c in reader:
            yield _deltas_chunk(c.depth, dclock(c.depth), c.trades, dclock.clock)

    def collect():
        st = getattr(reader, "stats", None)
        if st is None:
            return {}
        return _merge({"messages_read": st["snapshots"] + st["l2update"] + st["before_snapshot"],
                       "messages_applied": st["snapshots"] + st["l2update"],
                       "dropped": {"before_snapshot": st["before_snapshot"]},
                       "other_symbol": st["other_product"]}, _log_quality(reader.errors))

    src = Source(str(paths[0]), chunks, "deltas", fmt="coinbase", tick_size=opts["tick_size"],
                 note="Coinbase level2 rebuilt by ofi_fast.BookOFI; matches as trades",
                 symbol=sym, symbols=lambda: _coinbase_symbols(paths[0]), clock=dclock.clock,
                 collect=collect)
    src._symbol_of = lambda: reader.product
    return src


def _coinbase_symbols(path) -> set[str]:
    return _scan_symbols(path, rb'"type":\s*"(?:snapshot|l2update|match)"[^\n]*?"product_id":'
                         rb'\s*"([^"]+)"') | _scan_symbols(
        path, rb'"product_id":\s*"([^"]+)"[^\n]*?"type":\s*"(?:snapshot|l2update|match)"')


def _kraken_source(paths, opts):
    from ofi_fast.feeds import KrakenBookReader
    if len(paths) != 1:
        raise InputError("Kraken input is one book capture file")
    sym = opts.get("symbol")
    if sym is not None:
        _check_symbol(paths[0], sym, _kraken_symbols(paths[0]), "pair")
    dclock = _DeltaClock(opts["clock"])
    reader = KrakenBookReader(paths[0], pair=sym, chunk_rows=opts["chunk_size"],
                              on_gap=opts["on_gap"], on_error=opts["on_error"],
                              time_order=dclock.clock)

    def chunks():
        for d in reader:
            yield _deltas_chunk(d, dclock(d))

    def collect():
        st = getattr(reader, "stats", None)
        if st is None:
            return {}
        gaps = tuple(Gap(path=reader.path, line=no, detail=detail, ts=0,
                         rows_invalid=1) for no, detail in st["gaps"])
        return _merge({"messages_read": st["snapshots"] + st["updates"] + st["dropped_gap"]
                       + st["before_snapshot"],
                       "messages_applied": st["snapshots"] + st["updates"],
                       "dropped": {"checksum": len(st["gaps"]),
                                   "gap": st["dropped_gap"] - len(st["gaps"]),
                                   "before_snapshot": st["before_snapshot"]},
                       "gaps": gaps, "other_symbol": st["other_pair"]},
                      _log_quality(reader.errors))

    src = Source(str(paths[0]), chunks, "deltas", fmt="kraken", tick_size=opts["tick_size"],
                 note="Kraken book (checksums verified) rebuilt by ofi_fast.BookOFI; no trades",
                 symbol=sym, symbols=lambda: _kraken_symbols(paths[0]), clock=dclock.clock,
                 collect=collect)
    src._symbol_of = lambda: reader.pair
    return src


def _kraken_symbols(path) -> set[str]:
    return _scan_symbols(path, rb'"book-\d+",\s*"([^"]+)"\]')


def _take(c, m):
    """The rows of chunk ``c`` where mask ``m`` holds (events only; no trades)."""
    if c.kind == "quotes":
        return Chunk("quotes", c.ts[m], bid_px=c.bid_px[m], bid_sz=c.bid_sz[m],
                     ask_px=c.ask_px[m], ask_sz=c.ask_sz[m],
                     depth=None if c.depth is None else tuple(a[m] for a in c.depth))
    return Chunk("deltas", c.ts[m], side=c.side[m], price=c.price[m], size=c.size[m],
                 flags=c.flags[m])


def _sequential(book_chunks, trade_chunks):
    """Merge a book (or quotes) stream and a trade stream of two files by time, one chunk of
    each in memory: each emitted chunk holds the events and the trades up to the same time
    (events before trades at equal times)."""
    def chunks():
        books, trades = book_chunks(), trade_chunks()
        ev = tr = None
        ev_done = tr_done = False
        while True:
            if ev is None and not ev_done:
                ev = next(books, None)
                ev_done = ev is None
            if tr is None and not tr_done:
                tr = next(trades, None)
                tr_done = tr is None
            if ev is None and tr is None:
                return
            big = np.iinfo(np.int64).max
            t_ev = int(ev.ts[-1]) if ev is not None and len(ev) else (big if ev_done else -1)
            t_tr = (int(tr.trade_ts[-1]) if tr is not None and tr.trade_ts.shape[0]
                    else (big if tr_done else -1))
            cut = min(t_ev, t_tr)
            if ev is not None:
                m = ev.ts <= cut
                out = _take(ev, m)
                ev = _take(ev, ~m) if (~m).any() else None
            else:
                out = Chunk(None)
            if tr is not None:
                m = tr.trade_ts <= cut
                out.trade_ts, out.trade_price = tr.trade_ts[m], tr.trade_price[m]
                out.trade_size, out.trade_side = tr.trade_size[m], tr.trade_side[m]
                if (~m).any():
                    k = ~m
                    tr = Chunk(None, trade_ts=tr.trade_ts[k], trade_price=tr.trade_price[k],
                               trade_size=tr.trade_size[k], trade_side=tr.trade_side[k])
                else:
                    tr = None
            if len(out) or out.trade_ts.shape[0]:
                yield out
    return chunks


def _trades_only(reader, clock):
    def chunks():
        for t in reader:
            tts, _ = _clock_of(t.ts_exchange, t.ts_local, clock, "trade ts")
            yield Chunk(None, trade_ts=tts, trade_price=t.price, trade_size=t.size,
                        trade_side=t.side)
    return chunks


def _tardis_source(paths, opts):
    """Tardis CSV: one ``incremental_book_L2`` file and/or one ``trades`` file."""
    from ofi_fast.feeds import TardisReader
    readers = {}
    sym = opts.get("symbol")
    for p in paths:
        r = TardisReader(p, chunk_rows=opts["chunk_size"], on_error=opts["on_error"],
                         symbol=sym, prefetch=opts["prefetch"],
                         time_order=_DeltaClock(opts["clock"]).clock)
        if r.kind in readers or r.kind == "book_snapshot":
            raise InputError(f"{p}: give one Tardis incremental_book_L2 file and/or one trades "
                           f"file (this one is {r.kind})")
        readers[r.kind] = (p, r)
    dclock = _DeltaClock(opts["clock"])
    if "incremental_book_L2" not in readers:
        p, r = readers["trades"]
        raise InputError(f"{p}: a Tardis trades file needs its incremental_book_L2 file for OFI")
    p, book = readers["incremental_book_L2"]

    def book_chunks():
        for d in book:
            yield _deltas_chunk(d, dclock(d))

    chunks = book_chunks
    if "trades" in readers:
        chunks = _sequential(book_chunks, lambda: _trades_only(readers["trades"][1],
                                                                dclock.clock)())
    found = _tardis_symbols([q for q, _ in readers.values()])
    _check_symbol(p, sym, found, "symbol")
    if sym is None and len(found) > 1:
        raise InputError(f"{p}: the Tardis files hold several symbols "
                         f"({', '.join(sorted(found))}); choose one with --symbol")

    def collect():
        st = getattr(book, "stats", None) or {}
        before = st.get("dropped_before_snapshot", 0)
        other = sum((getattr(r, "stats", None) or {}).get("other_symbol", 0)
                    for _, r in readers.values())
        return _merge({"dropped": {"before_snapshot": before}, "other_symbol": other},
                      _log_quality(*(r.errors for _, r in readers.values())))

    return Source(str(p), chunks, "deltas", fmt="tardis", tick_size=opts["tick_size"],
                  note="Tardis incremental_book_L2 rebuilt by ofi_fast.BookOFI"
                  + ("; trades file with aggressor sides" if "trades" in readers else ""),
                  symbol=sym or (next(iter(found)) if found else None),
                  symbols=lambda: found, clock=dclock.clock, unit="rows", collect=collect)


def _tardis_symbols(paths) -> set[str]:
    """Every ``symbol`` of the Tardis files (the second field of each data row; grouped files
    such as ``PERPETUALS`` hold many), scanned as for Binance (first GiB of each file)."""
    out: set[str] = set()
    for p in paths:
        out |= _scan_symbols(p, rb"\n[^,\n]*,([^,\n]+),")
    return out


def _bitstamp_source(paths, opts):
    """Bitstamp L3 order file (aggregated to L2 deltas) and optionally its trades file."""
    from ofi_fast.feeds import BitstampL3Reader, BitstampTradesReader
    orders = trades = None
    for p in paths:
        h = _head(p, 1)
        if h.startswith(b"trade_id"):
            trades = p
        else:
            orders = p
    if orders is None:
        raise InputError(f"{trades}: a Bitstamp trades file needs its orders file for OFI")
    # exchange clock by default: the file's synthetic opening snapshot carries a later local
    # time than the live rows that follow it
    dclock = _DeltaClock(opts["clock"], "exchange")
    reader = BitstampL3Reader(orders, chunk_rows=opts["chunk_size"], on_error=opts["on_error"],
                              time_order=dclock.clock)
    tr = (BitstampTradesReader(trades, on_error=opts["on_error"], time_order=dclock.clock)
          if trades is not None else None)

    def book_chunks():
        for d in reader:
            yield _deltas_chunk(d, dclock(d))

    chunks = book_chunks
    if tr is not None:
        chunks = _sequential(book_chunks, lambda: _trades_only([tr.read()], dclock.clock)())

    def collect():
        st = getattr(reader, "stats", None) or {}
        stale = st.get("stale_removed", 0) - st.get("stale_restored", 0)
        return _merge({"stale_orders": stale},
                      _log_quality(reader.errors, tr.errors if tr else None))

    return Source(str(orders), chunks, "deltas", fmt="bitstamp", tick_size=opts["tick_size"],
                  note="Bitstamp L3 orders aggregated to L2, rebuilt by ofi_fast.BookOFI"
                  + ("; trades with aggressor sides" if trades is not None else ""),
                  symbol=opts.get("symbol") or _bitstamp_pair(orders), clock=dclock.clock,
                  unit="rows", collect=collect)


def _bitstamp_pair(path) -> str | None:
    """The pair named by a ``meta.json`` beside the file (ob-analytics captures), else None."""
    meta = Path(path).with_name("meta.json")
    try:
        import json
        pair = json.loads(meta.read_text()).get("pair")
    except (OSError, ValueError, AttributeError):
        return None
    return pair if isinstance(pair, str) else None


# ---- generic CSV -----------------------------------------------------------------------------

#: Column names recognised in a generic CSV header (lower case), per package field.
CSV_ALIASES = {
    "ts": ("ts", "timestamp", "time", "ts_ns", "datetime", "date_time", "ts_event",
           "exchange_timestamp", "transact_time"),
    "bid_px": ("bid_px", "bid", "bid_price", "best_bid", "bidprice", "bid_px_00", "bp"),
    "bid_sz": ("bid_sz", "bid_size", "bid_qty", "bidsize", "bid_amount", "bid_volume",
               "bid_sz_00", "bs"),
    "ask_px": ("ask_px", "ask", "ask_price", "best_ask", "askprice", "offer", "ask_px_00", "ap"),
    "ask_sz": ("ask_sz", "ask_size", "ask_qty", "asksize", "ask_amount", "ask_volume",
               "ask_sz_00", "az"),
    "price": ("price", "px", "trade_price", "last_price"),
    "size": ("size", "qty", "quantity", "amount", "volume", "sz", "trade_size"),
    "side": ("side", "aggressor", "aggressor_side", "taker_side", "direction"),
}


def _is_parquet(p):
    return Path(p).suffix.lower() in (".parquet", ".pq")


def _parquet_first(p):
    """Column names and first row of a Parquet file (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{p}: reading Parquet needs pyarrow (pip install 'ofi_fast[parquet]')"
                       ) from None
    f = pq.ParquetFile(str(p))
    names = f.schema_arrow.names
    first = next(f.iter_batches(batch_size=1), None)
    row = [first.column(i)[0].as_py() if first is not None and len(first) else None
           for i in range(len(names))]
    return names, row


def _csv_header(p):
    if _is_parquet(p):
        return _parquet_first(p)[0]
    line = _head(p, 1).decode("utf-8", "replace").strip()
    return [c.strip() for c in line.split(",")]


def _csv_columns(p, header, overrides):
    """{field: column} for a generic CSV: --columns overrides, else the aliases above."""
    low = {h.lower(): h for h in header}
    cols = {}
    for f, names in CSV_ALIASES.items():
        for n in names:
            if n in low:
                cols[f] = low[n]
                break
    cols.update(overrides)
    for f, c in overrides.items():
        if c not in header:
            raise InputError(f"{p}: --columns {f}={c}: no column {c!r} in the header "
                           f"{','.join(header)}")
    quotes = all(f in cols for f in ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz"))
    trades = all(f in cols for f in ("ts", "price", "size"))
    if quotes:
        return "quotes", {f: cols[f] for f in ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")}
    if trades:
        return "trades", {f: cols[f] for f in ("ts", "price", "size", "side") if f in cols}
    raise InputError(f"{p}: a CSV of quotes needs columns ts, bid_px, bid_sz, ask_px, ask_sz and "
                   f"one of trades ts, price, size[, side]; found {','.join(header)} "
                   f"(name them with --columns field=column,...)")


def _ts_unit(p, col, header, unit):
    """The timestamp unit of a CSV: decimal numbers are seconds; integers are in --ts-unit,
    or (auto) in the unit the reader finds from the first row's magnitude and then holds every
    row to (``generic._Reader``, ``ts_unit="auto"``); ISO-8601 strings need no unit."""
    if _is_parquet(p):
        v = _parquet_first(p)[1][header.index(col)]
        if v is None or not isinstance(v, (int, float, str)):
            return "ns"                   # a timestamp column: the reader casts it to ns
        v = str(v)
    else:
        line = _head(p, 2).decode("utf-8", "replace").splitlines()
        if len(line) < 2:
            return "ns" if unit == "auto" else unit
        v = line[1].split(",")[header.index(col)].strip()
    try:
        float(v)
    except ValueError:
        return "ns"                       # ISO-8601 strings: the unit is not used
    if "." in v:
        return "s"                        # decimal seconds
    return unit


def _csv_source(paths, opts):
    """Generic CSV (gzip or plain) or Parquet: one quotes file and/or one trades file, column
    names recognised from the header (``CSV_ALIASES``) or given with ``--columns``."""
    from ofi_fast.feeds import QuotesReader, TradesReader
    files = {}
    for p in paths:
        header = _csv_header(p)
        kind, cols = _csv_columns(p, header, opts["columns"])
        if kind in files:
            raise InputError(f"{p}: give one quotes CSV and/or one trades CSV (two {kind} files)")
        unit = _ts_unit(p, cols["ts"], header, opts["ts_unit"])
        cls = QuotesReader if kind == "quotes" else TradesReader
        files[kind] = (p, cls(p, cols, ts_unit=unit, chunk_rows=opts["chunk_size"],
                              on_error=opts["on_error"]))
    if "quotes" not in files:
        raise InputError(f"{files['trades'][0]}: a trades CSV needs a quotes CSV for OFI "
                       "(give both)")
    p, q = files["quotes"]

    def quote_chunks():
        for c in q:
            yield Chunk("quotes", c.ts_exchange, bid_px=c.bid_px, bid_sz=c.bid_sz,
                        ask_px=c.ask_px, ask_sz=c.ask_sz)

    chunks = quote_chunks
    if "trades" in files:
        chunks = _sequential(quote_chunks, _trades_only(files["trades"][1], "exchange"))
    return Source(str(p), chunks, "quotes", fmt="csv",
                  note="CSV best quotes" + ("; CSV trades" if "trades" in files else ""),
                  unit="rows", collect=lambda: _log_quality(*(r.errors for _, r in
                                                              files.values())))


# ---- formats and detection -------------------------------------------------------------------

#: Input formats: name -> source builder ``(paths, opts) -> Source``.
FORMATS = {
    "lobster": _lobster_source,
    "binance": _binance_source,
    "tardis": _tardis_source,
    "coinbase": _coinbase_source,
    "kraken": _kraken_source,
    "bitstamp": _bitstamp_source,
    "csv": _csv_source,
}


def _head(p, nlines=40):
    """The first ``nlines`` lines of a (possibly gzip) file, as bytes ('' for a zip)."""
    import gzip
    p = Path(p)
    with builtins.open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == b"PK":
        return b""
    opener = gzip.open if magic == b"\x1f\x8b" else builtins.open
    out = []
    try:
        with opener(p, "rb") as fh:
            for _ in range(nlines):
                line = fh.readline(1 << 16)
                if not line:
                    break
                out.append(line)
    except (OSError, EOFError) as exc:
        raise InputError(f"{p}: cannot read ({exc})") from None
    return b"".join(out)


def detect_format(paths):
    """The format of FILE arguments: from names (LOBSTER, cryptofeed captures) and, failing
    that, the first lines of the first file (headers, JSON message types)."""
    for p in paths:
        n = p.name
        if p.suffix.lower() == ".zip" or "message" in n or "orderbook" in n:
            return "lobster"
    if _is_parquet(paths[0]):
        return "csv"
    name = paths[0].name.upper()
    for fmt in ("BINANCE", "COINBASE", "KRAKEN"):
        if name.startswith(fmt + "."):
            return fmt.lower()
    head = _head(paths[0])
    first = head.split(b"\n", 1)[0].strip()
    if first.startswith(b"exchange,symbol,timestamp,local_timestamp"):
        return "tardis"
    if first.startswith((b"id,timestamp,exchange_timestamp,price,volume,action",
                         b"trade_id,timestamp,exchange_timestamp,price,amount")):
        return "bitstamp"
    if b"depthUpdate" in head or b"lastUpdateId" in head or b"bookTicker" in head \
            or b'"e":"trade"' in head:
        return "binance"
    if b'"l2update"' in head or (b'"type":"snapshot"' in head and b"product_id" in head):
        return "coinbase"
    if b'"book-' in head:
        return "kraken"
    fields = first.split(b",")
    if len(fields) == 6 and all(_is_number(f) for f in fields):
        return "lobster"
    if len(fields) >= 3 and not any(_is_number(f) for f in fields):
        low = {f.strip().lower().decode("utf-8", "replace") for f in fields}
        if low & set(CSV_ALIASES["ts"]):
            return "csv"
    raise InputError(f"{paths[0]}: unknown format (known: {', '.join(FORMATS)}; use --format)")


def _is_number(s):
    try:
        float(s)
    except ValueError:
        return False
    return True


def _parse_columns(spec):
    out = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        f, sep, c = part.partition("=")
        f = f.strip()
        if not sep or f not in CSV_ALIASES:
            raise InputError(f"--columns: expected field=column with field one of "
                           f"{', '.join(CSV_ALIASES)}, got {part!r}")
        out[f] = c.strip()
    return out


def open(inputs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
         format: str = "auto", *, symbol: str | None = None, clock: str = "auto",
         tick_size: float | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
         on_gap: str = "resync", on_error: str = "raise", columns: str | dict | None = None,
         ts_unit: str = "auto", events: int = 1_000_000, seed: int = 0,
         levels: int = 5, prefetch: bool = True) -> Source:
    """The input as a :class:`Source`.

    ``inputs``: a path or a list of paths (a LOBSTER zip or message + orderbook pair, a Binance
    recording (+ cryptofeed's ``*.http.*`` snapshots), Coinbase / Kraken captures, Tardis book
    (+ trades) CSV, Bitstamp orders (+ trades), quotes (+ trades) CSV or Parquet); None or
    empty: the simulator (``events``, ``seed``, ``levels``). ``format``: one of
    :data:`FORMATS` or "auto" (:func:`detect_format`). ``symbol``: the instrument of a
    multi-symbol capture (Binance symbol, Coinbase product, Kraken pair, Tardis symbol;
    default the first found; an absent one is an :class:`InputError` listing those present).
    ``clock``: "local" (recorder's receive time), "exchange", or "auto" (local for Binance,
    Coinbase, Kraken, Tardis; exchange for Bitstamp). ``tick_size``: the book's price grid
    (default: known or inferred). ``chunk_rows``: rows per chunk (bounds memory).
    ``on_gap``: "resync" (record the gap in ``quality``, drop until the next snapshot) or
    "raise" (:class:`~ofi_fast.errors.SequenceGapError` at the first gap, naming file:line and
    ids). ``on_error``: "raise" or "skip" malformed lines (counted in ``quality``).
    ``columns``: CSV ``{field: column}`` or "field=col,..."; ``ts_unit``: CSV integer time unit.
    ``prefetch``: LOBSTER and Tardis files are read one block ahead by a background thread
    (inflating a zip or gzip member on a second core); False reads in the calling thread only.
    """
    if on_gap not in ("resync", "raise"):
        raise InputError(f"on_gap must be 'resync' or 'raise', not {on_gap!r}")
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if clock not in ("auto", "local", "exchange"):
        raise InputError(f"clock must be 'auto', 'local' or 'exchange', not {clock!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) \
            or chunk_rows <= 0:
        raise InputError(f"chunk_rows must be a positive integer, not {chunk_rows!r}")
    if tick_size is not None and not (float(tick_size) > 0 and np.isfinite(tick_size)):
        raise InputError(f"tick_size must be positive and finite, not {tick_size!r}")
    cols = columns if isinstance(columns, dict) else _parse_columns(columns)
    if inputs is None or (not isinstance(inputs, (str, os.PathLike)) and len(inputs) == 0):
        return _simulator_source(events, seed, levels, int(chunk_rows))
    files = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file")
        if p.is_dir():
            raise InputError(f"{p}: is a directory, not a file")
    opts = {"chunk_size": int(chunk_rows), "clock": clock, "tick_size": tick_size,
            "symbol": symbol, "columns": cols, "ts_unit": ts_unit, "on_gap": on_gap,
            "on_error": on_error, "prefetch": bool(prefetch)}
    fmt = detect_format(paths) if format == "auto" else format
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if symbol is not None and fmt not in _SYMBOL_FORMATS:
        raise InputError(f"{paths[0]}: a {fmt} input holds one instrument; --symbol applies to "
                         f"{', '.join(_SYMBOL_FORMATS)}")
    try:
        return FORMATS[fmt](paths, opts)
    except OFIError:
        raise
    except (ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(_msg(exc)) from None


#: Formats whose files can hold several instruments (``symbol=`` chooses one).
_SYMBOL_FORMATS = ("binance", "coinbase", "kraken", "tardis")


def infer_tick_size(price):
    """A tick size on whose grid every price lies: ``10**-(d + 2)`` with d the most decimals
    any price of the sample needs (at most 10); the two spare digits let later prices be finer
    than the sample's. The grid only serves the book's integer keys: OFI does not depend on it."""
    p = np.unique(np.asarray(price, np.float64))
    p = p[np.isfinite(p) & (p > 0)][:100_000]
    if p.size == 0:
        return 1e-8
    for d in range(0, 11):
        x = p * 10.0 ** d
        if np.all(np.abs(x - np.rint(x)) <= 1e-6 * np.maximum(1.0, x * 1e-9)):
            break
    return 10.0 ** -min(d + 2, 12)


