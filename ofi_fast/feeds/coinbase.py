"""Coinbase (Pro / Exchange) WebSocket captures: ``level2`` snapshot + ``l2update`` -> price-level
deltas; ``match`` / ``last_match`` -> trades.

Messages (Coinbase Exchange WebSocket docs, "level2" and "matches" channels): ``snapshot``
(``bids`` / ``asks`` as ``[price, size]``, no time), ``l2update`` (``changes`` as
``[side, price, new size]``, side ``buy`` = bid, size ``"0"`` deletes; ``time`` ISO-8601 UTC),
``match`` (``side`` is the **maker** order's side, so ``"sell"`` = buyer-initiated, +1).
``last_match`` is the most recent trade before the subscription: it is returned as a trade too
and counted apart (``stats["last_match"]``). ``ticker`` carries no sizes and is only counted.

Per product (``product=``, default the first one with a book or trade message; others counted in
``stats["other_product"]``). ``l2update`` before the product's snapshot are dropped and counted
(``stats["before_snapshot"]``). Snapshot rows have ``ts_exchange`` = NO_TIME; ``update_id`` = -1
(level2 has no sequence id); trades' ``trade_id`` = Coinbase ``trade_id``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, NamedTuple

from ofi_fast.errors import ParseError
from ofi_fast.feeds._common import (
    DEFAULT_CHUNK_ROWS,
    NO_TIME,
    ErrorLog,
    TimeOrder,
    check_time_order,
    json_int,
)
from ofi_fast.feeds._l2 import (
    FLAG_BATCH_END,
    FLAG_CLEAR,
    FLAG_SNAPSHOT,
    BookDeltas,
    Columns,
    Trades,
)
from ofi_fast.feeds._recorded import iso_to_ns, recorded_messages

class CoinbaseChunk(NamedTuple):
    """One chunk of a Coinbase capture (one product): level2 BookDeltas and match Trades."""

    depth: BookDeltas
    trades: Trades

_INF = float("inf")
_SIDE = {"buy": 1, "sell": -1}


def _num(s, positive):
    v = float(s)
    if not ((v > 0) if positive else (v >= 0)) or not v < _INF:
        raise ValueError(f"bad {'price' if positive else 'size'} {s!r}")
    return v


class CoinbaseReader:
    """Read one product's level2 book and trades from a Coinbase capture; see the module doc.

    ``time_order``: ``"local"`` (the recorder's receive time) or ``"exchange"`` (the
    ``l2update``'s ``time``): an ``l2update`` earlier on that clock than the one before it is
    a malformed message (``ParseError`` naming file and line, or skipped whole and counted);
    snapshots are not judged; None (default): not judged here (:func:`ofi_fast.feeds.open`
    judges the clock of the bars).
    """

    def __init__(self, path, *, product=None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 on_error: str = "raise", time_order: str | None = None):
        self.path = str(path)
        self.time_order = check_time_order(time_order)
        self.product = product
        self.chunk_rows = int(chunk_rows)
        self.errors = ErrorLog(self.path, on_error)

    def __iter__(self):
        self.stats = st = {"lines": 0, "markers": 0, "snapshots": 0, "l2update": 0, "match": 0,
                           "last_match": 0, "ticker": 0, "other_type": 0, "other_product": 0,
                           "before_snapshot": 0}
        depth, trades = Columns(BookDeltas), Columns(Trades)
        synced = False
        order = TimeOrder.of(self.errors, self.time_order, "ts_local", "time")
        for no, ts_local, msg in recorded_messages(self.path, self.errors, st):
            st["lines"] += 1
            try:
                if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                    raise ValueError("not an object with a 'type'")
                typ = msg["type"]
                if typ not in ("snapshot", "l2update", "match", "last_match", "ticker"):
                    st["other_type"] += 1
                    continue
                prod = msg["product_id"]
                if self.product is None and typ != "ticker":
                    self.product = prod
                if prod != self.product:
                    st["other_product"] += 1
                    continue
                if typ == "ticker":
                    st["ticker"] += 1
                elif typ == "snapshot":
                    rows = ([(1, _num(p, True), _num(s, False)) for p, s in msg["bids"]]
                            + [(-1, _num(p, True), _num(s, False)) for p, s in msg["asks"]])
                    for i, (side, p, s) in enumerate(rows):
                        depth.append(NO_TIME, ts_local, side, p, s, -1, FLAG_SNAPSHOT
                                     | (FLAG_CLEAR if i == 0 else 0)
                                     | (FLAG_BATCH_END if i == len(rows) - 1 else 0))
                    synced = True
                    st["snapshots"] += 1
                elif typ == "l2update":
                    ts = iso_to_ns(msg["time"])
                    rows = [(_SIDE[sd], _num(p, True), _num(s, False)) for sd, p, s in
                            msg["changes"]]
                    if not synced:
                        st["before_snapshot"] += 1
                        continue
                    if order is not None and not order.ok(no, order.pick(ts_local, ts)):
                        continue
                    for i, (side, p, s) in enumerate(rows):
                        depth.append(ts, ts_local, side, p, s, -1,
                                     FLAG_BATCH_END if i == len(rows) - 1 else 0)
                    st["l2update"] += 1
                else:
                    maker = _SIDE[msg["side"]]
                    trades.append(iso_to_ns(msg["time"]), ts_local, _num(msg["price"], True),
                                  _num(msg["size"], False), -maker, json_int(msg["trade_id"]))
                    st[typ] += 1
            except ParseError:               # time order, under on_error="raise"
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                self.errors.bad(no, f"bad Coinbase message ({type(exc).__name__}: {exc})")
            if len(depth) >= self.chunk_rows or len(trades) >= self.chunk_rows:
                yield CoinbaseChunk(depth.flush(), trades.flush())
        if len(depth) or len(trades):
            yield CoinbaseChunk(depth.flush(), trades.flush())

    def read(self) -> CoinbaseChunk:
        """The whole capture (for the chosen product) as one :class:`CoinbaseChunk`."""
        parts = list(self)
        return CoinbaseChunk(BookDeltas.concat([p.depth for p in parts]),
                             Trades.concat([p.trades for p in parts]))


def read_coinbase(path: str | os.PathLike[str], **kwargs: Any) -> CoinbaseChunk:
    """Whole-file convenience: ``CoinbaseReader(path, **kwargs).read()``."""
    return CoinbaseReader(path, **kwargs).read()
