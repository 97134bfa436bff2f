"""The ``ofi-fast`` command (also ``python -m ofi_fast``).

Sub-commands:

- ``ofi-fast analyze [FILE ...]``: best-level OFI (Cont, Kukanov & Stoikov 2014, eq. 10) summed
  into clock bars (from best quotes through :class:`ofi_fast.OFI`, or from L2 deltas through
  :class:`ofi_fast.BookOFI`), the contemporaneous impact regression
  ``dmid_k = alpha + beta * OFI_k + eps`` (:func:`ofi_fast.fit_impact`, plain and Newey-West
  t), a walk-forward out-of-sample evaluation of that model and a next-bar forecast (no
  look-ahead), trade flow (:class:`ofi_fast.TradeFlow`) and VPIN (:func:`ofi_fast.vpin` on the
  bars); prints a summary table, writes the bar table (``--out``, CSV or Parquet) and a figure
  (``--plot``). With no FILE it runs on the embedded simulator (:mod:`ofi_fast.simulate`).
- ``ofi-fast stream [FILE ...]``: replays the input in time order through the streaming
  objects (``OFI.update`` per quote update or ``BookOFI`` per exchange message, and
  ``TradeFlow.update`` per trade), printing one line per bar, then per-call latency
  percentiles.
- ``ofi-fast bench``: latency of the streaming classes (ns per call, p50/p99/p99.9) beside the
  empty-call floor, and batch throughput.

Input goes through the :mod:`ofi_fast.feeds` readers chunk by chunk (``FORMATS``; detection by
:func:`detect_format`, ``--format`` to override), so memory is bounded by ``--chunk-size``.
Errors in the input or the options print one line ``ofi-fast: error: ...`` to stderr and exit
with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

NS_PER_S = 1_000_000_000


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Input: open_source turns FILE arguments (or none) into a stream of Chunks, through the
# ofi_fast.feeds readers (chunked: memory is bounded by --chunk-size rows, not the file size).
# --------------------------------------------------------------------------------------------

class Chunk:
    """Consecutive input rows of one of two kinds, plus the trades among them.

    - ``kind == "quotes"``: best quotes after each event, ``ts`` int64 ns, ``bid_px``/``ask_px``
      float64 (NaN for an empty side), ``bid_sz``/``ask_sz`` float64 (0 for an empty side);
    - ``kind == "deltas"``: L2 price-level deltas (``ofi_fast.feeds.BookDeltas`` semantics),
      ``ts`` int64 ns, ``side`` int8, ``price``, ``size`` (new absolute size) float64, ``flags``
      uint8 (FLAG_SNAPSHOT / FLAG_CLEAR / FLAG_BATCH_END);
    - ``kind is None``: trades only.
    Trades: ``trade_ts`` int64 ns, ``trade_price``/``trade_size`` float64, ``trade_side`` int8
    (aggressor: +1 buy, -1 sell, 0 unknown).
    """

    __slots__ = ("kind", "ts", "bid_px", "bid_sz", "ask_px", "ask_sz", "side", "price", "size",
                 "flags", "trade_ts", "trade_price", "trade_size", "trade_side")

    def __init__(self, kind=None, ts=None, *, bid_px=None, bid_sz=None, ask_px=None, ask_sz=None,
                 side=None, price=None, size=None, flags=None, trade_ts=None, trade_price=None,
                 trade_size=None, trade_side=None):
        self.kind = kind
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
    """A named stream of :class:`Chunk`.

    ``n_events`` when known in advance (for progress); ``kind`` the event kind ("quotes" or
    "deltas"); ``tick_size`` for deltas when known; ``note`` a short description of how the
    input was read (printed in the summary).
    """

    def __init__(self, name, n_events, chunks, kind="quotes", tick_size=None, note=""):
        self.name = name
        self.n_events = n_events
        self._chunks = chunks
        self.kind = kind
        self.tick_size = tick_size
        self.note = note

    def chunks(self):
        try:
            yield from self._chunks()
        except (ValueError, KeyError, zipfile.BadZipFile) as exc:
            from ofi_fast.errors import OFIError
            if isinstance(exc, OFIError):
                raise
            raise CliError(f"{_msg(exc)}") from None


def _msg(exc):
    s = str(exc)
    return s.strip("'\"") if isinstance(exc, KeyError) else s


def _simulator_source(events, seed, levels, chunk_size):
    from ofi_fast.simulate import simulate_chunks

    def chunks():
        for r in simulate_chunks(events, chunk_size=chunk_size, seed=seed, levels=levels):
            bp, bs, ap, az = r.best()
            yield Chunk("quotes", r.ts, bid_px=bp, bid_sz=bs, ask_px=ap, ask_sz=az,
                        trade_ts=r.trade_ts, trade_price=r.trade_price,
                        trade_size=r.trade_size, trade_side=r.trade_side)

    return Source(f"simulator (seed {seed}, {levels} level{'s' if levels != 1 else ''})",
                  events, chunks, note="best quotes after each simulated event")


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
        raise CliError("give one LOBSTER zip, or one message file and one orderbook file")
    if len(paths) > 2:
        raise CliError("LOBSTER input is one zip, or a message file and an orderbook file")
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        z = paths[0]
        try:
            with zipfile.ZipFile(z) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise CliError(f"{z}: not a zip file") from None
        msg = [n for n in names if _NAME_RE.search(n) and "_message_" in n]
        if len(msg) != 1 or msg[0].replace("_message_", "_orderbook_") not in names:
            raise CliError(f"{z}: no LOBSTER message/orderbook CSV pair inside")
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
                raise CliError(f"{p}: a LOBSTER message file needs its orderbook file "
                               "(give both)")
            if not other.exists():
                raise CliError(f"{p}: its LOBSTER pair {other} does not exist (give both files)")
        msg = [p for p in paths if "message" in p.name]
        book = [p for p in paths if "orderbook" in p.name]
        if len(msg) != 1 or len(book) != 1:
            msg, book = [paths[0]], [paths[1]]      # unnamed pair: message first, as documented
        msg_path, book_path, label = msg[0], book[0], str(msg[0])
        _check_lobster_pair(msg_path, book_path)
    date = None if _NAME_RE.search(str(msg_path if book_path else label)) else "1970-01-01"
    kw = {"date": date, "tz": None} if date else {}
    try:
        reader = LobsterReader(msg_path, book_path, chunk_rows=opts["chunk_size"], **kw)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if reader.ob_src is None:
        raise CliError(f"{label}: no LOBSTER order-book file found for it")

    def chunks():
        for c in reader:
            if c.bid_px.shape[1] == 0:
                raise CliError(f"{label}: the order-book file has no columns")
            t = lobster_trades(c)
            yield Chunk("quotes", c.ts, bid_px=np.ascontiguousarray(c.bid_px[:, 0]),
                        bid_sz=np.ascontiguousarray(c.bid_sz[:, 0]),
                        ask_px=np.ascontiguousarray(c.ask_px[:, 0]),
                        ask_sz=np.ascontiguousarray(c.ask_sz[:, 0]),
                        trade_ts=t.ts, trade_price=t.price, trade_size=t.size,
                        trade_side=t.side)

    return Source(label, None, chunks,
                  note="LOBSTER messages; best quotes from the order-book file")


def _check_lobster_pair(msg_path, book_path):
    """Fail early (one line) on an empty file or an order book that is not the messages' one."""
    from ofi_fast.feeds._common import open_binary
    with open_binary(str(msg_path)) as fm, open_binary(str(book_path)) as fb:
        m, b = fm.readline(), fb.readline()
    if not m.strip():
        raise CliError(f"{msg_path}: empty file")
    if not b.strip():
        raise CliError(f"{book_path}: empty file")
    nb = b.count(b",") + 1
    if m.count(b",") != 5 or nb % 4:
        raise CliError(f"{book_path}: not the LOBSTER orderbook of {msg_path} "
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
        raise CliError(f"{what}[{i}] has no {clock} timestamp (try --clock "
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
                raise CliError(f"{what}[{i}] has no {self.clock} timestamp (try --clock "
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
        raise CliError("Binance input is one recording (plus, for cryptofeed captures, its "
                       "*.http.* snapshot file)")
    main, snaps = paths[0], None
    if len(paths) == 2:
        a, b = paths
        main, snaps = (b, a) if _is_binance_http(a) else (a, b)
    reader = BinanceReader(main, snapshots=snaps, chunk_rows=opts["chunk_size"],
                           on_gap="resync")
    dclock = _DeltaClock(opts["clock"])

    def chunks():
        for c in reader:
            if c.depth.ts_local.shape[0] == 0 and len(c.trades) == 0:
                continue
            yield _deltas_chunk(c.depth, dclock(c.depth), c.trades, dclock.clock)

    return Source(str(main), None, chunks, "deltas", opts["tick_size"],
                  note="Binance diff depth rebuilt by ofi_fast.BookOFI; trades with true sides")


def _is_binance_http(p):
    if ".http." in p.name:
        return True
    return _head(p, 1).startswith(b"http")


def _coinbase_source(paths, opts):
    from ofi_fast.feeds import CoinbaseReader
    if len(paths) != 1:
        raise CliError("Coinbase input is one capture file")
    reader = CoinbaseReader(paths[0], product=opts.get("symbol"), chunk_rows=opts["chunk_size"])
    dclock = _DeltaClock(opts["clock"])

    def chunks():
        for c in reader:
            yield _deltas_chunk(c.depth, dclock(c.depth), c.trades, dclock.clock)

    return Source(str(paths[0]), None, chunks, "deltas", opts["tick_size"],
                  note="Coinbase level2 rebuilt by ofi_fast.BookOFI; matches as trades")


def _kraken_source(paths, opts):
    from ofi_fast.feeds import KrakenBookReader
    if len(paths) != 1:
        raise CliError("Kraken input is one book capture file")
    reader = KrakenBookReader(paths[0], pair=opts.get("symbol"), chunk_rows=opts["chunk_size"],
                              on_gap="resync")
    dclock = _DeltaClock(opts["clock"])

    def chunks():
        for d in reader:
            yield _deltas_chunk(d, dclock(d))

    return Source(str(paths[0]), None, chunks, "deltas", opts["tick_size"],
                  note="Kraken book (checksums verified) rebuilt by ofi_fast.BookOFI; no trades")


def _take(c, m):
    """The rows of chunk ``c`` where mask ``m`` holds (events only; no trades)."""
    if c.kind == "quotes":
        return Chunk("quotes", c.ts[m], bid_px=c.bid_px[m], bid_sz=c.bid_sz[m],
                     ask_px=c.ask_px[m], ask_sz=c.ask_sz[m])
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
    for p in paths:
        r = TardisReader(p, chunk_rows=opts["chunk_size"])
        if r.kind in readers or r.kind == "book_snapshot":
            raise CliError(f"{p}: give one Tardis incremental_book_L2 file and/or one trades "
                           f"file (this one is {r.kind})")
        readers[r.kind] = (p, r)
    dclock = _DeltaClock(opts["clock"])
    if "incremental_book_L2" not in readers:
        p, r = readers["trades"]
        raise CliError(f"{p}: a Tardis trades file needs its incremental_book_L2 file for OFI")
    p, book = readers["incremental_book_L2"]

    def book_chunks():
        for d in book:
            yield _deltas_chunk(d, dclock(d))

    chunks = book_chunks
    if "trades" in readers:
        chunks = _sequential(book_chunks, lambda: _trades_only(readers["trades"][1],
                                                                dclock.clock)())
    return Source(str(p), None, chunks, "deltas", opts["tick_size"],
                  note="Tardis incremental_book_L2 rebuilt by ofi_fast.BookOFI"
                  + ("; trades file with aggressor sides" if "trades" in readers else ""))


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
        raise CliError(f"{trades}: a Bitstamp trades file needs its orders file for OFI")
    reader = BitstampL3Reader(orders, chunk_rows=opts["chunk_size"])
    # exchange clock by default: the file's synthetic opening snapshot carries a later local
    # time than the live rows that follow it
    dclock = _DeltaClock(opts["clock"], "exchange")

    def book_chunks():
        for d in reader:
            yield _deltas_chunk(d, dclock(d))

    chunks = book_chunks
    if trades is not None:
        tr = BitstampTradesReader(trades)
        chunks = _sequential(book_chunks, lambda: _trades_only([tr.read()], dclock.clock)())
    return Source(str(orders), None, chunks, "deltas", opts["tick_size"],
                  note="Bitstamp L3 orders aggregated to L2, rebuilt by ofi_fast.BookOFI"
                  + ("; trades with aggressor sides" if trades is not None else ""))


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
        raise CliError(f"{p}: reading Parquet needs pyarrow (pip install 'ofi_fast[parquet]')"
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
            raise CliError(f"{p}: --columns {f}={c}: no column {c!r} in the header "
                           f"{','.join(header)}")
    quotes = all(f in cols for f in ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz"))
    trades = all(f in cols for f in ("ts", "price", "size"))
    if quotes:
        return "quotes", {f: cols[f] for f in ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")}
    if trades:
        return "trades", {f: cols[f] for f in ("ts", "price", "size", "side") if f in cols}
    raise CliError(f"{p}: a CSV of quotes needs columns ts, bid_px, bid_sz, ask_px, ask_sz and "
                   f"one of trades ts, price, size[, side]; found {','.join(header)} "
                   f"(name them with --columns field=column,...)")


def _ts_unit(p, col, header, unit):
    """The timestamp unit of a CSV: decimal numbers are seconds; integers are in --ts-unit,
    or (auto) the unit their magnitude suggests for epoch times (>= 1e17 ns, >= 1e14 us,
    >= 1e11 ms, else s); ISO-8601 strings need no unit."""
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
        x = abs(float(v))
    except ValueError:
        return "ns"                       # ISO-8601 strings: the unit is not used
    if "." in v:
        return "s"                        # decimal seconds
    if unit != "auto":
        return unit
    return "ns" if x >= 1e17 else "us" if x >= 1e14 else "ms" if x >= 1e11 else "s"


def _csv_source(paths, opts):
    """Generic CSV (gzip or plain) or Parquet: one quotes file and/or one trades file, column
    names recognised from the header (``CSV_ALIASES``) or given with ``--columns``."""
    from ofi_fast.feeds import QuotesReader, TradesReader
    files = {}
    for p in paths:
        header = _csv_header(p)
        kind, cols = _csv_columns(p, header, opts["columns"])
        if kind in files:
            raise CliError(f"{p}: give one quotes CSV and/or one trades CSV (two {kind} files)")
        unit = _ts_unit(p, cols["ts"], header, opts["ts_unit"])
        cls = QuotesReader if kind == "quotes" else TradesReader
        files[kind] = (p, cls(p, cols, ts_unit=unit, chunk_rows=opts["chunk_size"]))
    if "quotes" not in files:
        raise CliError(f"{files['trades'][0]}: a trades CSV needs a quotes CSV for OFI "
                       "(give both)")
    p, q = files["quotes"]

    def quote_chunks():
        for c in q:
            yield Chunk("quotes", c.ts_exchange, bid_px=c.bid_px, bid_sz=c.bid_sz,
                        ask_px=c.ask_px, ask_sz=c.ask_sz)

    chunks = quote_chunks
    if "trades" in files:
        chunks = _sequential(quote_chunks, _trades_only(files["trades"][1], "exchange"))
    return Source(str(p), None, chunks, "quotes",
                  note="CSV best quotes" + ("; CSV trades" if "trades" in files else ""))


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
    with open(p, "rb") as fh:
        magic = fh.read(2)
    if magic == b"PK":
        return b""
    opener = gzip.open if magic == b"\x1f\x8b" else open
    out = []
    try:
        with opener(p, "rb") as fh:
            for _ in range(nlines):
                line = fh.readline(1 << 16)
                if not line:
                    break
                out.append(line)
    except (OSError, EOFError) as exc:
        raise CliError(f"{p}: cannot read ({exc})") from None
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
    raise CliError(f"{paths[0]}: unknown format (known: {', '.join(FORMATS)}; use --format)")


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
            raise CliError(f"--columns: expected field=column with field one of "
                           f"{', '.join(CSV_ALIASES)}, got {part!r}")
        out[f] = c.strip()
    return out


def open_source(files, fmt="auto", *, events=1_000_000, seed=0, levels=5,
                chunk_size=1_000_000, clock="auto", tick_size=None, symbol=None,
                columns=None, ts_unit="auto"):
    """The input as a :class:`Source`: the simulator when ``files`` is empty, else a feed read
    by the matching :mod:`ofi_fast.feeds` reader (``fmt="auto"``: :func:`detect_format`)."""
    cols = _parse_columns(columns)
    if not files:
        return _simulator_source(events, seed, levels, chunk_size)
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.exists():
            raise CliError(f"{p}: no such file")
        if p.is_dir():
            raise CliError(f"{p}: is a directory, not a file")
    opts = {"chunk_size": chunk_size, "clock": clock, "tick_size": tick_size,
            "symbol": symbol, "columns": cols, "ts_unit": ts_unit}
    if fmt == "auto":
        fmt = detect_format(paths)
    if fmt not in FORMATS:
        raise CliError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    try:
        return FORMATS[fmt](paths, opts)
    except (ValueError, KeyError) as exc:
        from ofi_fast.errors import OFIError
        if isinstance(exc, OFIError):
            raise
        raise CliError(_msg(exc)) from None


def _progress(source, enabled):
    """Wrap the chunk iterator in a tqdm bar when tqdm is installed and stderr is a TTY."""
    it = source.chunks()
    if not enabled or not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it

    def gen():
        with tqdm(total=source.n_events, unit="ev", unit_scale=True, file=sys.stderr,
                  leave=False) as bar:
            for c in it:
                yield c
                bar.update(len(c))

    return gen()


# --------------------------------------------------------------------------------------------
# Bars: per-chunk library calls (ofi_fast.OFI / BookOFI, TradeFlow, bars) on one clock grid.
# --------------------------------------------------------------------------------------------

_BAR_COLS = ("events", "ofi", "mid_open", "mid_close", "n_trades", "buy_volume", "sell_volume",
             "unknown_volume", "last_price")


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


class BarBuilder:
    """Clock bars ``[k*every, (k+1)*every)`` built chunk by chunk (memory ~ bars, not events).

    Per bar: ``events`` (input rows: quote updates or L2 deltas), ``ofi`` (sum of the best-level
    e_n, Cont, Kukanov & Stoikov 2014 eq. 10, from :class:`ofi_fast.OFI` over best quotes or
    :class:`ofi_fast.BookOFI` over L2 deltas, summed by :func:`ofi_fast.bars`), ``mid_open`` /
    ``mid_close`` (mid after the first / last event of the bar; for L2 deltas after the first /
    last *complete* exchange message, ``FLAG_BATCH_END``), ``n_trades``, ``buy_volume``,
    ``sell_volume`` (signed volume from :class:`ofi_fast.TradeFlow`: the feed's aggressor side,
    side-0 trades signed by ``classify``, e.g. the tick rule; ``unknown_volume`` what stays
    unsigned). The OFI, book and trade-flow streams continue across chunks.
    """

    def __init__(self, every, *, kind="quotes", tick_size=None, classify="tick"):
        import ofi_fast
        self.every = int(every)
        self.kind = kind
        self.tick_size = tick_size
        self.ofi = ofi_fast.OFI() if kind == "quotes" else None
        self.flow = ofi_fast.TradeFlow(classify=classify)
        self._bars = ofi_fast.bars
        self.k0 = None
        self.n = 0
        self.cols = {k: np.zeros(0) for k in _BAR_COLS}
        self.first_mid = math.nan
        self.n_events = 0
        self.n_trades = 0
        self.n_trades_unsided = 0     # trades whose feed gave no aggressor side (side 0)
        self.n_messages = 0           # L2: complete messages (OFI events)
        self.n_snapshots = 0
        self._snap = None             # L2: rows of a snapshot being collected
        self._last_k = None
        self._open_bar = None         # L2: absolute number of the bar whose mid_open is set

    # -- the bar grid ------------------------------------------------------------------------
    def _fill(self, name):
        return np.nan if name.startswith("mid") or name == "last_price" else 0.0

    def _span(self, k_lo, k_hi):
        """Make bars k_lo..k_hi exist (the grid grows at either end); return k0."""
        if self.k0 is None:
            self.k0 = k_lo
        if k_lo < self.k0:
            pad = self.k0 - k_lo
            for name, a in self.cols.items():
                b = np.full(a.shape[0] + pad, self._fill(name))
                b[pad:pad + self.n] = a[:self.n]
                self.cols[name] = b
            self.k0 = k_lo
            self.n += pad
        need = k_hi - self.k0 + 1
        if need > self.n:
            cap = self.cols["ofi"].shape[0]
            if need > cap:
                cap = max(need, 2 * cap, 1024)
                for name, a in self.cols.items():
                    b = np.full(cap, self._fill(name))
                    b[:self.n] = a[:self.n]
                    self.cols[name] = b
            self.n = need
        return self.k0

    def _check_order(self, k_first):
        if self._last_k is not None and k_first < self._last_k:
            from ofi_fast.errors import TimeOrderError
            raise TimeOrderError(f"ts[{self.n_events}] goes backwards in time (chunk order)",
                                 field="ts", index=self.n_events)

    def _add_event_bars(self, ts, e):
        ev = self.every
        b = self._bars(ts, e, every=ev)
        k = b.start // ev
        self._check_order(int(k[0]))
        k0 = self._span(int(k[0]), int(k[-1]))
        s = slice(int(k[0]) - k0, int(k[-1]) - k0 + 1)
        self.cols["events"][s] += b.count
        self.cols["ofi"][s] += b.sum
        self._last_k = int(k[-1])

    # -- input -------------------------------------------------------------------------------
    def add(self, c):
        """Feed one :class:`Chunk`; returns its per-event e_n (empty for trades only)."""
        e = np.zeros(0)
        if len(c):
            e = self._add_quotes(c) if c.kind == "quotes" else self._add_deltas(c)
            self.n_events += len(c)
        if c.trade_ts.shape[0]:
            self._add_trades(c.trade_ts, c.trade_price, c.trade_size, c.trade_side)
        return e

    def _add_quotes(self, c):
        ev = self.every
        e = self.ofi.update_many(c.ts, c.bid_px, c.bid_sz, c.ask_px, c.ask_sz)
        self._add_event_bars(c.ts, e)
        mid = 0.5 * (c.bid_px + c.ask_px)
        ok = np.isfinite(mid)
        if ok.any():
            tsm, mm = c.ts[ok], mid[ok]
            if math.isnan(self.first_mid):
                self.first_mid = float(mm[0])
            m = self._bars(tsm, mm, every=ev)
            j = m.start // ev - self.k0
            has = m.count > 0
            self.cols["mid_close"][j[has]] = m.last[has]
            open_ = self.cols["mid_open"]
            new = has & np.isnan(open_[j])
            open_[j[new]] = m.first[new]
        return e

    def _bookofi(self, price):
        import ofi_fast
        if self.ofi is None:
            if self.tick_size is None:
                self.tick_size = infer_tick_size(price)
            self.ofi = ofi_fast.BookOFI(self.tick_size, levels=1, crossed="drop_stale")
        return self.ofi

    def _add_deltas(self, c):
        from ofi_fast.errors import OFIError
        bo = self._bookofi(c.price)
        try:
            return self._add_deltas_to(bo, c)
        except OFIError as exc:
            if getattr(exc, "field", None) in ("price", "bid_px", "ask_px"):
                raise CliError(f"{exc} (book tick size {self.tick_size:g}; set it with "
                               "--tick-size)") from None
            raise

    def _add_deltas_to(self, bo, c):
        from ofi_fast.feeds import FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT
        n = len(c)
        e = np.zeros(n)
        snap = (c.flags & FLAG_SNAPSHOT) != 0
        be = (c.flags & FLAG_BATCH_END) != 0
        # runs of snapshot / diff rows
        cuts = np.flatnonzero(snap[1:] != snap[:-1]) + 1
        starts = np.r_[0, cuts]
        ends = np.r_[cuts, n]
        for a, b in zip(starts.tolist(), ends.tolist()):
            if snap[a]:
                self._snapshot_rows(c, a, b, snap, be, (c.flags & FLAG_CLEAR) != 0)
            else:
                e[a:b] = self._diff_rows(bo, c, a, b, be)
        # snapshot rows are not events: they restart the book (and may be stamped out of
        # order, e.g. Binance diffs buffered before the REST snapshot)
        diff = ~snap
        if diff.any():
            self._add_event_bars(c.ts[diff], e[diff])
        self.n_events += int(diff.sum()) - n      # add() counts every row
        return e

    def _snapshot_rows(self, c, a, b, snap, be, clear):
        """Collect snapshot rows; at each batch end load the snapshot into the BookOFI (OFI
        restarts from it: it never spans a snapshot)."""
        i = a
        while i < b:
            if clear[i] or self._snap is None:
                self._snap = []
            ends = np.flatnonzero(be[i:b])
            j = i + int(ends[0]) + 1 if ends.size else b
            self._snap.append((c.side[i:j], c.price[i:j], c.size[i:j]))
            if ends.size:
                side = np.concatenate([s for s, _, _ in self._snap])
                px = np.concatenate([p for _, p, _ in self._snap])
                sz = np.concatenate([z for _, _, z in self._snap])
                bid, ask = side > 0, side < 0
                self.ofi.load_snapshot(px[bid], sz[bid], px[ask], sz[ask])
                self._snap = None
                self.n_snapshots += 1
                m = self.ofi.book.mid
                if math.isnan(self.first_mid) and math.isfinite(m):
                    self.first_mid = float(m)
            i = j

    def _diff_rows(self, bo, c, a, b, be):
        """Apply diff rows a..b bar by bar; read the mid after the first and the last complete
        message of each bar."""
        ev = self.every
        ts = c.ts[a:b]
        k = ts // ev
        out = np.empty(b - a)
        bounds = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1, b - a]
        book = bo.book
        self._check_order(int(k[0]))
        k0 = self._span(int(k[0]), int(k[-1]))
        mo, mc = self.cols["mid_open"], self.cols["mid_close"]
        for s, t in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            j = int(k[s]) - k0
            ends = np.flatnonzero(be[a + s:a + t])
            pieces = {s, t}
            if ends.size:
                pieces |= {s + int(ends[0]) + 1, s + int(ends[-1]) + 1}
                self.n_messages += int(ends.size)
            pieces = sorted(pieces)
            first = True
            for p, q in zip(pieces[:-1], pieces[1:]):
                out[p:q] = bo.update_many(ts[p:q], c.side[a + p:a + q], c.price[a + p:a + q],
                                          c.size[a + p:a + q], batch_end=be[a + p:a + q])
                if be[a + q - 1]:
                    # mid after the bar's first / last complete message (NaN when a side of
                    # the book is empty then: the close is carried from the previous bar)
                    m = book.mid
                    if first and self._open_bar != j + k0:
                        mo[j] = m
                        self._open_bar = j + k0
                    first = False
                    mc[j] = m
                    if math.isnan(self.first_mid) and math.isfinite(m):
                        self.first_mid = float(m)
        return out

    def _add_trades(self, ts, price, size, side):
        ev = self.every
        signed = self.flow.update_many(ts, price, size, side)
        tk = ts // ev
        k0 = self._span(int(tk[0]), int(tk[-1]))
        tk = tk - k0
        lo = int(tk[0])
        w = int(tk[-1]) - lo + 1
        rel = tk - lo
        sl = slice(lo, lo + w)
        self.cols["n_trades"][sl] += np.bincount(rel, minlength=w)
        self.cols["buy_volume"][sl] += np.bincount(rel, np.where(signed > 0, signed, 0.0),
                                                   minlength=w)
        self.cols["sell_volume"][sl] += np.bincount(rel, np.where(signed < 0, -signed, 0.0),
                                                    minlength=w)
        self.cols["unknown_volume"][sl] += np.bincount(rel, np.where(signed == 0, size, 0.0),
                                                       minlength=w)
        lb = self._bars(ts, price, every=ev)          # the bar's last trade price
        has = lb.count > 0
        self.cols["last_price"][(lb.start[has] // ev) - k0] = lb.last[has]
        self.n_trades += int(ts.shape[0])
        self.n_trades_unsided += int(np.count_nonzero(np.asarray(side) == 0))

    # -- output ------------------------------------------------------------------------------
    def table(self):
        """The bar table as a dict of equal-length arrays (see README for the columns)."""
        n = self.n
        t = {k: a[:n].copy() for k, a in self.cols.items()}
        k0 = self.k0 if self.k0 is not None else 0
        out = {"start_ns": (np.arange(n, dtype=np.int64) + k0) * self.every,
               "events": t["events"].astype(np.int64), "ofi": t["ofi"],
               "mid_open": t["mid_open"], "mid_close": _ffill(t["mid_close"])}
        prev = np.concatenate([[self.first_mid], out["mid_close"][:-1]])
        out["dmid"] = out["mid_close"] - prev
        out["n_trades"] = t["n_trades"].astype(np.int64)
        out["buy_volume"] = t["buy_volume"]
        out["sell_volume"] = t["sell_volume"]
        vol = t["buy_volume"] + t["sell_volume"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["trade_imbalance"] = np.where(vol > 0, (t["buy_volume"] - t["sell_volume"])
                                              / np.where(vol > 0, vol, 1.0), np.nan)
        self._unknown = t["unknown_volume"]
        self._last_price = t["last_price"]
        return out


def _ffill(a):
    """Carry the last finite value forward over NaN (leading NaN stay NaN)."""
    ok = ~np.isnan(a)
    idx = np.where(ok, np.arange(a.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    out = a[idx]
    if a.shape[0] and ok.any():
        out[:int(np.argmax(ok))] = np.nan
    elif a.shape[0]:
        out[:] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# VPIN on the bar table (Easley, Lopez de Prado & O'Hara 2012: time bars fill volume buckets)
# --------------------------------------------------------------------------------------------

def bar_vpin(table, last_price, unknown_volume, every, *, true_sides, bucket_volume=None,
             n_buckets=50):
    """VPIN over the bars: each bar with volume is one "trade" of its volume V_k and a buy
    fraction (``B_k / (B_k + S_k)`` from the trade sides when ``true_sides``, else bulk volume
    classification ``Z(dP_k / sigma)`` of :func:`ofi_fast.bvc` on the bars' last trade prices),
    fed to :func:`ofi_fast.vpin`. This is the paper's own construction (trades aggregated into
    time bars, bars split across equal-volume buckets), and it lets the bucket size be chosen
    after the total volume is known with memory bounded by the bars.

    ``bucket_volume`` default: total volume / (4 * n_buckets), so the sample holds about
    4 * n_buckets buckets and 3 * n_buckets + 1 VPIN values, each over a quarter of the sample.
    Returns (vpin per bar: the value after the last bucket closed by the end of that bar, NaN
    before; dict of summary numbers).
    """
    import ofi_fast
    start = table["start_ns"]
    buy, sell = table["buy_volume"], table["sell_volume"]
    vol = buy + sell
    info = {"vpin_method": "true sides" if true_sides else "BVC", "vpin_bucket_volume": math.nan,
            "vpin_n_buckets": int(n_buckets), "vpin_buckets_closed": 0,
            "vpin_min": math.nan, "vpin_median": math.nan, "vpin_max": math.nan}
    per_bar = np.full(start.shape[0], np.nan)
    if not true_sides:
        vol = vol + unknown_volume
    has = vol > 0
    total = float(vol.sum())
    if total <= 0:
        return per_bar, info
    V = float(bucket_volume) if bucket_volume else total / (4 * n_buckets)
    info["vpin_bucket_volume"] = V
    ts, v = start[has], vol[has]
    if true_sides:
        frac = buy[has] / v
    else:
        lp = last_price[has]
        bv = ofi_fast.bvc(ts, lp, v, every=every)
        frac = bv.buy_fraction[(ts - bv.start[0]) // every]
    bk = ofi_fast.vpin(ts, v, buy_fraction=frac, bucket_volume=V, n_buckets=int(n_buckets))
    info["vpin_buckets_closed"] = int(bk.ts.shape[0])
    idx = np.searchsorted(bk.ts, start, side="right") - 1
    ok = idx >= 0
    per_bar[ok] = bk.vpin[idx[ok]]
    fin = bk.vpin[np.isfinite(bk.vpin)]
    if fin.size:
        info.update(vpin_min=float(fin.min()), vpin_median=float(np.median(fin)),
                    vpin_max=float(fin.max()))
    return per_bar, info


# --------------------------------------------------------------------------------------------
# Model: the impact fit (ofi_fast.fit_impact) and its out-of-sample evaluation
# (ofi_fast.RollingOLS, ofi_fast.analysis.walk_forward / oos_metrics).
# --------------------------------------------------------------------------------------------

def fit_model(ofi, dmid):
    """``ofi_fast.fit_impact(ofi, dmid)`` (CKS 2014 eq. 14; NaN bars skipped) as a dict:
    ``beta`` (price units per share of OFI), ``alpha``, ``r2``, ``t_beta`` (classical),
    ``t_beta_robust`` (Newey-West), ``n``."""
    import ofi_fast
    f = ofi_fast.fit_impact(ofi, dmid)
    return {"beta": f.beta, "alpha": f.alpha, "r2": f.r2, "t_beta": f.t_beta,
            "t_beta_robust": f.t_beta_robust, "n": int(f.n), "nw_lags": int(f.lags)}


def walk_forward(ofi, dmid, min_train=50):
    """Walk-forward evaluation of the *contemporaneous* impact model (parameters out of sample).

    For bar t, ``alpha`` and ``beta`` are the OLS fit on the bars before t only (an expanding
    :class:`ofi_fast.RollingOLS`, ``update_many(forecast=True)``: each prediction is made before
    its own bar is added), applied to the same bar's OFI: ``yhat_t = alpha + beta * OFI_t``.
    This is *not* a forecast: OFI_t is only known at the end of bar t. It measures how stable
    the price-impact coefficient is. Bars before ``min_train`` fitted bars get no prediction.
    Metrics (:func:`ofi_fast.analysis.oos_metrics`): ``oos_r2`` = 1 - SSE / SSE of the
    expanding historical mean of dmid (Campbell & Thompson 2008), ``hit_rate`` = share of bars
    with dmid != 0 and a non-zero prediction whose signs agree, ``n_oos`` bars evaluated.
    """
    import ofi_fast
    from ofi_fast.analysis import oos_metrics
    x = np.asarray(ofi, np.float64)
    y = np.asarray(dmid, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.ascontiguousarray(x[ok]), np.ascontiguousarray(y[ok])
    n = x.shape[0]
    out = {"oos_r2": math.nan, "hit_rate": math.nan, "n_oos": 0}
    if n <= min_train:
        return out
    yhat = ofi_fast.RollingOLS().update_many(x, y, forecast=True)
    ybar = np.full(n, np.nan)
    ybar[1:] = np.cumsum(y)[:-1] / np.arange(1, n)
    yhat[:min_train] = np.nan
    m = oos_metrics(y, yhat, ybar)
    out.update(oos_r2=m["r2_oos"], hit_rate=m["hit_rate"], n_oos=m["n"])
    return out


def forecast(table, every_ns, min_train=50):
    """Next-bar forecast: OFI of bar k predicts dmid of bar k+1, evaluated walk-forward by
    :func:`ofi_fast.analysis.walk_forward` (expanding RollingOLS). Its guard refuses any pair
    whose feature ends after its target starts, and each forecast is fitted only on pairs whose
    target had ended before it: no look-ahead. Returns ``forecast_r2``, ``forecast_hit_rate``,
    ``n_forecast`` (NaN / 0 with too few bars)."""
    from ofi_fast.analysis import predictive_pairs, walk_forward as wf
    out = {"forecast_r2": math.nan, "forecast_hit_rate": math.nan, "n_forecast": 0}
    ok = np.isfinite(table["dmid"])
    if int(ok.sum()) <= min_train + 1:
        return out
    start = table["start_ns"][ok]
    t = {"end": start + every_ns, "ofi": table["ofi"][ok], "dmid": table["dmid"][ok]}
    X, y, fe, ts_, te = predictive_pairs(t, ["ofi"], target="dmid")
    r = wf(X, y, feature_end=fe, target_start=ts_, target_end=te, min_train=min_train)
    m = r["metrics"]
    out.update(forecast_r2=m["r2_oos"], forecast_hit_rate=m["hit_rate"], n_forecast=m["n"])
    return out


def summarize(table, every_ns, n_events, min_train=50, *, bb=None, vpin_bucket=None,
              vpin_buckets=50):
    """The numbers ``analyze`` prints, as a dict (adds the ``vpin`` column to ``table`` when a
    :class:`BarBuilder` ``bb`` is given)."""
    fit = fit_model(table["ofi"], table["dmid"])
    wf = walk_forward(table["ofi"], table["dmid"], min_train)
    fc = forecast(table, every_ns, min_train)
    ti = table["trade_imbalance"]
    ti = ti[np.isfinite(ti)]
    span = (int(table["start_ns"][-1]) + every_ns - int(table["start_ns"][0])
            if table["start_ns"].shape[0] else 0)
    s = {
        "events": int(n_events), "bars": int(table["start_ns"].shape[0]),
        "empty_bars": int((table["events"] == 0).sum()), "bar_seconds": every_ns / NS_PER_S,
        "span_seconds": span / NS_PER_S,
        "trades": int(table["n_trades"].sum()),
        "beta": fit["beta"], "alpha": fit["alpha"], "t_beta": fit["t_beta"],
        "t_beta_robust": fit["t_beta_robust"], "nw_lags": fit["nw_lags"], "r2": fit["r2"],
        "n_fit": fit["n"], "oos_r2": wf["oos_r2"], "hit_rate": wf["hit_rate"],
        "n_oos": wf["n_oos"], **fc,
        "trade_imbalance_min": float(ti.min()) if ti.size else math.nan,
        "trade_imbalance_median": float(np.median(ti)) if ti.size else math.nan,
        "trade_imbalance_max": float(ti.max()) if ti.size else math.nan,
        "ofi_abs_median": float(np.median(np.abs(table["ofi"]))) if table["ofi"].size else 0.0,
    }
    if bb is not None:
        flow = bb.flow
        s.update(buy_volume=float(flow.buy_volume), sell_volume=float(flow.sell_volume),
                 unknown_volume=float(flow.unknown_volume),
                 trade_imbalance_total=(float(flow.imbalance) if not flow.empty else math.nan),
                 trades_unsided=int(bb.n_trades_unsided))
        true_sides = bb.n_trades_unsided == 0
        table["vpin"], info = bar_vpin(table, bb._last_price, bb._unknown, every_ns,
                                       true_sides=true_sides, bucket_volume=vpin_bucket,
                                       n_buckets=vpin_buckets)
        s.update(info)
        if bb.kind == "deltas":
            s.update(tick_size=bb.tick_size, messages=int(bb.n_messages),
                     snapshots=int(bb.n_snapshots))
    return s


def _vol(v):
    """A volume: whole numbers with thousands separators, else 6 significant digits."""
    return f"{v:,.0f}" if v == int(v) or abs(v) >= 1e6 else f"{v:,.6g}"


def format_summary(name, s, elapsed, input_seconds=None, note=""):
    """The summary table ``analyze`` prints."""
    def num(v, fmt):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
    rows = [("input", name)]
    if note:
        rows.append(("read as", note))
    rows += [
        ("events", f"{s['events']:,}" + (f" ({s['messages']:,} messages, {s['snapshots']} "
                                          f"snapshot{'s' if s['snapshots'] != 1 else ''})"
                                          if "messages" in s else "")),
        ("trades", f"{s['trades']:,}"),
        ("time span", f"{s['span_seconds']:,.0f} s"),
        (f"bars ({s['bar_seconds']:g} s)", f"{s['bars']:,} ({s['empty_bars']:,} empty)"),
        ("beta (dmid per unit of OFI)", num(s["beta"], ".6g")),
        ("alpha", num(s["alpha"], ".6g")),
        (f"t(beta) plain / Newey-West({s['nw_lags']})",
         f"{num(s['t_beta'], '.2f')} / {num(s['t_beta_robust'], '.2f')}"),
        (f"R^2 (in sample, {s['n_fit']:,} bars)", num(s["r2"], ".4f")),
        (f"OOS R^2 (same-bar OFI, past fit, {s['n_oos']:,} bars)", num(s["oos_r2"], ".4f")),
        ("  hit rate (sign of dmid)", num(s["hit_rate"], ".4f")),
        (f"forecast R^2 (next bar, {s['n_forecast']:,} bars)", num(s["forecast_r2"], ".4f")),
        ("  hit rate (sign of next dmid)", num(s["forecast_hit_rate"], ".4f")),
        ("trade imbalance min / median / max",
         " / ".join(num(s[k], "+.4f") for k in ("trade_imbalance_min",
                                                 "trade_imbalance_median",
                                                 "trade_imbalance_max"))),
    ]
    if "buy_volume" in s:
        rows.append(("buy / sell volume (imbalance)",
                     f"{_vol(s['buy_volume'])} / {_vol(s['sell_volume'])} "
                     f"({num(s['trade_imbalance_total'], '+.4f')})"
                     + (f", {_vol(s['unknown_volume'])} unsigned" if s["unknown_volume"]
                        else "")))
    if "vpin_method" in s:
        rows.append((f"VPIN min / median / max ({s['vpin_method']})",
                     " / ".join(num(s[k], ".4f") for k in ("vpin_min", "vpin_median",
                                                             "vpin_max"))))
        rows.append(("  VPIN buckets", f"{s['vpin_buckets_closed']:,} of "
                     f"{num(s['vpin_bucket_volume'], '.6g')}, window {s['vpin_n_buckets']}"))
    rows.append(("elapsed", f"{elapsed:.2f} s" + ("" if input_seconds is None else
                 f" (input {input_seconds:.2f} s, analysis {elapsed - input_seconds:.2f} s)")))
    w = max(len(k) for k, _ in rows)
    lines = ["ofi-fast analyze: dmid = alpha + beta * OFI over clock bars "
             "(Cont, Kukanov & Stoikov 2014)"]
    lines += [f"  {k:<{w}}  {v}" for k, v in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------

def write_table(table, path):
    """Write the bar table: Parquet for a ``.parquet`` suffix (needs pyarrow), else CSV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise CliError("writing .parquet needs pyarrow (pip install 'ofi_fast[parquet]')") \
                from None
        pq.write_table(pa.table({k: v for k, v in table.items()}), str(path))
        return
    if suffix not in (".csv", ".txt"):
        raise CliError(f"{path}: unknown output format {suffix or '(none)'} "
                       "(use .csv or .parquet)")
    cols = list(table)
    fmts = ["%d" if table[k].dtype.kind in "iu" else "%.12g" for k in cols]
    data = np.column_stack([table[k].astype(np.float64) if table[k].dtype.kind == "f"
                            else table[k] for k in cols]) if cols else np.zeros((0, 0))
    with open(path, "w", newline="") as fh:
        fh.write(",".join(cols) + "\n")
        if data.shape[0]:
            np.savetxt(fh, data, fmt=fmts, delimiter=",")


def _check_out(path, table=False):
    """Fail before the work if an output path cannot be written (or its format is unknown)."""
    p = Path(path)
    if not p.parent.exists():
        raise CliError(f"{p}: folder {p.parent} does not exist")
    if p.is_dir():
        raise CliError(f"{p}: is a directory")
    if table:
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise CliError("writing .parquet needs pyarrow "
                               "(pip install 'ofi_fast[parquet]')") from None
        elif suffix not in (".csv", ".txt"):
            raise CliError(f"{p}: unknown output format {suffix or '(none)'} "
                           "(use .csv or .parquet)")


def _need_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib (pip install 'ofi_fast[plot]')") from None
    matplotlib.use("Agg")


def plot(table, s, path):
    """Two panels: OFI vs dmid per bar with the fitted line; OFI and mid over time."""
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x, y = table["ofi"], table["dmid"]
    ok = np.isfinite(x) & np.isfinite(y)
    ax1.scatter(x[ok], y[ok], s=6, alpha=0.4, color="tab:blue", label="bars")
    if np.isfinite(s["beta"]) and ok.any():
        xs = np.linspace(x[ok].min(), x[ok].max(), 2)
        ax1.plot(xs, s["alpha"] + s["beta"] * xs, color="tab:red",
                 label=f"fit: beta={s['beta']:.3g}, R²={s['r2']:.3f}")
    ax1.set_xlabel(f"OFI per {s['bar_seconds']:g} s bar (size units)")
    ax1.set_ylabel("mid change per bar")
    ax1.set_title("Order flow imbalance vs mid change")
    ax1.legend(loc="upper left")
    t_h = (table["start_ns"] - table["start_ns"][0]) / 3600e9 if x.size else x
    ax2.plot(t_h, np.cumsum(x), color="tab:blue", lw=0.8, label="cumulative OFI")
    ax2.set_xlabel("hours from start")
    ax2.set_ylabel("cumulative OFI (size units)", color="tab:blue")
    ax3 = ax2.twinx()
    ax3.plot(t_h, table["mid_close"], color="tab:orange", lw=0.8, label="mid")
    ax3.set_ylabel("mid price", color="tab:orange")
    ax2.set_title("OFI and mid over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def _open(args):
    return open_source(args.files, args.format, events=args.events, seed=args.seed,
                       levels=args.levels, chunk_size=args.chunk_size, clock=args.clock,
                       tick_size=args.tick_size, symbol=args.symbol, columns=args.columns,
                       ts_unit=args.ts_unit)


def cmd_analyze(args):
    t0 = time.perf_counter()
    every = _every_ns(args.every)
    if args.out:
        _check_out(args.out, table=True)
    if args.plot:
        _check_out(args.plot)
        _need_matplotlib()
    t1 = time.perf_counter()
    source = _open(args)
    bb = BarBuilder(every, kind=source.kind, tick_size=source.tick_size,
                    classify=None if args.classify == "none" else args.classify)
    t_input = time.perf_counter() - t1   # reading / simulating, apart from the analysis
    it = iter(_progress(source, not args.no_progress))
    while True:
        t1 = time.perf_counter()
        c = next(it, None)
        t_input += time.perf_counter() - t1
        if c is None:
            break
        bb.add(c)
    if bb.n_events == 0:
        raise CliError("the input holds no events")
    table = bb.table()
    s = summarize(table, every, bb.n_events, args.min_train, bb=bb,
                  vpin_bucket=args.vpin_bucket, vpin_buckets=args.vpin_buckets)
    if args.out:
        write_table(table, args.out)
    if args.plot:
        plot(table, s, args.plot)
    elapsed = time.perf_counter() - t0
    if args.json:
        d = {"input": source.name, **s, "elapsed_seconds": elapsed, "input_seconds": t_input}
        # strict JSON: a number that is not available (NaN) is null
        print(json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v
                          for k, v in d.items()}))
    else:
        print(format_summary(source.name, s, elapsed, t_input, source.note))
        for what, p in (("bar table", args.out), ("figure", args.plot)):
            if p:
                print(f"  {what} written to {p}")
    return 0


def _clock(ts):
    """ns after midnight (LOBSTER, simulator) as HH:MM:SS.fff; epoch ns as an ISO UTC time."""
    if abs(ts) < 7 * 86400 * NS_PER_S:
        s = ts / NS_PER_S
        return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"
    import datetime as dt
    return dt.datetime.fromtimestamp(ts / NS_PER_S, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _percentiles(lat):
    if lat.size == 0:
        return (math.nan,) * 4
    p = np.percentile(lat, [50, 99, 99.9])
    return float(p[0]), float(p[1]), float(p[2]), float(lat.max())


def _timed_loop(fn, rows):
    """Call ``fn(*row)`` for each row, timing each call with perf_counter_ns: int64 ns."""
    lat = np.empty(len(rows), np.int64)
    clock = time.perf_counter_ns
    for i, r in enumerate(rows):
        t = clock()
        fn(*r)
        lat[i] = clock() - t
    return lat


def _tod(ts):
    """Time of day of ns timestamps (after midnight, or since the epoch: UTC) as HH:MM:SS.fff."""
    s = (ts % (86400 * NS_PER_S)) / NS_PER_S
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"


def _delta_units(c):
    """Replay units of a deltas chunk: (end ts, start row, end row, is_snapshot). A unit is one
    exchange message (rows up to a FLAG_BATCH_END), a snapshot, or the rows left at the end of
    the chunk (a message continued in the next chunk: BookOFI keeps the batch pending)."""
    from ofi_fast.feeds import FLAG_BATCH_END, FLAG_SNAPSHOT
    snap = (c.flags & FLAG_SNAPSHOT) != 0
    be = (c.flags & FLAG_BATCH_END) != 0
    brk = be.copy()
    brk[:-1] |= snap[1:] != snap[:-1]
    brk[-1] = True
    ends = np.flatnonzero(brk)
    starts = np.r_[0, ends[:-1] + 1]
    return c.ts[ends], starts, ends + 1, snap[starts], be


def cmd_stream(args):
    """Replay the input event by event through the streaming objects, in time order:
    :class:`ofi_fast.OFI` per quote update (or :class:`ofi_fast.BookOFI` per exchange message
    of L2 deltas) and :class:`ofi_fast.TradeFlow` per trade, both over a rolling time window;
    print one line per bar and the per-call latency percentiles at the end."""
    import ofi_fast
    from ofi_fast._ofi import _EmptyCall
    from ofi_fast.feeds import FLAG_CLEAR
    every = _every_ns(args.every)
    window = _every_ns(args.window)
    source = _open(args)
    flow = ofi_fast.TradeFlow(window_time=window, grow=True,
                              classify=None if args.classify == "none" else args.classify)
    deltas = source.kind == "deltas"
    ofi = None if deltas else ofi_fast.OFI(window_time=window, grow=True)
    clock = time.perf_counter_ns
    lat_ev, lat_tr = [], []
    out = sys.stdout
    unit = "messages" if deltas else "events"
    out.write(f"ofi-fast stream: {source.name}; one line per {args.every:g} s bar, "
              f"rolling window {args.window:g} s; times of day UTC (simulator: after "
              f"midnight)\n")
    out.write(f"{'bar start':>12}  {unit:>8}  {'trades':>6}  {'OFI(bar)':>11}  "
              f"{'OFI(window)':>11}  {'TFI(window)':>11}  {'mid':>11}  {'dmid':>9}\n")
    st = {"k": None, "ofi": 0.0, "n": 0, "nt": 0, "prev": math.nan, "last": math.nan}
    n_rows = n_units = n_trades = 0
    floor = None
    snap_rows = None

    def line(k):
        dm = st["last"] - st["prev"] if not math.isnan(st["prev"]) else math.nan
        ow = ofi.value if ofi is not None else 0.0
        tfi = flow.imbalance if not flow.empty else math.nan
        out.write(f"{_tod(k * every):>12}  {st['n']:>8d}  {st['nt']:>6d}  {st['ofi']:>+11.6g}  "
                  f"{ow:>+11.6g}  {tfi:>+11.4f}  {st['last']:>11.6g}  {dm:>+9.4g}\n")
        st["prev"] = st["last"]

    def enter(k):
        if k == st["k"]:
            return
        if st["k"] is not None:
            line(st["k"])
            gap = k - st["k"] - 1
            st["ofi"], st["n"], st["nt"] = 0.0, 0, 0
            if gap <= 3:                      # empty bars, as ofi_fast.bars keeps them
                for kk in range(st["k"] + 1, k):
                    line(kk)
            else:                             # a long gap: one line, not thousands
                out.write(f"{'':>12}  ({gap:,} empty bars up to {_tod(k * every)})\n")
        st["k"] = k

    def set_mid(m):
        if m == m:
            if math.isnan(st["prev"]) and math.isnan(st["last"]):
                st["prev"] = m
            st["last"] = m

    for c in _progress(source, False):
        if deltas and len(c):
            if ofi is None:
                tick = source.tick_size or infer_tick_size(c.price)
                ofi = ofi_fast.BookOFI(tick, levels=1, window_time=window, grow=True,
                                       crossed="drop_stale")
                book = ofi.book
            u_ts, u_a, u_b, u_snap, be = _delta_units(c)
        elif len(c):
            u_ts = c.ts
        else:
            u_ts = np.zeros(0, np.int64)
        nu, nt = u_ts.shape[0], c.trade_ts.shape[0]
        if floor is None and nu:                 # the timer + empty-call floor, same loop
            cols = ([c.bid_px, c.bid_sz, c.ask_px, c.ask_sz] if not deltas
                    else [c.price, c.size, c.price, c.size])
            rows = list(zip(c.ts[:100_000].tolist(), *(a[:100_000].tolist() for a in cols)))
            floor = _timed_loop(_EmptyCall().update, rows)
        order = np.argsort(np.concatenate([u_ts, c.trade_ts]), kind="stable").tolist()
        lat_e = np.empty(nu, np.int64)
        lat_t = np.empty(nt, np.int64)
        ie = it = 0
        if not deltas and nu:
            q = list(zip(c.ts.tolist(), c.bid_px.tolist(), c.bid_sz.tolist(),
                         c.ask_px.tolist(), c.ask_sz.tolist()))
            upd = ofi.update
        if nt:
            tr = list(zip(c.trade_ts.tolist(), c.trade_price.tolist(), c.trade_size.tolist(),
                          c.trade_side.tolist()))
            tupd = flow.update
        for j in order:
            if j < nu:                                  # an event (or a message of deltas)
                ts = int(u_ts[j])
                enter(ts // every)
                if deltas:
                    a, b = int(u_a[j]), int(u_b[j])
                    if u_snap[j]:
                        if snap_rows is None or (c.flags[a] & FLAG_CLEAR):
                            snap_rows = []
                        snap_rows.append((c.side[a:b], c.price[a:b], c.size[a:b]))
                        if be[b - 1]:
                            sd, px, sz = (np.concatenate(x) for x in zip(*snap_rows))
                            ofi.load_snapshot(px[sd > 0], sz[sd > 0], px[sd < 0], sz[sd < 0])
                            snap_rows = None
                            set_mid(book.mid)
                        lat_e[ie] = -1
                    else:
                        t = clock()
                        e = ofi.update_many(c.ts[a:b], c.side[a:b], c.price[a:b],
                                            c.size[a:b], batch_end=be[a:b])
                        lat_e[ie] = clock() - t
                        st["ofi"] += float(e[-1])
                        st["n"] += 1
                        if be[b - 1]:
                            set_mid(book.mid)
                else:
                    r = q[j]
                    t = clock()
                    e = upd(*r)
                    lat_e[ie] = clock() - t
                    st["ofi"] += e
                    st["n"] += 1
                    set_mid(0.5 * (r[1] + r[3]))
                ie += 1
            else:                                       # a trade
                r = tr[j - nu]
                enter(r[0] // every)
                t = clock()
                tupd(*r)
                lat_t[it] = clock() - t
                st["nt"] += 1
                it += 1
        lat_ev.append(lat_e[lat_e >= 0])
        lat_tr.append(lat_t)
        n_rows += len(c)
        n_units += int((lat_e >= 0).sum())
        n_trades += nt
    if st["k"] is None:
        raise CliError("the input holds no events")
    line(st["k"])
    p = _percentiles(np.concatenate(lat_ev) if lat_ev else np.zeros(0))
    pt = _percentiles(np.concatenate(lat_tr) if lat_tr else np.zeros(0))
    f = _percentiles(floor if floor is not None else np.zeros(0))
    what = (f"{n_rows:,} L2 rows (snapshots included) in {n_units:,} messages" if deltas
            else f"{n_units:,} events")
    out.write(f"\n{what}, {n_trades:,} trades; latency per call, ns "
              f"(perf_counter_ns around each call, timer included):\n")
    out.write(f"  {'':<30}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>10}\n")

    def row(name, v):
        def g(x):
            return "-" if math.isnan(x) else f"{x:.0f}"
        out.write(f"  {name:<30}{g(v[0]):>8}{g(v[1]):>8}{g(v[2]):>8}{g(v[3]):>10}\n")
    row("BookOFI.update_many (message)" if deltas else "OFI.update", p)
    if n_trades:
        row("TradeFlow.update", pt)
    row("empty call (floor)", f)
    return 0


def bench_rows(n_events, seed=0):
    """Latency rows of ``ofi-fast bench``: (name, p50, p99, p99.9, batch ns/event or None)."""
    import ofi_fast
    from ofi_fast._ofi import _EmptyCall
    from ofi_fast.simulate import simulate
    r = simulate(n_events, seed=seed, levels=1)
    bp, bs, ap, az = r.best()
    ts = r.ts
    rows = list(zip(ts.tolist(), bp.tolist(), bs.tolist(), ap.tolist(), az.tolist()))
    ts_vals = list(zip(ts.tolist(), (bs - az).tolist()))
    results = []

    def batch(fn):
        best = math.inf
        for _ in range(3):
            t = time.perf_counter_ns()
            fn()
            best = min(best, time.perf_counter_ns() - t)
        return best / n_events

    cases = [
        ("empty call (floor)", lambda: _EmptyCall().update, rows, None),
        ("OFI()", lambda: ofi_fast.OFI().update, rows,
         lambda: ofi_fast.OFI().update_many(ts, bp, bs, ap, az)),
        ("OFI(window=1000)", lambda: ofi_fast.OFI(window=1000).update, rows,
         lambda: ofi_fast.OFI(window=1000).update_many(ts, bp, bs, ap, az)),
        ("OFI(window_time=1s)", lambda: ofi_fast.OFI(window_time=NS_PER_S, grow=True).update,
         rows, lambda: ofi_fast.OFI(window_time=NS_PER_S, grow=True).update_many(
             ts, bp, bs, ap, az)),
        ("RollingSum(window_time=1s)",
         lambda: ofi_fast.RollingSum(window_time=NS_PER_S, grow=True).update, ts_vals,
         lambda: ofi_fast.RollingSum(window_time=NS_PER_S, grow=True).update_many(
             ts, bs - az)),
        ("l1_ofi (batch)", None, None, lambda: ofi_fast.l1_ofi(bp, bs, ap, az)),
    ]
    for name, make, data, many in cases:
        p = _percentiles(_timed_loop(make(), data)) if make else (math.nan,) * 4
        results.append((name, p[0], p[1], p[2], batch(many) if many else None))
    return results


def cmd_bench(args):
    t0 = time.perf_counter()
    res = bench_rows(args.events, args.seed)
    print(f"ofi-fast bench: {args.events:,} simulated events, Python {sys.version.split()[0]}")
    print("per call (perf_counter_ns around each call, timer included), and batch ns/event:")
    print(f"  {'':<28}{'p50':>8}{'p99':>8}{'p99.9':>8}{'batch':>10}")
    for name, a, b, c, many in res:
        def f(v):
            return "-" if v is None or math.isnan(v) else f"{v:.0f}"
        bt = "-" if many is None else f"{many:.1f}"
        print(f"  {name:<28}{f(a):>8}{f(b):>8}{f(c):>8}{bt:>10}")
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    return 0


# --------------------------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"ofi-fast: error: {message} (see '{self.prog} --help')\n")


def _positive(kind):
    def conv(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a valid {kind.__name__}") from None
        if not v > 0 or (kind is float and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be positive, got {s!r}")
        return v
    conv.__name__ = kind.__name__
    return conv


def _every_ns(seconds):
    v = int(round(seconds * NS_PER_S))
    if v <= 0:
        raise CliError(f"bar length {seconds!r} s is below one nanosecond")
    return v


def build_parser():
    p = _Parser(prog="ofi-fast", description="Order flow imbalance: analyse, stream and "
                "benchmark limit-order-book data (embedded simulator when no FILE is given).")
    from ofi_fast import __version__
    p.add_argument("--version", action="version", version=f"ofi-fast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def inputs(sp, default_events):
        sp.add_argument("files", nargs="*", metavar="FILE",
                        help="input file(s): a LOBSTER zip or message + orderbook pair, a "
                        "Binance/Coinbase/Kraken recording, Tardis or Bitstamp book (+ trades) "
                        "CSV, or a quotes (+ trades) CSV; none: the simulator")
        sp.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                        help="input format (default: detect from names and content)")
        sp.add_argument("--clock", default="auto", choices=["auto", "local", "exchange"],
                        help="recordings: timestamps from the local receive clock or the "
                        "exchange's (auto: local for Binance, Coinbase, Kraken, Tardis; "
                        "exchange for Bitstamp)")
        sp.add_argument("--tick-size", type=_positive(float), default=None, metavar="PRICE",
                        help="L2 feeds: price grid of the book (default: inferred)")
        sp.add_argument("--symbol", default=None,
                        help="Coinbase product / Kraken pair to read (default: the first)")
        sp.add_argument("--columns", default=None, metavar="FIELD=COL,...",
                        help="CSV: column names, fields ts, bid_px, bid_sz, ask_px, ask_sz, "
                        "price, size, side (default: recognised from the header)")
        sp.add_argument("--classify", default="tick", choices=["tick", "none"],
                        help="sign trades the feed gives no side by the tick rule (default) "
                        "or leave them unsigned")
        sp.add_argument("--ts-unit", default="auto", choices=["auto", "ns", "us", "ms", "s"],
                        help="CSV: unit of integer timestamps (auto: from their magnitude)")
        sp.add_argument("--every", type=_positive(float), default=10.0, metavar="SECONDS",
                        help="bar length in seconds (default 10)")
        sp.add_argument("--events", type=_positive(int), default=default_events,
                        metavar="N", help=f"simulator events (default {default_events:,})")
        sp.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
        sp.add_argument("--levels", type=_positive(int), default=5,
                        help="simulator book levels (default 5)")
        sp.add_argument("--chunk-size", type=_positive(int), default=1_000_000, metavar="N",
                        help="events per chunk: bounds memory (default 1,000,000)")

    a = sub.add_parser("analyze", help="OFI bars, impact fit, out-of-sample evaluation",
                       description="Build best-level OFI into clock bars, fit dmid on OFI "
                       "(fit_impact), evaluate it out of sample (same-bar OFI with a past fit, "
                       "and a next-bar forecast), add trade flow and VPIN; print a summary.")
    inputs(a, 1_000_000)
    a.add_argument("--out", metavar="PATH", help="write the bar table (.csv or .parquet)")
    a.add_argument("--plot", metavar="PNG", help="write a figure (needs matplotlib)")
    a.add_argument("--min-train", type=_positive(int), default=50, metavar="BARS",
                   help="bars before the first out-of-sample prediction (default 50)")
    a.add_argument("--vpin-bucket", type=_positive(float), default=None, metavar="VOLUME",
                   help="VPIN bucket volume (default: total volume / (4 x --vpin-buckets))")
    a.add_argument("--vpin-buckets", type=_positive(int), default=50, metavar="N",
                   help="buckets per VPIN value (default 50)")
    a.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)

    s = sub.add_parser("stream", help="replay events through the streaming OFI, one line "
                       "per bar, then latency percentiles")
    inputs(s, 100_000)
    s.add_argument("--window", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="rolling OFI window in seconds (default 1)")
    s.set_defaults(func=cmd_stream)

    b = sub.add_parser("bench", help="latency of the streaming classes on this machine")
    b.add_argument("--events", type=_positive(int), default=200_000, metavar="N",
                   help="simulated events per case (default 200,000)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None):
    """Entry point of the ``ofi-fast`` console script; returns the exit status."""
    from ofi_fast.errors import OFIError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:        # --help / --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        print("ofi-fast: error: choose a command: analyze, stream or bench "
              "(see 'ofi-fast --help')", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:          # e.g. `ofi-fast stream | head`: stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, OFIError, OSError, zipfile.BadZipFile) as exc:
        msg = str(exc)
        if isinstance(exc, OSError) and exc.filename is not None:
            msg = f"{exc.filename}: {exc.strerror or exc}"
        print(f"ofi-fast: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ofi-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
