"""LOBSTER reader: message + order-book files (any level count), plain or inside LOBSTER's zips.

Format (LOBSTER sample ReadMe, 2013; THEORY-DETAIL.md section 7.1):

- message file, 6 columns: time (seconds after midnight, local exchange time, up to 9 decimals),
  type (1 submission, 2 partial cancel, 3 delete, 4 visible execution, 5 hidden execution,
  6 cross trade, 7 trading halt), order id, size (shares), price (USD x 10000), direction
  (+1 buy limit order, -1 sell limit order);
- order-book file, 4 x LEVEL columns per row (ask price, ask size, bid price, bid size per
  level), row k = the book *after* message k. Empty levels carry the dummy prices
  -9999999999 (bid) / 9999999999 (ask) with size 0.

Package units: ``ts`` int64 ns since the Unix epoch (UTC), computed with exact integer arithmetic
from the decimal time string (no float rounding) plus the trading date and the exchange's time
zone; prices float64 USD (``/10000``); sizes float64 shares; sides int8.

Decisions (where the format leaves things open):

- Epoch conversion: ``midnight(date, tz) + seconds``. The UTC offset is that of the trading
  date at 12:00 local time (a session never straddles a DST switch). ``tz=None`` reads the
  times as UTC.
- ``side`` is the aggressor side for executions: an execution (type 4/5) of a *sell* limit order
  (direction -1) is *buyer*-initiated (+1), and vice versa. Type 6 (cross trade) has no
  aggressor: side 0. Non-trade rows have side 0; ``direction`` keeps the limit-order side.
  LOBSTER masks the direction of hidden executions (type 5) as buy ("type 5 side masked as
  BUY", LOBSTER help); their side is therefore reported as given (-1) but is unreliable.
- Type 7 rows are kept (never dropped): ``price`` is NaN and ``halt`` holds
  :data:`HALT_BEGIN` (price -1), :data:`HALT_QUOTING` (price 0, quoting resumes) or
  :data:`HALT_TRADING` (price 1, trading resumes); ``halt`` is 0 on every other row.
- Empty book levels: price NaN, size 0.
- Times with more than 9 decimals (one row of the AMZN level-5 sample reads
  ``43002.632812672004``) are rounded to the nearest ns, halves up, in integer arithmetic.

Parsing: the compiled tokenizer :mod:`ofi_fast._csv` reads each line straight into the typed
columns with the GIL released (time -> exact int64 ns plus midnight; prices ``float64(v) /
10000``, the same two IEEE operations as numpy's ``astype`` and divide; dummy prices -> NaN and
their sizes -> 0), validating as it goes: time >= 0, type 1..7, order id and sizes >= 0,
direction +-1, 6 message / 4 x LEVEL book columns. Halt rows (type 7, price -1/0/1) and the
time order are checked on the parsed chunk. Lines end in ``\n`` or ``\r\n``; an empty line is
malformed. A background thread inflates the next block of a zip member while the current one
is parsed (:class:`~ofi_fast.feeds._common.BlockPrefetcher`). ``_slow_message`` and
``LobsterReader._columns`` are the pure-Python exact path the tests compare with.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
from numpy.typing import NDArray

from ofi_fast._csv import INT, INT8, INT_F64, SCALED, Tokenizer, column
from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    ErrorLog,
    TokenSource,
    Arrays,
    uncompressed_size,
    decimal_to_int,
    open_binary,
)

SUBMIT, CANCEL, DELETE, EXECUTE_VISIBLE, EXECUTE_HIDDEN, CROSS, HALT = 1, 2, 3, 4, 5, 6, 7
HALT_BEGIN, HALT_QUOTING, HALT_TRADING = 1, 2, 3
DUMMY_ASK = 9_999_999_999
DUMMY_BID = -9_999_999_999
PRICE_SCALE = 10_000.0


@dataclasses.dataclass(frozen=True, eq=False)
class LobsterMessages(Arrays):
    """One chunk of LOBSTER events: message columns (n,) and book-after-event columns (n, LEVEL).
    Book columns have shape (n, 0) when no order-book file is read."""

    ts: NDArray[np.int64]  # ns since epoch, UTC
    type: NDArray[np.int8]  # 1..7
    order_id: NDArray[np.int64]  # LOBSTER order reference (0 for hidden executions)
    size: NDArray[np.float64]  # shares
    price: NDArray[np.float64]  # USD; NaN on type 7
    direction: NDArray[np.int8]  # +1 buy limit order, -1 sell limit order
    side: NDArray[np.int8]  # aggressor: +1 buyer-, -1 seller-initiated (types 4/5); 0 otherwise
    halt: NDArray[np.int8]  # 0, or HALT_BEGIN / HALT_QUOTING / HALT_TRADING on type 7
    ask_px: NDArray[np.float64]  # (n, LEVEL) USD, NaN = empty level
    ask_sz: NDArray[np.float64]  # (n, LEVEL) shares, 0 on an empty level
    bid_px: NDArray[np.float64]
    bid_sz: NDArray[np.float64]

    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "ts": np.dtype(np.int64),
        "type": np.dtype(np.int8),
        "order_id": np.dtype(np.int64),
        "size": np.dtype(np.float64),
        "price": np.dtype(np.float64),
        "direction": np.dtype(np.int8),
        "side": np.dtype(np.int8),
        "halt": np.dtype(np.int8),
        "ask_px": np.dtype(np.float64),
        "ask_sz": np.dtype(np.float64),
        "bid_px": np.dtype(np.float64),
        "bid_sz": np.dtype(np.float64),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class LobsterTrades(Arrays):
    """Executions (types 4/5, and 6 with side 0) with the aggressor side."""

    ts: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    side: NDArray[np.int8]
    type: NDArray[np.int8]
    order_id: NDArray[np.int64]

    DTYPES: ClassVar[dict[str, np.dtype]] = {
        "ts": np.dtype(np.int64),
        "price": np.dtype(np.float64),
        "size": np.dtype(np.float64),
        "side": np.dtype(np.int8),
        "type": np.dtype(np.int8),
        "order_id": np.dtype(np.int64),
    }

_POW10 = 10 ** np.arange(10, dtype=np.int64)
_MSG_COLS = ("ts", "type", "order_id", "size", "price", "direction")
_BOOK_COLS = ("ask_px", "ask_sz", "bid_px", "bid_sz")
_NAME_RE = re.compile(r"(?P<ticker>[^/\\_]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_"
                      r"(?P<kind>message|orderbook)_(?P<level>\d+)\.csv$")


def midnight_ns(date, tz="America/New_York") -> int:
    """Epoch nanoseconds of 00:00 local time on ``date`` (``datetime.date`` or ``"YYYY-MM-DD"``).

    The UTC offset is taken at 12:00 local time of that date (sessions never straddle a DST
    switch). ``tz=None`` means UTC. Exact integer result.
    """
    if isinstance(date, str):
        date = _dt.date.fromisoformat(date)
    days = (date - _dt.date(1970, 1, 1)).days
    offset = 0
    if tz is not None:
        from zoneinfo import ZoneInfo
        noon = _dt.datetime(date.year, date.month, date.day, 12, tzinfo=ZoneInfo(tz))
        offset = int(noon.utcoffset().total_seconds())
    return (days * 86_400 - offset) * 1_000_000_000


def _locate(path, orderbook):
    """Resolve (message source, orderbook source or None, date str or None, level or None).

    A source is ``(path, member)`` with member None for a plain file.
    """
    path = os.fspath(path)
    if path.endswith(".zip"):
        names = zipfile.ZipFile(path).namelist()
        msg = [n for n in names if _NAME_RE.search(n) and "_message_" in n]
        if len(msg) != 1:
            raise ValueError(f"{path}: expected one LOBSTER message file inside, found {msg}")
        m = _NAME_RE.search(msg[0])
        ob = msg[0].replace("_message_", "_orderbook_")
        ob_src = (path, ob) if (orderbook is not False and ob in names) else None
        return (path, msg[0]), ob_src, m["date"], int(m["level"])
    m = _NAME_RE.search(path)
    date = m["date"] if m else None
    level = int(m["level"]) if m else None
    if orderbook is None and m and m["kind"] == "message":
        cand = path[: m.start("kind")] + "orderbook" + path[m.end("kind"):]
        orderbook = cand if Path(cand).exists() else None
    ob_src = (os.fspath(orderbook), None) if orderbook not in (None, False) else None
    return (path, None), ob_src, date, level


class LobsterReader:
    """Iterate a LOBSTER day as :class:`LobsterMessages` chunks of at most ``chunk_rows`` rows.

    Parameters
    ----------
    path : message CSV, or a LOBSTER zip (message + order-book members are found inside and
        read in place, without unzipping to disk).
    orderbook : order-book CSV; default: the file named like the message file with
        ``orderbook`` for ``message`` if it exists. ``False``: messages only.
    date : trading date (``"YYYY-MM-DD"`` or ``datetime.date``); default: from the file name.
    tz : the exchange's time zone (LOBSTER times are New York local time); None = UTC.
    chunk_rows : bound on rows per chunk (memory is O(chunk_rows x LEVEL)).
    on_error : ``"raise"`` (default): :class:`~ofi_fast.errors.ParseError` with file and line;
        ``"skip"``: drop the malformed row (from both files, keeping them aligned) and count it
        in ``errors`` (an :class:`ErrorLog`).
    prefetch : inflate / read the next block in a background thread while this one is parsed
        (default). It uses a second core; :func:`ofi_fast.batch.run` turns it off, since every
        core there already runs a task of its own.

    After iteration, ``counts`` maps each event type to its number of rows and ``rows`` is the
    total. Rows are also checked: type in 1..7, direction +-1, time non-decreasing, book rows
    with 4 x LEVEL columns.
    """

    def __init__(self, path, orderbook=None, *, date=None, tz="America/New_York",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, on_error: str = "raise",
                 prefetch: bool = True):
        self.msg_src, self.ob_src, name_date, self.level = _locate(path, orderbook)
        self.prefetch = bool(prefetch)
        date = date if date is not None else name_date
        if date is None:
            raise ValueError(f"{path}: no trading date in the file name; pass date=")
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        self.date = date
        self.origin_ns = midnight_ns(date, tz)
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.msg_src[0] if self.msg_src[1] is None
                               else f"{self.msg_src[0]}:{self.msg_src[1]}", on_error)
        self.ob_errors = (ErrorLog(self.ob_src[0] if self.ob_src[1] is None
                                   else f"{self.ob_src[0]}:{self.ob_src[1]}", on_error)
                          if self.ob_src else None)
        self.counts = {t: 0 for t in range(1, 8)}
        self.rows = 0

    # -- iteration ---------------------------------------------------------------------------
    def _msg_tokenizer(self):
        """Message columns: exact ns time (+ midnight), type 1..7, id >= 0, size >= 0 -> float,
        price / 10000 -> float, direction +-1."""
        return Tokenizer([
            column("time", SCALED, digits=9, lo=0, offset=self.origin_ns),
            column("type", INT8, lo=1, hi=7),
            column("order_id", INT, lo=0),
            column("size", INT_F64, lo=0),
            column("price", INT_F64, divisor=PRICE_SCALE),
            column("direction", INT8, lo=-1, hi=1, nonzero=True),
        ])

    def _book_tokenizer(self):
        """Order-book columns per level: ask price (dummy -> NaN), ask size (0 on an empty
        level), bid price, bid size."""
        cols = []
        for i in range(self.level):
            cols += [column(f"ask_px[{i}]", INT_F64, lo=1, divisor=PRICE_SCALE, sentinel=DUMMY_ASK),
                     column(f"ask_sz[{i}]", INT_F64, lo=0, zero_after_sentinel=True),
                     column(f"bid_px[{i}]", INT_F64, lo=1, divisor=PRICE_SCALE,
                            sentinel=DUMMY_BID),
                     column(f"bid_sz[{i}]", INT_F64, lo=0, zero_after_sentinel=True)]
        return Tokenizer(cols)

    def __iter__(self):
        return self._chunks(grow=False)

    def _chunks(self, grow):
        """Yield one :class:`LobsterMessages` per ``chunk_rows`` lines; with ``grow`` a single
        one for the whole file (the arrays double in place, ``ndarray.resize`` = realloc, so
        the whole-file read never copies the parsed columns)."""
        self.counts = {t: 0 for t in range(1, 8)}
        self.rows = 0
        last_ts = None
        with open_binary(*self.msg_src) as fm:
            fo = open_binary(*self.ob_src) if self.ob_src else None
            ms = obs = None
            try:
                ms = TokenSource(fm, self._msg_tokenizer(), self.errors, prefetch=self.prefetch)
                if fo is not None:
                    obs = TokenSource(fo, None, self.ob_errors, prefetch=self.prefetch)
                    if self.level is None:
                        self.level = max(1, (obs.first_line().count(b",") + 1) // 4)
                    obs.tok = self._book_tokenizer()
                lv = self.level if obs is not None else 0
                while True:
                    line0 = ms.line
                    cap = self.chunk_rows
                    if grow:
                        est = ms.estimate_lines(uncompressed_size(*self.msg_src))
                        cap = max(1, est) if est is not None else max(cap, 1 << 16)
                    msg = {k: np.empty(cap, LobsterMessages.DTYPES[k]) for k in _MSG_COLS}
                    book = {k: np.empty((cap, lv)) for k in _BOOK_COLS}
                    n = on = nlines = 0
                    bad, obad = [], []
                    while True:
                        want = cap - max(n, on)
                        dn, dl, db = ms.read([msg[k][n:] for k in _MSG_COLS], want)
                        bad += [nlines + i for i in db]
                        if obs is not None:
                            oline0 = obs.line
                            outs = [book[k][on:, i] for i in range(lv) for k in _BOOK_COLS]
                            don, dol, dob = obs.read(outs, want)
                            del outs
                            if dol != dl:
                                self.ob_errors.on_error = "raise"
                                self.ob_errors.bad(oline0 + dol, f"order-book file has "
                                                   f"{nlines + dol} rows where the message "
                                                   f"file has {nlines + dl}")
                            obad += [nlines + i for i in dob]
                            on += don
                        n += dn
                        nlines += dl
                        if not grow or dl < want:
                            break
                        cap *= 2
                        for k in _MSG_COLS:
                            msg[k].resize(cap, refcheck=False)
                        for k in _BOOK_COLS:
                            book[k].resize((cap, lv), refcheck=False)
                    if nlines == 0:
                        break
                    # trim in place (realloc) so a chunk never holds more memory than its rows
                    for k in _MSG_COLS:
                        msg[k].resize(n, refcheck=False)
                    if obs is not None:
                        for k in _BOOK_COLS:
                            book[k].resize((on, lv), refcheck=False)
                    else:
                        book = {k: np.empty((n, 0)) for k in _BOOK_COLS}
                    keep = None
                    if bad or obad:  # drop a row skipped in either file from both
                        mkeep = np.ones(nlines, bool)
                        mkeep[bad] = False
                        okeep = np.ones(nlines, bool)
                        okeep[obad] = False
                        keep = mkeep & okeep
                        msg = {k: v[keep[mkeep]] for k, v in msg.items()}
                        if obs is not None:
                            book = {k: v[keep[okeep]] for k, v in book.items()}
                        else:
                            book = {k: np.empty((len(msg["ts"]), 0)) for k in _BOOK_COLS}
                    rows_line = (np.arange(nlines) if keep is None
                                 else np.flatnonzero(keep)) + line0
                    msg, book, rows_line = self._finish_messages(msg, book, rows_line)
                    ts = msg["ts"]
                    if len(ts):
                        back = np.flatnonzero(ts[1:] < ts[:-1])
                        if last_ts is not None and ts[0] < last_ts:
                            back = np.r_[-1, back]
                        if len(back):
                            self.errors.on_error = "raise"  # cannot be skipped consistently
                            self.errors.bad(int(rows_line[back[0] + 1]), "time goes backwards")
                        last_ts = int(ts[-1])
                    chunk = LobsterMessages(**msg, **book)
                    bc = np.bincount(chunk.type, minlength=8)
                    for t in range(1, 8):
                        self.counts[t] += int(bc[t])
                    self.rows += len(chunk)
                    yield chunk
            finally:
                for src in (ms, obs):  # stop the prefetch threads before the files close
                    if src is not None:
                        src.close()
                if fo is not None:
                    fo.close()

    def _finish_messages(self, msg, book, rows_line):
        """Aggressor side, halt codes (type 7: price -1/0/1 -> NaN price + halt code)."""
        typ, direction, price = msg["type"], msg["direction"], msg["price"]
        n = len(typ)
        side = np.zeros(n, np.int8)
        ex = (typ == EXECUTE_VISIBLE) | (typ == EXECUTE_HIDDEN)
        np.negative(direction, out=side, where=ex)
        halt = np.zeros(n, np.int8)
        # LOBSTER prices are > 0 on every row but type 7's codes: a price <= 0 is malformed
        nonpos = np.flatnonzero((typ != HALT) & ~(price > 0))
        if len(nonpos):
            for j in nonpos:
                self.errors.bad(int(rows_line[j]), f"price {price[j]!r} is not > 0 (type "
                                f"{int(typ[j])})", "price")
            keep = np.ones(n, bool)
            keep[nonpos] = False
            msg = {k: v[keep] for k, v in msg.items()}
            book = {k: v[keep] for k, v in book.items()}
            return self._finish_messages(msg, book, rows_line[keep])
        is_halt = np.flatnonzero(typ == HALT)
        if len(is_halt):
            raw = np.rint(price[is_halt] * PRICE_SCALE)
            bad = (raw < -1) | (raw > 1)
            if bad.any():
                drop = []
                for j in np.flatnonzero(bad):
                    self.errors.bad(int(rows_line[is_halt[j]]),
                                    f"type 7 (halt) row with price {int(raw[j])}, not -1/0/1")
                    drop.append(is_halt[j])
                keep = np.ones(n, bool)
                keep[drop] = False
                msg = {k: v[keep] for k, v in msg.items()}
                book = {k: v[keep] for k, v in book.items()}
                return self._finish_messages(msg, book, rows_line[keep])
            halt[is_halt] = (raw + 2).astype(np.int8)
            price[is_halt] = np.nan
        msg["side"] = side
        msg["halt"] = halt
        return msg, book, rows_line

    def read(self) -> "LobsterMessages":
        """The whole file as one :class:`LobsterMessages` (parsed into arrays grown in place,
        without a final concatenation)."""
        return LobsterMessages.concat(list(self._chunks(grow=True)))

    # -- pure-Python exact reference (tests compare the tokenizer's output with it) -------------
    def _columns(self, sec, frac, nd, vals):
        ts = self.origin_ns + sec * 1_000_000_000 + frac * _POW10[9 - nd]
        typ = vals[:, 0].astype(np.int8)
        direction = vals[:, 4].astype(np.int8)
        raw_px = vals[:, 3]
        is_halt = typ == HALT
        price = raw_px / PRICE_SCALE
        halt = np.zeros(len(typ), np.int8)
        if is_halt.any():
            price[is_halt] = np.nan
            halt[is_halt] = (raw_px[is_halt] + 2).astype(np.int8)
        side = np.zeros(len(typ), np.int8)
        ex = (typ == EXECUTE_VISIBLE) | (typ == EXECUTE_HIDDEN)
        side[ex] = -direction[ex]
        return {"ts": ts, "type": typ, "order_id": vals[:, 1].copy(),
                "size": vals[:, 2].astype(np.float64), "price": price,
                "direction": direction, "side": side, "halt": halt}

def _valid_messages(vals, nd):
    typ, direction = vals[:, 0], vals[:, 4]
    ok = (typ >= 1) & (typ <= 7) & ((direction == 1) | (direction == -1))
    ok &= (vals[:, 1] >= 0) & (vals[:, 2] >= 0)
    halt = typ == HALT
    ok[halt] &= (vals[halt, 3] >= -1) & (vals[halt, 3] <= 1)
    return ok


def _slow_message(ln: bytes):
    """[sec, frac, ndigits, type, id, size, price, direction] of one message line (exact)."""
    parts = ln.split(b",")
    if len(parts) != 6:
        raise ValueError(f"{len(parts)} columns, expected 6")
    ns = decimal_to_int(parts[0], 9)
    if ns < 0:
        raise ValueError("negative time")
    typ, oid, size, price, direction = (int(p) for p in parts[1:])
    row = [ns // 1_000_000_000, ns % 1_000_000_000, 9, typ, oid, size, price, direction]
    if not _valid_messages(np.array([row[3:]], dtype=np.int64), np.array([9]))[0]:
        raise ValueError("type not in 1..7, direction not +-1, negative id/size, "
                         "or halt price not in -1/0/1")
    return row


def read_lobster(path: str | os.PathLike[str], orderbook: str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> LobsterMessages:
    """Whole-file convenience: ``LobsterReader(path, orderbook, **kwargs).read()``."""
    return LobsterReader(path, orderbook, **kwargs).read()


def iter_lobster(path: str | os.PathLike[str], orderbook: str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> Iterator[LobsterMessages]:
    """Chunked reading: ``iter(LobsterReader(path, orderbook, **kwargs))``."""
    return iter(LobsterReader(path, orderbook, **kwargs))


def lobster_trades(msgs: "LobsterMessages", *, include_cross: bool = False) -> "LobsterTrades":
    """The executions of ``msgs`` as trades: types 4 and 5 (and 6, side 0, if ``include_cross``).

    ``side`` is the aggressor: execution of a sell limit order = buyer-initiated (+1).
    """
    m = (msgs.type == EXECUTE_VISIBLE) | (msgs.type == EXECUTE_HIDDEN)
    if include_cross:
        m |= msgs.type == CROSS
    return LobsterTrades(ts=msgs.ts[m], price=msgs.price[m], size=msgs.size[m],
                         side=msgs.side[m], type=msgs.type[m], order_id=msgs.order_id[m])
