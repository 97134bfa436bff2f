"""Bitstamp-style order-level (L3) events -> L2 price-level deltas; trade prints.

Orders file (``id,timestamp,exchange_timestamp,price,volume,action,direction``, plain or gzip;
the layout of ob-analytics' Bitstamp capture of ``live_orders_*``): ``action`` created / changed
/ deleted, ``direction`` bid / ask, times in ms (local, exchange), volume = the order's
*remaining* volume after the event.

Aggregation (one resting volume per order id; a level's size = the sum over its orders):

- created: the order rests at (side, price) with its volume;
- changed: the order's previous volume is taken off its previous level and the new volume put
  on the (possibly new) level — a partial fill or an amendment;
- deleted: the order's resting volume is taken off its level (the message's volume is not
  trusted: the stored one keeps the book consistent).

Each event yields one :class:`~ofi_fast.feeds.BookDeltas` row per level it changes (absolute new
level size; 0 when its last order leaves), the last with :data:`FLAG_BATCH_END`; an event that
changes nothing (e.g. a change to the same volume) yields no row and is counted in
``stats["no_change"]``. Sizes are summed exactly in integer units of ``10**-size_decimals`` (8
for BTC; volumes may be written like ``7.18e-06``, so each is read as a float and rounded to
the nearest unit), so a level whose orders all leave is exactly 0. ``update_id`` is the order id.
A change or delete of an unknown order is counted (``stats["unknown_order"]``) and ignored; a
create of a live id is treated as a change (``stats["duplicate_create"]``).

Stale snapshot orders: the file opens with a synthetic snapshot (creates sharing the first row's
exchange time) built from a REST book taken before the live stream began; an order filled or
cancelled in between is never deleted by the feed (ob-analytics' capture of 2026-05-02 holds an
ask at 78,333 that trades.csv shows filled and that only the file's closing synthetic rows
delete; left in, it crosses the book for the rest of the file). So when a live order arrives at
or through the price of an opening-snapshot order on the other side that no live event has named
yet, and still rests there when the next exchange millisecond begins (a taker's create and its
fills share one millisecond, and its makers are named by their own fill events), that snapshot
order is taken off, in a message of its own at that point (``stats["stale_removed"]``; its
level rows carry the live order's id). A later live change naming it puts it back with the changed
volume (``stats["stale_restored"]``); a later delete is then a no-op. Orders a live event has
named are never removed: a live taker crossing live makers is the feed's own transient state.

Trades file (``trade_id,timestamp,exchange_timestamp,price,amount,buy_order_id,sell_order_id,
side``): ``side`` is the aggressor (buy +1, sell -1).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

from ofi_fast.errors import ParseError
from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    MAX_LINE_BYTES,
    ErrorLog,
    LineBlocks,
    TimeOrder,
    ascii_int,
    check_time_order,
    cut,
    open_binary,
)
from ofi_fast.feeds._l2 import FLAG_BATCH_END, BookDeltas, Columns, Trades

def _ms_time(field: bytes) -> int:
    """A Bitstamp millisecond timestamp -> ns: ASCII digits, > 0, within int64 once in ns."""
    v = ascii_int(field) * _MS
    if not 0 < v < 2**63:
        raise ValueError(f"timestamp {cut(field)} is not a positive int64 in ns")
    return v


ORDER_COLUMNS = ["id", "timestamp", "exchange_timestamp", "price", "volume", "action",
                 "direction"]
TRADE_COLUMNS = ["trade_id", "timestamp", "exchange_timestamp", "price", "amount",
                 "buy_order_id", "sell_order_id", "side"]
_SIDE = {b"bid": 1, b"ask": -1, b"buy": 1, b"sell": -1}
_MS = 1_000_000
_INF = float("inf")


def _header(path, expected):
    with open_binary(path) as f:
        head = f.readline(MAX_LINE_BYTES)
    try:
        cols = head.decode("utf-8").strip().split(",")
    except UnicodeDecodeError as exc:
        raise ParseError(f"header is not UTF-8 ({exc.reason} at byte {exc.start}): {cut(head)}",
                         path=path, line=1) from None
    if cols != expected:
        raise ParseError(f"header {cut(','.join(cols))} is not {expected}", path=path, line=1)


def _order(errors, time_order):
    """The :class:`TimeOrder` of ``time_order`` on Bitstamp's columns (None: not judged)."""
    return TimeOrder.of(errors, time_order, "timestamp", "exchange_timestamp")


def _rows(path, errors, ncols, what):
    """``(line number, line, fields)`` of each data row with ``ncols`` fields; a row with
    another count is reported (``errors.bad``) and left out."""
    with open_binary(path) as f:
        for no, line in LineBlocks(f, errors=errors).lines():
            if no == 1 or not line:
                continue
            parts = line.split(b",")
            if len(parts) != ncols:
                errors.bad(no, f"bad {what} row ({len(parts)} columns, expected {ncols}): "
                           f"{cut(line)}")
                continue
            yield no, line, parts


class BitstampL3Reader:
    """Aggregate an L3 order-event file into L2 deltas; see the module docstring.

    ``time_order``: ``"local"`` (``timestamp``) or ``"exchange"`` (``exchange_timestamp``):
    an order event earlier on that clock than the one before it is a malformed row
    (``ParseError`` naming file, line and column, or skipped and counted before it touches the
    book); None (default): not judged here (:func:`ofi_fast.feeds.open` judges the bars' clock).
    The opening snapshot's rows are judged like the others: the capture's local clock stamps
    them after the live rows that follow, so ``"local"`` fails on it (the exchange clock is the
    default of ``feeds.open`` for Bitstamp).
    """

    def __init__(self, path, *, size_decimals: int = 8, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 on_error: str = "raise", time_order: str | None = None):
        self.path = str(path)
        _header(self.path, ORDER_COLUMNS)
        self.time_order = check_time_order(time_order)
        self.size_decimals = int(size_decimals)
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.path, on_error)

    def __iter__(self):
        self.stats = st = {"rows": 0, "created": 0, "changed": 0, "deleted": 0,
                           "unknown_order": 0, "duplicate_create": 0, "no_change": 0,
                           "snapshot_orders": 0, "stale_removed": 0, "stale_restored": 0}
        self.orders = orders = {}   # id -> (side, price, volume units)
        self.levels = levels = {}   # (side, price) -> [volume units, order count]
        scale = 10 ** self.size_decimals
        out = Columns(BookDeltas)
        app = out.append
        opening, snap_ts = True, None
        snap: set[int] = set()      # opening-snapshot orders no live event has named yet
        stale: dict[int, int] = {}  # id -> side, of snapshot orders removed as stale
        heads: dict[int, list] = {1: [], -1: []}   # per side, (price, id) with the best last

        pending: list[int] = []     # live orders that reached a snapshot order's price

        def take_off(o, touched):
            key = (orders[o][0], orders[o][1])
            lv = levels[key]
            lv[0] -= orders[o][2]
            lv[1] -= 1
            if key not in touched:
                touched.append(key)
            del orders[o]

        def drop_stale(side, price, touched):
            # opening-snapshot orders on the other side at or through a resting live order
            h = heads[-side]
            while h:
                p_o, o = h[-1]
                if o not in snap or o not in orders:
                    h.pop()
                elif (p_o <= price) if side == 1 else (p_o >= price):
                    h.pop()
                    snap.discard(o)
                    stale[o] = -side
                    take_off(o, touched)
                    st["stale_removed"] += 1
                else:
                    break

        def emit(touched, ts_ex, ts_local, oid):
            for i, key in enumerate(touched):
                lv = levels[key]
                size = lv[0] / scale if lv[1] else 0.0  # exact int / 10**d: correctly rounded
                if not lv[1]:
                    del levels[key]
                app(ts_ex, ts_local, key[0], key[1], size, oid,
                    FLAG_BATCH_END if i == len(touched) - 1 else 0)

        last_ex = None
        order = _order(self.errors, self.time_order)
        for no, line, parts in _rows(self.path, self.errors, 7, "order"):
            try:
                oid = ascii_int(parts[0])
                ts_local = _ms_time(parts[1])
                ts_ex = _ms_time(parts[2])
                price = float(parts[3])
                if not 0.0 <= price < _INF:  # the capture has 49 bids at 0.0 (tiny bids)
                    raise ValueError(f"bad price {parts[3]!r}")
                fvol = float(parts[4])  # may be written as 7.18e-06
                if not 0.0 <= fvol < _INF:
                    raise ValueError(f"bad volume {parts[4]!r}")
                vol = round(fvol * scale)
                if vol < 0:
                    raise ValueError(f"negative volume {parts[4]!r}")
                action = parts[5]
                side = _SIDE[parts[6]] if parts[6] in (b"bid", b"ask") else None
                if side is None:
                    raise ValueError(f"direction {parts[6]!r} not bid/ask")
                if action not in (b"created", b"changed", b"deleted"):
                    raise ValueError(f"action {action!r} not created/changed/deleted")
            except (ValueError, KeyError) as exc:
                self.errors.bad(no, f"bad order row ({exc}): {cut(line)}")
                continue
            if order is not None and not order.ok(no, order.pick(ts_local, ts_ex)):
                continue
            st["rows"] += 1
            st[action.decode()] += 1
            if opening:  # the opening snapshot: creates sharing the first exchange time
                if action == b"created" and snap_ts in (None, ts_ex):
                    snap_ts = ts_ex
                else:
                    opening = False
                    heads = {1: sorted((orders[o][1], o) for o in snap
                                       if orders[o][0] == 1),
                             -1: sorted(((orders[o][1], o) for o in snap
                                         if orders[o][0] == -1), reverse=True)}
            if pending and ts_ex != last_ex:
                # a new exchange millisecond: a live order still resting at or through a
                # snapshot order's price outlived any sweep (a taker's fills share its ms)
                rm: list = []
                for c in pending:
                    o = orders.get(c)
                    if o is not None:
                        drop_stale(o[0], o[1], rm)
                emit(rm, ts_ex, ts_local, pending[-1])
                pending.clear()
            last_ex = ts_ex
            old = orders.get(oid)
            if old is None and oid in stale:
                del stale[oid]
                if action == b"deleted":   # the exchange confirms it is gone
                    continue
                st["stale_restored"] += 1  # a live change names it: it was live after all
                action = b"created"
            if action == b"created" and old is not None:
                st["duplicate_create"] += 1
                action = b"changed"
            if action != b"created" and old is None:
                st["unknown_order"] += 1
                continue
            touched = []
            if old is not None:  # take the order off its level
                key = (old[0], old[1])
                lv = levels[key]
                lv[0] -= old[2]
                lv[1] -= 1
                touched.append(key)
                if not opening:
                    snap.discard(oid)      # a live event names it: not stale
            if action == b"deleted":
                del orders[oid]
            else:
                key = (side, price)
                lv = levels.get(key)
                if lv is None:
                    lv = levels[key] = [0, 0]
                lv[0] += vol
                lv[1] += 1
                orders[oid] = (side, price, vol)
                if key not in touched:
                    touched.append(key)
                elif old[2] == vol:
                    st["no_change"] += 1
                    continue
                if opening:
                    snap.add(oid)
                    st["snapshot_orders"] += 1
                else:
                    h = heads[-side]
                    if h and ((h[-1][0] <= price) if side == 1 else (h[-1][0] >= price)):
                        pending.append(oid)   # judged at the next exchange millisecond
            emit(touched, ts_ex, ts_local, oid)
            if len(out) >= self.chunk_rows:
                yield out.flush()
        if len(out):
            yield out.flush()

    def read(self):
        """The whole file as one :class:`BookDeltas`."""
        return BookDeltas.concat(list(self))


class BitstampTradesReader:
    """Bitstamp trades CSV -> :class:`~ofi_fast.feeds.Trades` (side = aggressor); ``errors``
    counts rows skipped under ``on_error="skip"``; ``time_order`` as for
    :class:`BitstampL3Reader` (a trade earlier than the one before it is a malformed row)."""

    def __init__(self, path, *, on_error: str = "raise", time_order: str | None = None):
        self.path = str(path)
        _header(self.path, TRADE_COLUMNS)
        self.errors = ErrorLog(self.path, on_error)
        self.time_order = check_time_order(time_order)

    def read(self):
        out = Columns(Trades)
        order = _order(self.errors, self.time_order)
        for no, _, p in _rows(self.path, self.errors, 8, "trade"):
            try:
                price, amount = float(p[3]), float(p[4])
                if not (0 < price < _INF and 0 <= amount < _INF):
                    raise ValueError("bad price or amount")
                if p[7] not in (b"buy", b"sell"):
                    raise ValueError(f"side {p[7]!r} not buy/sell")
                ts_ex, ts_local = _ms_time(p[2]), _ms_time(p[1])
                if order is None or order.ok(no, order.pick(ts_local, ts_ex)):
                    out.append(ts_ex, ts_local, price, amount, _SIDE[p[7]], ascii_int(p[0]))
            except ParseError:           # time order, under on_error="raise"
                raise
            except ValueError as exc:
                self.errors.bad(no, f"bad trade row ({exc})")
        return out.flush()


def read_bitstamp_trades(path: str | os.PathLike[str], **kwargs: Any) -> Trades:
    """Whole-file convenience: ``BitstampTradesReader(path, **kwargs).read()``."""
    return BitstampTradesReader(path, **kwargs).read()


def read_bitstamp_l3(path: str | os.PathLike[str], **kwargs: Any) -> BookDeltas:
    """Whole-file convenience: ``BitstampL3Reader(path, **kwargs).read()``."""
    return BitstampL3Reader(path, **kwargs).read()
