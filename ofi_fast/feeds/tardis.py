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
        """(first line number, list of field lists per row) for each chunk, fields split."""
        ncol = len(self.columns)
        with open_binary(self.path) as f:
            lb = LineBlocks(f)
            lb.take(1)  # header
            while True:
                line0 = lb.line
                block, n = lb.take(self.chunk_rows)
                if not n:
                    return
                fields = block.replace(b"\n", b",").split(b",")
                if len(fields) == ncol * n + 1 and block.count(b",") == (ncol - 1) * n:
                    yield line0, n, fields[:-1], None
                else:  # some row has the wrong number of columns: find it, row by row
                    rows, keep = [], np.ones(n, bool)
                    for i, ln in enumerate(block.split(b"\n")[:n]):
                        parts = ln.split(b",")
                        if len(parts) != ncol:
                            keep[i] = False
                            self.errors.bad(line0 + i, f"{len(parts)} columns, expected {ncol}")
                        else:
                            rows.extend(parts)
                    yield line0, int(keep.sum()), rows, keep

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
            for line0, n, fields, keep in self._blocks():
                t = self._convert(line0, n, fields, keep, self._trades)
                self.stats["rows"] += len(t)
                yield t
        else:
            for line0, n, fields, keep in self._blocks():
                s = self._convert(line0, n, fields, keep, self._snapshots)
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
        ts = np.array(f[2::8][:n]).astype(np.int64) * _US
        lt = np.array(f[3::8][:n]).astype(np.int64) * _US
        snap_s = np.array(f[4::8][:n])
        snap = snap_s == b"true"
        if not (snap | (snap_s == b"false")).all():
            raise ValueError("is_snapshot not true/false")
        side_s = np.array(f[5::8][:n])
        bid = side_s == b"bid"
        if not (bid | (side_s == b"ask")).all():
            raise ValueError("side not bid/ask")
        px = np.array(f[6::8][:n]).astype(np.float64)
        sz = np.array(f[7::8][:n]).astype(np.float64)
        if not ((px > 0) & (px < np.inf)).all() or not ((sz >= 0) & (sz < np.inf)).all():
            raise ValueError("price not > 0 or amount not >= 0 (or not finite)")
        return ts, lt, snap, np.where(bid, 1, -1).astype(np.int8), px, sz

    def _iter_l2(self):
        st = self.stats
        prev = None            # (ts, lt, snap, side, px, sz) of the chunk held back
        last_lt = None         # local_timestamp of the last row emitted before `prev`
        last_snap = False      # is_snapshot of that row
        seen_snapshot = False
        for line0, n, fields, keep in self._blocks():
            cols = self._convert(line0, n, fields, keep, self._l2)
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
        ts = np.array(f[2::8][:n]).astype(np.int64) * _US
        lt = np.array(f[3::8][:n]).astype(np.int64) * _US
        ids = np.array(f[4::8][:n])
        try:
            tid = ids.astype(np.int64)
        except ValueError:
            tid = np.array([int(x) if x.isdigit() else -1 for x in ids], np.int64)
            self.stats["non_numeric_ids"] += int((tid == -1).sum())
        side_s = np.array(f[5::8][:n])
        side = np.zeros(n, np.int8)
        side[side_s == b"buy"] = 1
        side[side_s == b"sell"] = -1
        if not ((side != 0) | (side_s == b"unknown")).all():
            raise ValueError("side not buy/sell/unknown")
        px = np.array(f[6::8][:n]).astype(np.float64)
        sz = np.array(f[7::8][:n]).astype(np.float64)
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
