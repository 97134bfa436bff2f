"""Generic CSV / Parquet quotes and trades with user-given column names.

``read_quotes(path, columns={...})`` -> :class:`~ofi_fast.feeds.Quotes`;
``read_trades(path, columns={...})`` -> :class:`~ofi_fast.feeds.Trades`; ``iter_quotes`` /
``iter_trades`` yield chunks of at most ``chunk_rows`` rows.

``columns`` maps the package's field names to the file's column names. Quotes need ``ts``,
``bid_px``, ``bid_sz``, ``ask_px``, ``ask_sz``; trades need ``ts``, ``price``, ``size`` and
optionally ``side``. Both accept ``ts_local`` (a second clock, kept apart) and ``update_id`` /
``trade_id``. Missing optional columns give NO_TIME / -1 / side 0.

Timestamps: integers in ``ts_unit`` (``"ns"``, ``"us"``, ``"ms"``, ``"s"``) scaled to ns exactly
(``"auto"``: the unit is the one the first row's magnitude suggests for an epoch time, >= 1e17
ns, >= 1e14 us, >= 1e11 ms, else s, and every later row must lie in that unit's range: a time
of another magnitude is a malformed row, not a silent factor of 1000; ``ts_unit_found`` says
what was chosen, per time column);
decimal strings (``"1618678133.136361"``) scaled exactly; ISO-8601 strings (UTC unless an
offset is given) converted exactly; Parquet timestamp columns cast to ns. ``side`` values map
through ``side_map`` (default: buy/b/bid/1/true -> +1, sell/s/ask/-1/false -> -1,
unknown/empty/0 -> 0); anything else is malformed.

CSV: header row, ``delimiter`` (default ``,``), plain or gzip. Parquet (``.parquet`` / ``.pq``)
needs ``pyarrow`` (optional extra ``parquet``), imported only when a Parquet file is read.
Malformed rows raise :class:`~ofi_fast.errors.ParseError` with file and line (Parquet: row
number), or under ``on_error="skip"`` are counted in ``reader.errors``. So does a row whose
``ts`` is earlier than the row before it (files are in time order; skipped, such a row leaves
the following ones held to the last time kept).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

import numpy as np

from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    NO_TIME,
    ErrorLog,
    LineBlocks,
    TimeOrder,
    cut,
    decimal_to_int,
    open_binary,
)
from ofi_fast.errors import ParseError
from ofi_fast.feeds._l2 import Quotes, Trades
from ofi_fast.feeds._recorded import iso_to_ns

_UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DIGITS = {"ns": 0, "us": 3, "ms": 6, "s": 9}
DEFAULT_SIDE_MAP = {"buy": 1, "b": 1, "bid": 1, "1": 1, "+1": 1, "true": 1,
                    "sell": -1, "s": -1, "ask": -1, "-1": -1, "false": -1,
                    "unknown": 0, "": 0, "0": 0}

QUOTE_FIELDS = ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")
TRADE_FIELDS = ("ts", "price", "size")


class _Reader:
    fields: tuple = ()
    cls = None

    def __init__(self, path, columns: dict, *, ts_unit: str = "ns", side_map=None,
                 delimiter: str = ",", chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 on_error: str = "raise"):
        missing = [f for f in self.fields if f not in columns]
        if missing:
            raise ValueError(f"columns= must name the file's column for {missing}")
        if ts_unit not in _UNIT and ts_unit != "auto":
            raise ValueError(f"ts_unit must be 'auto' or one of {list(_UNIT)}, not {ts_unit!r}")
        self.path = str(path)
        self.columns = dict(columns)
        self.ts_unit = ts_unit
        self.ts_unit_found: dict[str, str] = {}   # ts_unit="auto": the unit per time column
        self.side_map = {str(k).lower(): int(v) for k, v in (side_map or DEFAULT_SIDE_MAP).items()}
        self.delimiter = delimiter.encode()
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.path, on_error)
        self.parquet = self.path.endswith((".parquet", ".pq"))

    # raw column chunks: dict field -> list/array of raw values, plus the first line number
    def _raw_chunks(self):
        if self.parquet:
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:  # pragma: no cover
                raise ImportError("reading Parquet needs pyarrow: pip install ofi_fast[parquet]"
                                  ) from exc
            pf = pq.ParquetFile(self.path)
            names = pf.schema_arrow.names
            self._check_header(names)
            row = 0
            import pyarrow as pa
            for batch in pf.iter_batches(batch_size=self.chunk_rows,
                                         columns=list(self.columns.values())):
                raw = {}
                for f, col in self.columns.items():
                    arr = batch.column(col)
                    if pa.types.is_timestamp(arr.type):
                        raw[f] = arr.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy(
                            zero_copy_only=False)
                        raw.setdefault("_ts_is_ns", set()).add(f)
                    else:
                        raw[f] = arr.to_numpy(zero_copy_only=False)
                yield row + 1, len(batch), raw
                row += len(batch)
            return
        with open_binary(self.path) as fh:
            lb = LineBlocks(fh, errors=self.errors)
            header, _ = lb.take(1)
            try:
                names = header.rstrip(b"\n").decode("utf-8").split(self.delimiter.decode())
            except UnicodeDecodeError as exc:
                raise ParseError(f"header is not UTF-8 ({exc.reason} at byte {exc.start}): "
                                 f"{cut(header)}", path=self.path, line=1) from None
            self._check_header(names)
            idx = {f: names.index(c) for f, c in self.columns.items()}
            ncol = len(names)
            while True:
                line0 = lb.line
                block, n = lb.take(self.chunk_rows)
                if not n:
                    return
                rows = [ln.split(self.delimiter) for ln in block.split(b"\n")[:n]]
                badcols = {i: f"{len(r)} columns, expected {ncol}"
                           for i, r in enumerate(rows) if len(r) != ncol}
                for i in badcols:  # placeholder keeps the columns aligned; reported in order
                    rows[i] = [b""] * ncol
                lines = np.arange(line0, line0 + n)
                raw = {f: [r[j] for r in rows] for f, j in idx.items()}
                if badcols:
                    raw["_badcols"] = badcols
                raw["_lines"] = lines
                yield line0, len(rows), raw

    def _check_header(self, names):
        missing = [c for c in self.columns.values() if c not in names]
        if missing:
            raise ParseError(f"columns {missing} not in the header {cut(str(names))}",
                             path=self.path, line=1)

    def _convert_all(self, raw, n):
        raise NotImplementedError

    def __iter__(self):
        self.rows = 0
        # times must not go backwards (file order): a row earlier than the one before it is a
        # malformed row naming its line and ``ts`` (under on_error="skip" it is dropped and
        # counted, and the next rows are held to the last time kept)
        order = TimeOrder(self.errors, self.columns["ts"])
        for line0, n, raw in self._raw_chunks():
            lines = raw.get("_lines", np.arange(line0, line0 + n))
            try:
                if "_badcols" in raw:
                    raise ValueError("rows with a wrong column count")
                out = self._convert_all(raw, n)
            except (ValueError, KeyError, TypeError, OverflowError):
                out, lines = self._convert_rowwise(raw, n, line0)
            keep = order.keep(out.ts_exchange, lines)
            if keep is not None:
                out = out.take(keep)
            self.rows += len(out)
            yield out

    def _convert_rowwise(self, raw, n, line0):
        """Convert row by row, reporting each malformed row; returns (rows kept, their
        lines)."""
        lines = raw.get("_lines", np.arange(line0, line0 + n))
        badcols = raw.pop("_badcols", {})
        good = []
        for i in range(n):
            if i in badcols:
                self.errors.bad(int(lines[i]), badcols[i])
                continue
            one = {k: (v[i:i + 1] if k not in ("_ts_is_ns",) else v) for k, v in raw.items()
                   if k != "_lines"}
            try:
                self._convert_all(one, 1)
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                self.errors.bad(int(lines[i]), f"bad row ({type(exc).__name__}: {exc})")
                continue
            good.append(i)
        if not good:
            return self.cls.concat([]), lines[:0]
        sub = {k: (np.asarray(v, dtype=object)[good] if k != "_ts_is_ns" else v)
               for k, v in raw.items() if k != "_lines"}
        return self._convert_all(sub, len(good)), lines[good]

    def read(self):
        """The whole file as one container."""
        return self.cls.concat(list(self))

    # helpers -----------------------------------------------------------------------------------
    def _ts(self, raw, f, n):
        if f not in raw:
            return np.full(n, NO_TIME, np.int64)
        if f in raw.get("_ts_is_ns", ()):
            return np.asarray(raw[f], np.int64)
        v = raw[f]
        a = np.asarray(v)
        if a.dtype == object:
            a = np.array([x.decode() if isinstance(x, bytes) else x for x in v])
        if a.dtype.kind in "iu":
            return _scaled_ts(a, self._unit(a, f), f)
        if a.dtype.kind == "f":
            raise ValueError("float timestamps are not exact; store integers or decimal strings")
        try:
            ints = a.astype(np.int64)
        except (ValueError, OverflowError):
            ints = None
        if ints is not None:
            _check_int_strings(a, f)
            return _scaled_ts(ints, self._unit(ints, f), f)
        out = np.empty(n, np.int64)
        for i, x in enumerate(a.tolist()):
            s = x.decode() if isinstance(x, bytes) else str(x)
            if "T" in s or ":" in s or "-" in s[1:]:
                v = iso_to_ns(s)
            else:
                v = _exact_ns(s, "s" if self.ts_unit == "auto" else self.ts_unit)
            if not 0 <= v < 2**63:
                raise ValueError(f"{f}: {cut(s)} is not a non-negative int64 time in ns")
            out[i] = v
        return out

    def _unit(self, v, f) -> int:
        """ns per unit of the integer times ``v`` of column ``f`` (see ``ts_unit="auto"``)."""
        if self.ts_unit != "auto":
            return _UNIT[self.ts_unit]
        if not len(v):
            return 1
        unit = self.ts_unit_found.get(f)
        if unit is None:
            unit = self.ts_unit_found[f] = _magnitude_unit(int(v[0]))
        lo, hi = _BANDS[unit]
        vmin, vmax = int(v.min()), int(v.max())
        if vmin < lo or vmax >= hi:
            x = vmin if vmin < lo else vmax
            raise ValueError(f"{f}: {x} is not an epoch time in {unit} as the first row's "
                             f"magnitude says (ts_unit='auto'); give the unit (ts_unit= / "
                             f"--ts-unit)")
        return _UNIT[unit]

    @staticmethod
    def _float(raw, f, n, *, positive=False, default=np.nan):
        if f not in raw:
            return np.full(n, default, np.float64)
        a = np.asarray(raw[f])
        if a.dtype == object:
            a = np.array([x.decode() if isinstance(x, bytes) else x for x in raw[f]])
        if a.dtype.kind in "SU":
            a = np.where(a == a.dtype.type(""), a.dtype.type("nan"), a)
        v = a.astype(np.float64)
        ok = np.isnan(v) | (((v > 0) if positive else (v >= 0)) & (v < np.inf))
        if not ok.all():
            raise ValueError(f"{f}: {'non-positive' if positive else 'negative'} or infinite value")
        return v

    @staticmethod
    def _int(raw, f, n):
        if f not in raw:
            return np.full(n, -1, np.int64)
        a = np.asarray(raw[f])
        if a.dtype == object:
            a = np.array([x.decode() if isinstance(x, bytes) else x for x in raw[f]])
        if a.dtype.kind in "SU":
            _check_int_strings(a, f)
        elif a.dtype.kind not in "iu":
            raise ValueError(f"{f}: integers expected, got {a.dtype}")
        return a.astype(np.int64)


_INT_LINES = re.compile(rb"[+-]?[0-9]+(?:\n[+-]?[0-9]+)*")


def _check_int_strings(a, f):
    """Integer strings with the tokenizer's grammar (ASCII ``[+-]?[0-9]+``: no ``_``, no
    spaces, no other scripts' digits, which numpy's ``astype(int64)`` would accept)."""
    b = a if a.dtype.kind == "S" else np.char.encode(a, "ascii")   # UnicodeError: ValueError
    if len(b) and not _INT_LINES.fullmatch(b"\n".join(b.tolist())):
        raise ValueError(f"{f}: not an integer (ASCII digits only)")


# integer epoch times by unit: [lo, hi) (ts_unit="auto"); "s" also takes small relative times
_BANDS = {"ns": (10**17, 2**63), "us": (10**14, 10**17), "ms": (10**11, 10**14),
          "s": (0, 10**11)}


def _magnitude_unit(x: int) -> str:
    """The unit an integer epoch time's magnitude suggests: >= 1e17 ns, >= 1e14 us, >= 1e11 ms,
    else s (1e11 s is the year 5138; 1e11 ms is 1973)."""
    return next(u for u, (lo, hi) in _BANDS.items() if lo <= x < hi) if x >= 0 else "s"


def _scaled_ts(v, unit: int, f):
    """int64 timestamps in ``unit`` -> ns: non-negative, and the product must fit in int64."""
    if len(v) and (v.min() < 0 or v.max() > np.iinfo(np.int64).max // unit):
        raise ValueError(f"{f}: a timestamp is negative or beyond int64 once in ns")
    return v.astype(np.int64) * unit


def _exact_ns(s: str, unit: str) -> int:
    """A decimal string in ``unit`` -> ns, exactly (digits below 1 ns rounded)."""
    return decimal_to_int(s, _DIGITS[unit])


class QuotesReader(_Reader):
    """Generic best-quote reader; see the module docstring."""

    fields = QUOTE_FIELDS
    cls = Quotes

    def _convert_all(self, raw, n):
        return Quotes(ts_exchange=self._ts(raw, "ts", n), ts_local=self._ts(raw, "ts_local", n),
                      bid_px=self._float(raw, "bid_px", n, positive=True),
                      bid_sz=self._float(raw, "bid_sz", n),
                      ask_px=self._float(raw, "ask_px", n, positive=True),
                      ask_sz=self._float(raw, "ask_sz", n),
                      update_id=self._int(raw, "update_id", n))


class TradesReader(_Reader):
    """Generic trade-print reader; see the module docstring."""

    fields = TRADE_FIELDS
    cls = Trades

    def _convert_all(self, raw, n):
        if "side" in raw:
            vals = raw["side"]
            side = np.array([self.side_map[(x.decode() if isinstance(x, bytes) else str(x))
                                           .strip().lower()] for x in vals], np.int8)
        else:
            side = np.zeros(n, np.int8)
        price = self._float(raw, "price", n, positive=True)
        size = self._float(raw, "size", n)
        if np.isnan(price).any() or np.isnan(size).any():
            raise ValueError("empty price or size")
        return Trades(ts_exchange=self._ts(raw, "ts", n), ts_local=self._ts(raw, "ts_local", n),
                      price=price, size=size, side=side, trade_id=self._int(raw, "trade_id", n))


def read_quotes(path: str | os.PathLike[str], columns: dict[str, str], **kwargs: Any) -> Quotes:
    """Whole-file convenience: ``QuotesReader(path, columns, **kwargs).read()``."""
    return QuotesReader(path, columns, **kwargs).read()


def read_trades(path: str | os.PathLike[str], columns: dict[str, str], **kwargs: Any) -> Trades:
    """Whole-file convenience: ``TradesReader(path, columns, **kwargs).read()``."""
    return TradesReader(path, columns, **kwargs).read()


def iter_quotes(path: str | os.PathLike[str], columns: dict[str, str],
                **kwargs: Any) -> Iterator[Quotes]:
    return iter(QuotesReader(path, columns, **kwargs))


def iter_trades(path: str | os.PathLike[str], columns: dict[str, str],
                **kwargs: Any) -> Iterator[Trades]:
    return iter(TradesReader(path, columns, **kwargs))
