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
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    ErrorLog,
    LineBlocks,
    arrays_class,
    decimal_to_int,
    open_binary,
)

SUBMIT, CANCEL, DELETE, EXECUTE_VISIBLE, EXECUTE_HIDDEN, CROSS, HALT = 1, 2, 3, 4, 5, 6, 7
HALT_BEGIN, HALT_QUOTING, HALT_TRADING = 1, 2, 3
DUMMY_ASK = 9_999_999_999
DUMMY_BID = -9_999_999_999
PRICE_SCALE = 10_000.0

LobsterMessages = arrays_class("LobsterMessages", {
    "ts": np.int64,          # ns since epoch, UTC
    "type": np.int8,         # 1..7
    "order_id": np.int64,    # LOBSTER order reference (0 for hidden executions)
    "size": np.float64,      # shares
    "price": np.float64,     # USD; NaN on type 7
    "direction": np.int8,    # +1 buy limit order, -1 sell limit order
    "side": np.int8,         # aggressor: +1 buyer-, -1 seller-initiated (types 4/5); 0 otherwise
    "halt": np.int8,         # 0, or HALT_BEGIN / HALT_QUOTING / HALT_TRADING on type 7
    "ask_px": np.float64,    # (n, LEVEL) USD, NaN = empty level
    "ask_sz": np.float64,    # (n, LEVEL) shares, 0 on an empty level
    "bid_px": np.float64,
    "bid_sz": np.float64,
}, "One chunk of LOBSTER events: message columns (n,) and book-after-event columns (n, LEVEL)."
   " Book columns have shape (n, 0) when no order-book file is read.")

LobsterTrades = arrays_class("LobsterTrades", {
    "ts": np.int64, "price": np.float64, "size": np.float64, "side": np.int8,
    "type": np.int8, "order_id": np.int64,
}, "Executions (types 4/5, and 6 with side 0) with the aggressor side.")

_POW10 = 10 ** np.arange(10, dtype=np.int64)
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

    After iteration, ``counts`` maps each event type to its number of rows and ``rows`` is the
    total. Rows are also checked: type in 1..7, direction +-1, time non-decreasing, book rows
    with 4 x LEVEL columns.
    """

    def __init__(self, path, orderbook=None, *, date=None, tz="America/New_York",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, on_error: str = "raise"):
        self.msg_src, self.ob_src, name_date, self.level = _locate(path, orderbook)
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
    def __iter__(self):
        self.counts = {t: 0 for t in range(1, 8)}
        self.rows = 0
        last_ts = None
        with open_binary(*self.msg_src) as fm:
            fo = open_binary(*self.ob_src) if self.ob_src else None
            try:
                mb = LineBlocks(fm)
                ob = LineBlocks(fo) if fo is not None else None
                while True:
                    line0 = mb.line
                    block, n = mb.take(self.chunk_rows)
                    if ob is not None:
                        oline0 = ob.line
                        oblock, on = ob.take(self.chunk_rows)
                        if on != n:
                            self.ob_errors.on_error = "raise"
                            self.ob_errors.bad(oline0 + on, f"order-book file has {on} rows "
                                               f"where the message file has {n}")
                    if n == 0:
                        break
                    msg, keep = self._parse_messages(block, n, line0)
                    if ob is not None:
                        book, okeep = self._parse_book(oblock, n, oline0)
                        both = keep & okeep
                        if not both.all():  # drop a row skipped in either file from both
                            msg = {k: v[both[keep]] for k, v in msg.items()}
                            book = {k: v[both[okeep]] for k, v in book.items()}
                    else:
                        both = keep
                        book = {k: np.empty((len(msg["ts"]), 0)) for k in
                                ("ask_px", "ask_sz", "bid_px", "bid_sz")}
                    ts = msg["ts"]
                    if len(ts):
                        back = np.flatnonzero(np.diff(ts) < 0)
                        if last_ts is not None and ts[0] < last_ts:
                            back = np.r_[-1, back]
                        if len(back):
                            rows = np.flatnonzero(both)
                            self.errors.on_error = "raise"  # cannot be skipped consistently
                            self.errors.bad(line0 + int(rows[back[0] + 1]),
                                            "time goes backwards")
                        last_ts = int(ts[-1])
                    chunk = LobsterMessages(**msg, **book)
                    bc = np.bincount(chunk.type, minlength=8)
                    for t in range(1, 8):
                        self.counts[t] += int(bc[t])
                    self.rows += len(chunk)
                    yield chunk
            finally:
                if fo is not None:
                    fo.close()

    def read(self) -> "LobsterMessages":
        """The whole file as one :class:`LobsterMessages`."""
        return LobsterMessages.concat(list(self))

    # -- message parsing ---------------------------------------------------------------------
    def _parse_messages(self, block: bytes, n: int, line0: int):
        """Parse ``n`` message lines. Returns (columns of the good rows, keep mask (n,))."""
        fast = _fast_messages(block, n)
        if fast is not None:
            sec, frac, nd, vals = fast
            ok = _valid_messages(vals, nd)
            if ok.all():
                return self._columns(sec, frac, nd, vals), ok
        # slow path: line by line, exact, finds and reports the bad lines
        rows, keep = [], np.ones(n, dtype=bool)
        for i, ln in enumerate(block.split(b"\n")[:n]):
            try:
                rows.append(_slow_message(ln))
            except ValueError as exc:
                keep[i] = False
                self.errors.bad(line0 + i, f"bad LOBSTER message row {ln[:80]!r}: {exc}")
        a = np.array(rows, dtype=np.int64).reshape(-1, 8)
        return self._columns(a[:, 0], a[:, 1], a[:, 2], a[:, 3:]), keep

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

    # -- order-book parsing --------------------------------------------------------------------
    def _parse_book(self, block: bytes, n: int, line0: int):
        if self.level is None:
            first = block[: block.find(b"\n")]
            self.level = (first.count(b",") + 1) // 4
        ncol = 4 * self.level
        a = _fast_ints(block, n * ncol)
        keep = np.ones(n, dtype=bool)
        if a is None:
            rows = []
            for i, ln in enumerate(block.split(b"\n")[:n]):
                parts = ln.split(b",")
                try:
                    if len(parts) != ncol:
                        raise ValueError(f"{len(parts)} columns, expected {ncol}")
                    rows.append([int(p) for p in parts])
                except ValueError as exc:
                    keep[i] = False
                    self.ob_errors.bad(line0 + i, f"bad LOBSTER order-book row: {exc}")
            a = np.array(rows, dtype=np.int64).reshape(-1, ncol)
        else:
            a = a.reshape(n, ncol)
        ask_px = a[:, 0::4].astype(np.float64)
        bid_px = a[:, 2::4].astype(np.float64)
        ask_sz = a[:, 1::4].astype(np.float64)
        bid_sz = a[:, 3::4].astype(np.float64)
        ea = a[:, 0::4] == DUMMY_ASK
        eb = a[:, 2::4] == DUMMY_BID
        ask_px /= PRICE_SCALE
        bid_px /= PRICE_SCALE
        ask_px[ea] = np.nan
        ask_sz[ea] = 0.0
        bid_px[eb] = np.nan
        bid_sz[eb] = 0.0
        return {"ask_px": ask_px, "ask_sz": ask_sz, "bid_px": bid_px, "bid_sz": bid_sz}, keep


def _fast_ints(block: bytes, expect: int):
    """All comma/newline separated integers of ``block`` via numpy's C parser, or None."""
    text = block.replace(b"\n", b",")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            a = np.fromstring(text, dtype=np.int64, sep=",")
        except (DeprecationWarning, ValueError):
            return None
    return a if len(a) == expect else None


def _fast_messages(block: bytes, n: int):
    """Vectorised parse of ``n`` well-formed message lines, or None to fall back to the slow path.

    The time ``SSSSS.fffffffff`` is split at the dot into two integers; the number of decimals
    (from the byte positions of the dot and the next comma) scales the fraction to ns exactly.
    """
    raw = np.frombuffer(block, np.uint8)
    dots = np.flatnonzero(raw == 46)
    if len(dots) != n:
        return None
    commas = np.flatnonzero(raw == 44)
    if len(commas) != 5 * n:
        return None
    first_comma = commas[0::5]
    nls = np.flatnonzero(raw == 10)
    starts = np.empty(n, np.int64)
    starts[0] = 0
    starts[1:] = nls[:-1] + 1
    nd = first_comma - dots - 1
    if not ((dots > starts).all() and (nd >= 1).all() and (nd <= 18).all()
            and (commas[4::5] < nls).all()):
        return None
    vals = _fast_ints(block.replace(b".", b","), 7 * n)
    if vals is None:
        return None
    vals = vals.reshape(n, 7)
    frac = vals[:, 1]
    long = nd > 9
    if long.any():  # sub-ns digits: round to the nearest ns (halves up), exactly
        frac = frac.copy()
        scale = 10 ** (nd[long] - 9)
        frac[long] = (frac[long] + scale // 2) // scale
        nd = np.where(long, 9, nd)
    return vals[:, 0], frac, nd, vals[:, 2:]


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


def read_lobster(path, orderbook=None, **kwargs) -> "LobsterMessages":
    """Whole-file convenience: ``LobsterReader(path, orderbook, **kwargs).read()``."""
    return LobsterReader(path, orderbook, **kwargs).read()


def iter_lobster(path, orderbook=None, **kwargs):
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
