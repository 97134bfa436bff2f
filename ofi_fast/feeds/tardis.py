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
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    ErrorLog,
    LineBlocks,
    arrays_class,
    open_binary,
)
from ofi_fast.feeds._l2 import FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT, BookDeltas, Trades

L2_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side",
              "price", "amount"]
TRADE_COLUMNS = ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price",
                 "amount"]

TardisBookSnapshots = arrays_class("TardisBookSnapshots", {
    "ts_exchange": np.int64, "ts_local": np.int64,
    "ask_px": np.float64, "ask_sz": np.float64, "bid_px": np.float64, "bid_sz": np.float64,
}, "Tardis book_snapshot_N rows: (n,) times and (n, N) level arrays (NaN price / 0 size = empty).")

_US = 1000
# Structured dtypes of numpy's C loadtxt fast path. String widths bound the fields: a longer
# value fails the fast path and the exact Python path reads the chunk instead.
_L2_DTYPE = np.dtype([("exchange", "S32"), ("symbol", "S64"), ("timestamp", "i8"),
                      ("local_timestamp", "i8"), ("is_snapshot", "S5"), ("side", "S3"),
                      ("price", "f8"), ("amount", "f8")])
_TRADE_DTYPE = np.dtype([("exchange", "S32"), ("symbol", "S64"), ("timestamp", "i8"),
                         ("local_timestamp", "i8"), ("id", "S64"), ("side", "S7"),
                         ("price", "f8"), ("amount", "f8")])


class TardisReader:
    """Read a Tardis CSV (kind detected from the header) in chunks of ``chunk_rows`` rows.

    ``kind`` is ``"incremental_book_L2"``, ``"trades"`` or ``"book_snapshot"``; iterating yields
    :class:`BookDeltas`, :class:`Trades` or :class:`TardisBookSnapshots`. ``on_error="raise"``
    raises :class:`~ofi_fast.errors.ParseError` with file and line; ``"skip"`` counts the row
    in ``errors``. ``stats`` counts rows (and snapshots / dropped rows for the book).
    """

    def __init__(self, path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, on_error: str = "raise"):
        self.path = str(path)
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.path, on_error)
        with open_binary(self.path) as f:
            header = f.readline().decode().strip().replace("\r", "")
        self.columns = header.split(",")
        if self.columns == L2_COLUMNS:
            self.kind = "incremental_book_L2"
        elif self.columns == TRADE_COLUMNS:
            self.kind = "trades"
        elif (self.columns[:4] == L2_COLUMNS[:4] and len(self.columns) > 4
              and (len(self.columns) - 4) % 4 == 0 and self.columns[4] == "asks[0].price"):
            self.kind = "book_snapshot"
            self.levels = (len(self.columns) - 4) // 4
            self._snap_cols = {c: j + 4 for j, c in enumerate(self.columns[4:])}
        else:
            raise ValueError(f"{self.path}: unknown Tardis CSV header {header!r}")

    # ---------------------------------------------------------------------------------------
    def _blocks(self):
        """(first line number, rows, raw block bytes) for each chunk of ``chunk_rows`` lines."""
        with open_binary(self.path) as f:
            lb = LineBlocks(f)
            lb.take(1)  # header
            while True:
                line0 = lb.line
                block, n = lb.take(self.chunk_rows)
                if not n:
                    return
                yield line0, n, block

    def _fields(self, line0, n, block):
        """Slow path: split fields with Python, reporting rows with a wrong column count."""
        ncol = len(self.columns)
        rows, keep = [], np.ones(n, bool)
        for i, ln in enumerate(block.split(b"\n")[:n]):
            parts = ln.split(b",")
            if len(parts) != ncol:
                keep[i] = False
                self.errors.bad(line0 + i, f"{len(parts)} columns, expected {ncol}")
            else:
                rows.extend(parts)
        return int(keep.sum()), rows, keep

    def _chunk(self, line0, n, block, convert, fields_convert, dtype):
        """Fast path: numpy's C ``loadtxt`` with a structured dtype; on any failure the exact
        row-by-row path, which names the bad line."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                a = np.loadtxt(io.BytesIO(block), delimiter=",", dtype=dtype, ndmin=1,
                               comments=None, quotechar=None)
            if len(a) == n:
                return convert([a[name] for name in dtype.names], n)
        except (ValueError, TypeError, Warning):
            pass
        m, fields, keep = self._fields(line0, n, block)
        return self._convert(line0, m, fields, keep, fields_convert)

    def _convert(self, line0, n, fields, keep, convert):
        """Vectorised conversion; on failure, locate the bad rows one by one."""
        ncol = len(self.columns)
        try:
            return convert(fields, n)
        except ValueError:
            pass
        good = []
        lines = np.arange(line0, line0 + len(keep)) if keep is not None else \
            np.arange(line0, line0 + n)
        if keep is not None:
            lines = lines[keep]
        for i in range(n):
            row = fields[i * ncol:(i + 1) * ncol]
            try:
                convert(row, 1)
            except ValueError as exc:
                self.errors.bad(int(lines[i]), f"bad Tardis row ({exc}): {b','.join(row)[:80]!r}")
                continue
            good.extend(row)
        return convert(good, len(good) // ncol)

    def __iter__(self):
        self.stats = {"rows": 0, "snapshots": 0, "dropped_before_snapshot": 0,
                      "non_numeric_ids": 0}
        if self.kind == "incremental_book_L2":
            yield from self._iter_l2()
        elif self.kind == "trades":
            for line0, n, block in self._blocks():
                t = self._chunk(line0, n, block, self._trades_cols, self._trades,
                                _TRADE_DTYPE)
                self.stats["rows"] += len(t)
                yield t
        else:
            for line0, n, block in self._blocks():
                m, fields, keep = self._fields(line0, n, block)
                s = self._convert(line0, m, fields, keep, self._snapshots)
                self.stats["rows"] += len(s)
                yield s

    def read(self):
        """The whole file as one container."""
        cls = {"incremental_book_L2": BookDeltas, "trades": Trades,
               "book_snapshot": TardisBookSnapshots}[self.kind]
        return cls.concat(list(self))

    # incremental_book_L2 --------------------------------------------------------------------
    @staticmethod
    def _l2(f, n):
        return TardisReader._l2_cols([f[j::8][:n] for j in range(8)], n)

    @staticmethod
    def _l2_cols(c, n):
        ts = np.asarray(c[2]).astype(np.int64) * _US
        lt = np.asarray(c[3]).astype(np.int64) * _US
        snap_s = np.asarray(c[4])
        snap = snap_s == b"true"
        if not (snap | (snap_s == b"false")).all():
            raise ValueError("is_snapshot not true/false")
        side_s = np.asarray(c[5])
        bid = side_s == b"bid"
        if not (bid | (side_s == b"ask")).all():
            raise ValueError("side not bid/ask")
        px = np.asarray(c[6]).astype(np.float64)
        sz = np.asarray(c[7]).astype(np.float64)
        if not ((px > 0) & (px < np.inf)).all() or not ((sz >= 0) & (sz < np.inf)).all():
            raise ValueError("price not > 0 or amount not >= 0 (or not finite)")
        return ts, lt, snap, np.where(bid, 1, -1).astype(np.int8), px, sz

    def _iter_l2(self):
        st = self.stats
        prev = None            # (ts, lt, snap, side, px, sz) of the chunk held back
        last_lt = None         # local_timestamp of the last row emitted before `prev`
        last_snap = False      # is_snapshot of that row
        seen_snapshot = False
        for line0, n, block in self._blocks():
            cols = self._chunk(line0, n, block, self._l2_cols, self._l2, _L2_DTYPE)
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

    # trades -----------------------------------------------------------------------------------
    def _trades(self, f, n):
        return self._trades_cols([f[j::8][:n] for j in range(8)], n)

    def _trades_cols(self, c, n):
        ts = np.asarray(c[2]).astype(np.int64) * _US
        lt = np.asarray(c[3]).astype(np.int64) * _US
        ids = np.asarray(c[4])
        try:
            tid = ids.astype(np.int64)
        except ValueError:
            tid = np.array([int(x) if x.isdigit() else -1 for x in ids], np.int64)
            self.stats["non_numeric_ids"] += int((tid == -1).sum())
        side_s = np.asarray(c[5])
        side = np.zeros(n, np.int8)
        side[side_s == b"buy"] = 1
        side[side_s == b"sell"] = -1
        if not ((side != 0) | (side_s == b"unknown")).all():
            raise ValueError("side not buy/sell/unknown")
        px = np.asarray(c[6]).astype(np.float64)
        sz = np.asarray(c[7]).astype(np.float64)
        if not ((px > 0) & (px < np.inf)).all() or not ((sz >= 0) & (sz < np.inf)).all():
            raise ValueError("price not > 0 or amount not >= 0 (or not finite)")
        return Trades(ts_exchange=ts, ts_local=lt, price=px, size=sz, side=side, trade_id=tid)

    # book_snapshot_N ---------------------------------------------------------------------------
    def _snapshots(self, f, n):
        ncol = len(self.columns)
        ts = np.array(f[2::ncol][:n]).astype(np.int64) * _US
        lt = np.array(f[3::ncol][:n]).astype(np.int64) * _US
        out = {}
        for side in ("asks", "bids"):
            for k, name in (("price", "px"), ("amount", "sz")):
                cols = []
                for i in range(self.levels):
                    j = self._snap_cols[f"{side}[{i}].{k}"]
                    a = np.array(f[j::ncol][:n])
                    a = np.where(a == b"", b"nan" if k == "price" else b"0", a)
                    cols.append(a.astype(np.float64))
                out[f"{side[:3]}_{name}"] = np.stack(cols, axis=1) if cols else np.empty((n, 0))
        return TardisBookSnapshots(ts_exchange=ts, ts_local=lt, **out)


def read_tardis(path, **kwargs):
    """Whole-file convenience: ``TardisReader(path, **kwargs).read()``."""
    return TardisReader(path, **kwargs).read()


def iter_tardis(path, **kwargs):
    """Chunked reading: ``iter(TardisReader(path, **kwargs))``."""
    return iter(TardisReader(path, **kwargs))
