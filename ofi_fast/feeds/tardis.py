"""Tardis.dev downloadable CSV: ``incremental_book_L2``, ``trades``, ``book_snapshot_N``.

Format (docs.tardis.dev, "Downloadable CSV files"; THEORY-DETAIL.md 7.3): header row, comma
separated, plain or gzip; ``timestamp`` (exchange) and ``local_timestamp`` (arrival) are
microseconds since the epoch, converted to int64 ns exactly (x 1000).

``incremental_book_L2`` -> :class:`~ofi_fast.feeds.BookDeltas`: ``amount`` is the new absolute
size at ``price`` (0 deletes). Flags:

- :data:`FLAG_SNAPSHOT` on ``is_snapshot=true`` rows; :data:`FLAG_CLEAR` on the first row of each
  snapshot (a snapshot row after an update row, or whose local_timestamp differs from the
  previous snapshot row's): the tardis-dev OrderBook discards the book there;
- :data:`FLAG_BATCH_END` on the last row of each exchange message. Tardis splits one message into
  rows sharing ``local_timestamp``; computing OFI between rows of one batch would see spurious
  intermediate (even crossed) books, so consumers should read the book at batch ends only.
- Update rows before the first snapshot are dropped, as tardis-dev does, and counted in
  ``stats["dropped_before_snapshot"]``. ``update_id`` is -1 (Tardis gives none).

``trades`` -> :class:`~ofi_fast.feeds.Trades`: ``side`` is the aggressor (buy +1, sell -1,
unknown 0); non-numeric trade ids become -1 (counted in ``stats["non_numeric_ids"]``).

``book_snapshot_N`` -> :class:`TardisBookSnapshots`, (n, N) arrays, empty levels NaN / 0.

Parsing: the compiled tokenizer :mod:`ofi_fast._csv` reads each line into typed columns with
the GIL released: ``exchange`` skipped; ``symbol`` checked on every row (see
:class:`TardisReader`'s ``symbol``); times ``int * 1000``
(overflow-checked), ``is_snapshot`` ``true``/``false``, ``side`` ``bid``/``ask`` (book) or
``buy``/``sell``/``unknown`` (trades), prices > 0 and amounts >= 0 as float64 equal bit for
bit to Python's ``float(text)`` (no ``nan`` / ``inf`` spellings). Malformed lines raise
``ParseError`` naming the file, line and field, or are skipped and counted.
"""

from __future__ import annotations

import os

import dataclasses
import re
from typing import Any, ClassVar, Iterator

import numpy as np
from numpy.typing import NDArray

from ofi_fast._csv import BOOL, FLOAT, ID, INT, MATCH, SIDE_BOOK, SIDE_TRADE, SKIP, Tokenizer, column
from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    ErrorLog,
    TimeOrder,
    TokenSource,
    Arrays,
    check_time_order,
    open_binary,
    uncompressed_size,
)
from ofi_fast.feeds._l2 import FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT, BookDeltas, Trades

L2_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side",
              "price", "amount"]
TRADE_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price",
                 "amount"]


@dataclasses.dataclass(frozen=True, eq=False)
class TardisBookSnapshots(Arrays):
    """Tardis book_snapshot_N rows: (n,) times and (n, N) level arrays (NaN price / 0 size =
    empty)."""

    ts_exchange: NDArray[np.int64]
    ts_local: NDArray[np.int64]
    ask_px: NDArray[np.float64]
    ask_sz: NDArray[np.float64]
    bid_px: NDArray[np.float64]
    bid_sz: NDArray[np.float64]

    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "ts_exchange": np.dtype(np.int64),
        "ts_local": np.dtype(np.int64),
        "ask_px": np.dtype(np.float64),
        "ask_sz": np.dtype(np.float64),
        "bid_px": np.dtype(np.float64),
        "bid_sz": np.dtype(np.float64),
    }

_US = 1000
_SNAP_RE = re.compile(r"(asks|bids)\[(\d+)\]\.(price|amount)$")


def _time(name):
    """Tardis microseconds -> int64 ns (x 1000, overflow-checked)."""
    return column(name, INT, mult=_US, lo=1)   # microseconds since the epoch, > 0


def _l2_spec(sym):
    return [column("exchange", SKIP), sym, _time("timestamp"), _time("local_timestamp"),
            column("is_snapshot", BOOL), column("side", SIDE_BOOK),
            column("price", FLOAT, positive=True), column("amount", FLOAT, nonneg=True)]


def _trade_spec(sym):
    return [column("exchange", SKIP), sym, _time("timestamp"), _time("local_timestamp"),
            column("id", ID), column("side", SIDE_TRADE),
            column("price", FLOAT, positive=True), column("amount", FLOAT, nonneg=True)]


class TardisReader:
    """Read a Tardis CSV (kind detected from the header) in chunks of ``chunk_rows`` rows.

    ``kind`` is ``"incremental_book_L2"``, ``"trades"`` or ``"book_snapshot"``; iterating yields
    :class:`BookDeltas`, :class:`Trades` or :class:`TardisBookSnapshots`. ``on_error="raise"``
    raises :class:`~ofi_fast.errors.ParseError` with file and line; ``"skip"`` counts the row
    in ``errors``. ``stats`` counts rows (and snapshots / dropped rows for the book).

    ``symbol``: Tardis' grouped files (``PERPETUALS``, ``SPOT``, ...) hold many symbols; the
    rows of ``symbol`` are read and every other row is skipped and counted in
    ``stats["other_symbol"]``. ``None``: the file must hold one symbol, that of its first data
    row (``first_symbol``); a row of another is a ``ParseError`` naming its line.
    ``prefetch``: read (and inflate) the next block in a background thread while this one is
    parsed (default; a second core's work; :func:`ofi_fast.batch.run` turns it off).
    ``time_order``: ``"local"`` (``local_timestamp``) or ``"exchange"`` (``timestamp``): that
    clock must not go backwards from one update row (book; snapshot rows are not judged) or
    trade to the next; a row earlier than the latest before it is a malformed line
    (``ParseError`` naming file, line and column, or skipped and counted). None (default):
    not judged here (:func:`ofi_fast.feeds.open` judges the clock the bars use).
    """

    def __init__(self, path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, on_error: str = "raise",
                 symbol: str | None = None, prefetch: bool = True,
                 time_order: str | None = None):
        self.path = str(path)
        self.prefetch = bool(prefetch)
        self.time_order = check_time_order(time_order)
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.path, on_error)
        with open_binary(self.path) as f:
            header = f.readline().decode().strip().replace("\r", "")
            first = f.readline().split(b",")
        self.first_symbol = first[1].decode("utf-8", "replace") if len(first) > 2 else None
        self.symbol = symbol
        want = symbol if symbol is not None else self.first_symbol
        self._symbol_col = column(
            "symbol", MATCH, token=(want or "").encode(), strict=symbol is None,
            hint=None if symbol is not None else "the first row's symbol; the file holds "
            "several: choose one (symbol= / --symbol)")
        self.columns = header.split(",")
        if self.columns == L2_COLUMNS:
            self.kind = "incremental_book_L2"
        elif self.columns == TRADE_COLUMNS:
            self.kind = "trades"
        elif (self.columns[:4] == L2_COLUMNS[:4] and len(self.columns) > 4
              and (len(self.columns) - 4) % 4 == 0 and self.columns[4] == "asks[0].price"):
            self.kind = "book_snapshot"
            self.levels = (len(self.columns) - 4) // 4
            want = {f"{side}[{i}].{k}" for side in ("asks", "bids") for i in range(self.levels)
                    for k in ("price", "amount")}
            if set(self.columns[4:]) != want:
                raise ValueError(f"{self.path}: Tardis book_snapshot header does not name "
                                 f"asks/bids[0..{self.levels - 1}].price/amount once each")
        else:
            raise ValueError(f"{self.path}: unknown Tardis CSV header {header!r}")

    # ---------------------------------------------------------------------------------------
    def _chunks(self, spec, alloc, views, grow=False):
        """Yield ``(rows, arrays)`` per chunk of ``chunk_rows`` lines, parsed by the compiled
        tokenizer straight into fresh arrays (``alloc(cap)`` -> arrays, ``views(arrays, r)`` ->
        the tokenizer's outputs from row ``r``); malformed lines raise or are skipped and
        counted in ``errors``. With ``grow``, one chunk for the whole file: the arrays start at
        the line count extrapolated from the first block and double in place if needed."""
        with open_binary(self.path) as f, \
                TokenSource(f, Tokenizer(spec), self.errors, skip_lines=1,
                            prefetch=self.prefetch) as src:
            while True:
                cap = self.chunk_rows
                if grow:
                    est = src.estimate_lines(uncompressed_size(self.path))
                    cap = max(1, est) if est is not None else max(cap, 1 << 16)
                arrays = alloc(cap)
                line_of = np.empty(cap, np.int64)
                rows = lines = 0
                bad_ids, other = src.bad_ids, src.other
                while True:
                    want = cap - rows
                    dr, dl, _ = src.read(views(arrays, rows), want, lines_out=line_of[rows:])
                    rows += dr
                    lines += dl
                    if not grow or dl < want:
                        break
                    cap *= 2
                    for x in arrays + [line_of]:
                        x.resize((cap,) + x.shape[1:], refcheck=False)
                self.stats["non_numeric_ids"] += src.bad_ids - bad_ids
                self.stats["other_symbol"] += src.other - other
                if not lines:
                    return
                for x in arrays + [line_of]:  # trim in place: a chunk holds only its rows
                    x.resize((rows,) + x.shape[1:], refcheck=False)
                yield rows, arrays, line_of
                if grow:
                    grow = False

    def __iter__(self):
        self.stats = {"rows": 0, "snapshots": 0, "dropped_before_snapshot": 0,
                      "non_numeric_ids": 0, "other_symbol": 0}
        if self.kind == "incremental_book_L2":
            yield from self._iter_l2()
        elif self.kind == "trades":
            order = self._order()
            for rows, (ts, lt, tid, side, px, sz), line_of in self._chunks(
                    _trade_spec(self._symbol_col), _trade_alloc, _views, self._grow):
                t = Trades(ts_exchange=ts, ts_local=lt, price=px, size=sz, side=side,
                           trade_id=tid)
                keep = None if order is None else order.keep(order.pick(lt, ts), line_of)
                if keep is not None:
                    t = t.take(keep)
                self.stats["rows"] += len(t)
                yield t
        else:
            for rows, arrays, _ in self._chunks(self._snapshot_spec(), self._snapshot_alloc,
                                                self._snapshot_views, self._grow):
                self.stats["rows"] += rows
                yield TardisBookSnapshots(**dict(zip(_SNAP_FIELDS, arrays)))

    _grow = False

    def read(self):
        """The whole file as one container (parsed into arrays grown in place, without a final
        concatenation)."""
        cls = {"incremental_book_L2": BookDeltas, "trades": Trades,
               "book_snapshot": TardisBookSnapshots}[self.kind]
        self._grow = True
        try:
            return cls.concat(list(self))
        finally:
            self._grow = False

    def _order(self):
        """The :class:`TimeOrder` of ``time_order`` (None: no judging)."""
        return TimeOrder.of(self.errors, self.time_order, "local_timestamp", "timestamp")

    # incremental_book_L2 --------------------------------------------------------------------
    def _iter_l2(self):
        st = self.stats
        prev = None            # (ts, lt, snap, side, px, sz) of the chunk held back
        last_lt = None         # local_timestamp of the last row emitted before `prev`
        last_snap = False      # is_snapshot of that row
        seen_snapshot = False
        order = self._order()
        for _, (ts, lt, snap, side, px, sz), line_of in self._chunks(
                _l2_spec(self._symbol_col), _l2_alloc, _views, self._grow):
            cols = (ts, lt, snap.view(np.bool_), side, px, sz)
            if not seen_snapshot:
                snap = cols[2]
                if snap.any():
                    first = int(np.argmax(snap))
                    seen_snapshot = True
                else:
                    first = len(snap)
                if first:
                    st["dropped_before_snapshot"] += first
                    cols = tuple(c[first:] for c in cols)
                    line_of = line_of[first:]
            if order is not None and len(cols[0]):
                keep = order.keep(order.pick(cols[1], cols[0]), line_of, ~cols[2])
                if keep is not None:
                    cols = tuple(c[keep] for c in cols)
            if not len(cols[0]):
                continue
            if prev is not None:
                yield self._finish(prev, cols[1][0], last_lt, last_snap)
                last_lt, last_snap = prev[1][-1], bool(prev[2][-1])
            prev = cols
        if prev is not None:
            yield self._finish(prev, None, last_lt, last_snap)

    def _finish(self, cols, next_lt, prev_lt, prev_snap):
        ts, lt, snap, side, px, sz = cols
        n = len(ts)
        flags = np.where(snap, FLAG_SNAPSHOT, 0).astype(np.uint8)
        # batch end: the next row has another local_timestamp (or is_snapshot), or end of file
        end = np.ones(n, bool)
        end[:-1] = (lt[1:] != lt[:-1]) | (snap[1:] != snap[:-1])
        if next_lt is not None:
            end[-1] = next_lt != lt[-1]
        flags[end] |= FLAG_BATCH_END
        # snapshot start: a snapshot row after a non-snapshot row or a new snapshot time
        p_lt = np.empty(n, np.int64)
        p_snap = np.empty(n, bool)
        p_lt[1:], p_snap[1:] = lt[:-1], snap[:-1]
        p_lt[0] = prev_lt if prev_lt is not None else -1
        p_snap[0] = prev_snap if prev_lt is not None else False
        clear = snap & (~p_snap | (p_lt != lt))
        flags[clear] |= FLAG_CLEAR
        self.stats["snapshots"] += int(clear.sum())
        self.stats["rows"] += n
        return BookDeltas(ts_exchange=ts, ts_local=lt, side=side, price=px, size=sz,
                          update_id=np.full(n, -1, np.int64), flags=flags)

    # book_snapshot_N ---------------------------------------------------------------------------
    def _snapshot_spec(self):
        """timestamp, local_timestamp, then each level column of the header in its order:
        prices > 0 (empty -> NaN), amounts >= 0 (empty -> 0); other columns skipped."""
        spec = [column("exchange", SKIP), self._symbol_col, _time("timestamp"),
                _time("local_timestamp")]
        self._snap_slots = []
        for name in self.columns[4:]:
            m = _SNAP_RE.match(name)
            if m is None or int(m[2]) >= self.levels:
                spec.append(column(name, SKIP))
                self._snap_slots.append(None)
            elif m[3] == "price":
                spec.append(column(name, FLOAT, positive=True, empty=np.nan))
                self._snap_slots.append((f"{m[1][:3]}_px", int(m[2])))
            else:
                spec.append(column(name, FLOAT, nonneg=True, empty=0.0))
                self._snap_slots.append((f"{m[1][:3]}_sz", int(m[2])))
        return spec

    def _snapshot_alloc(self, cap):
        return ([np.empty(cap, np.int64), np.empty(cap, np.int64)]
                + [np.empty((cap, self.levels)) for _ in _SNAP_FIELDS[2:]])

    def _snapshot_views(self, arrays, r):
        lv = dict(zip(_SNAP_FIELDS[2:], arrays[2:]))
        return [None, None, arrays[0][r:], arrays[1][r:]] + [
            None if s is None else lv[s[0]][r:, s[1]] for s in self._snap_slots]


_SNAP_FIELDS = ("ts_exchange", "ts_local", "ask_px", "ask_sz", "bid_px", "bid_sz")


def _l2_alloc(cap):
    return [np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8),
            np.empty(cap, np.int8), np.empty(cap), np.empty(cap)]


def _trade_alloc(cap):
    return [np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64),
            np.empty(cap, np.int8), np.empty(cap), np.empty(cap)]


def _views(arrays, r):
    """Tokenizer outputs (exchange and symbol skipped) from row ``r``."""
    return [None, None] + [a[r:] for a in arrays]


def read_tardis(path: str | os.PathLike[str],
                **kwargs: Any) -> BookDeltas | Trades | TardisBookSnapshots:
    """Whole-file convenience: ``TardisReader(path, **kwargs).read()``."""
    return TardisReader(path, **kwargs).read()


def iter_tardis(path: str | os.PathLike[str],
                **kwargs: Any) -> Iterator[BookDeltas | Trades | TardisBookSnapshots]:
    """Chunked reading: ``iter(TardisReader(path, **kwargs))``."""
    return iter(TardisReader(path, **kwargs))
