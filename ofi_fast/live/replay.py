"""A local Binance for tests and benchmarks: a recording served on 127.0.0.1 in the exchange's
wire format (combined-stream websocket + the REST depth endpoint), with its original timing
accelerated, and faults on request.

``async with ReplayExchange(path, speed=100) as ex:`` then connect
``BinanceStream(symbol, market, ws_url=ex.ws_url, rest_url=ex.rest_url)``.

- The replay starts at the first connection and runs on by itself, as an exchange does:
  messages sent while no client is connected are lost to it.
- The REST snapshot: the recording's own snapshot, answered once the replay has passed its
  line (a snapshot reflects the book when it is taken); after that, a snapshot of the
  exchange's book at the current position (the recording's book rebuilt by
  :class:`~ofi_fast.feeds.binance.BinanceSync`, every level), with a ``lastUpdateId`` that the
  next diff straddles by the market's rule (spot: the last diff's ``u``; USD-M: the next
  diff's ``U``).
- Faults, by the recording's line numbers (1-based): ``skip`` (never sent: a sequence gap),
  ``duplicate`` (sent twice), ``close_at`` (the connection is closed after that line, once
  per entry), ``silent_at`` (from that line on, nothing is sent to the connection of the
  moment; it stays open; a new connection gets the stream again), ``garbage_at`` (a malformed
  message is sent before that line).
- ``stop_at``: the last line served; ``sent`` counts messages sent, ``lag_ns`` the largest
  delay of a send behind its schedule (the replay's own lateness).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from http import HTTPStatus
from typing import Iterable
from urllib.parse import parse_qs

from ofi_fast.feeds._common import ErrorLog
from ofi_fast.feeds._l2 import FLAG_CLEAR, BookDeltas, Columns, Quotes, Trades
from ofi_fast.feeds._recorded import loads, recorded_messages, split_line
from ofi_fast.feeds._common import LineBlocks, open_binary
from ofi_fast.feeds.binance import BinanceSync

__all__ = ["ReplayExchange", "read_lines"]


def read_lines(path, stop_at=None):
    """(line number, local ns, raw JSON bytes) of a ``<local ns> <json>`` recording."""
    out = []
    errors = ErrorLog(str(path), "raise")
    with open_binary(str(path)) as f:
        for no, line in LineBlocks(f, errors=errors).lines():
            if stop_at is not None and no > stop_at:
                break
            if not line.strip():
                continue
            ts, body = split_line(line)
            if ts is None:
                continue
            out.append((no, ts, bytes(body).strip()))
    return out


class ReplayExchange:
    """See the module docstring."""

    def __init__(self, path: str | os.PathLike[str], *, speed: float = 100.0,
                 skip: Iterable[int] = (), duplicate: Iterable[int] = (),
                 close_at: Iterable[int] = (), silent_at: int | None = None,
                 garbage_at: Iterable[int] = (), stop_at: int | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 lines: list[tuple[int, int, bytes]] | None = None) -> None:
        self.path = str(path)
        self.lines = lines if lines is not None else read_lines(path, stop_at)
        self.speed = float(speed)
        self.skip, self.duplicate = set(skip), set(duplicate)
        self.close_at, self.garbage_at = set(close_at), set(garbage_at)
        self.silent_at = silent_at
        self.host, self._port = host, port
        self.port = port
        self.ws_url = self.rest_url = ""
        self.pos = 0                        # index of the next line to send
        self.sent = 0
        self.lag_ns = 0
        self.connections = 0
        self.snapshots_served = 0
        self.done = asyncio.Event()
        self._conn = None
        self._silenced = None
        self._snap_idx = next((i for i, (_, _, b) in enumerate(self.lines)
                               if b.startswith(b'{"lastUpdateId"')), None)
        self._served_recorded = False
        first = next((b for _, _, b in self.lines if b'"s":"' in b), None)
        self.symbol = (first.split(b'"s":"', 1)[1].split(b'"', 1)[0].decode()
                       if first is not None else None)
        self._producer = None
        self._server = None
        # the exchange's book, rebuilt lazily up to the replay position
        self._sync = BinanceSync(on_gap="resync")
        self._book = {1: {}, -1: {}}
        self._book_pos = 0
        self._passed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> "ReplayExchange":
        from websockets.asyncio.server import serve
        self._server = await serve(self._handler, self.host, self._port,
                                   process_request=self._http, compression=None,
                                   max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://{self.host}:{self.port}"
        self.rest_url = f"http://{self.host}:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            self._producer.cancel()
            try:
                await self._producer
            except (asyncio.CancelledError, Exception):
                pass
        self._server.close()
        await self._server.wait_closed()

    # -- websocket --------------------------------------------------------------------------
    async def _handler(self, ws):
        self.connections += 1
        self._conn = ws
        if self._producer is None:
            self._producer = asyncio.ensure_future(self._produce())
        try:
            await ws.wait_closed()
        finally:
            if self._conn is ws:
                self._conn = None

    async def _produce(self):
        lines = self.lines
        t0 = lines[0][1] if lines else 0
        start = time.perf_counter_ns()
        speed = self.speed
        for i, (no, ts, body) in enumerate(lines):
            due = start + int((ts - t0) / speed)
            now = time.perf_counter_ns()
            if due - now > 1_000_000:
                await asyncio.sleep((due - now) / 1e9)
            else:
                self.lag_ns = max(self.lag_ns, now - due)
            self.pos = i + 1
            if i == self._snap_idx:
                self._passed.set()
                continue
            ws = self._conn
            if self.silent_at is not None and no >= self.silent_at and self._silenced is None:
                self._silenced = ws
            if ws is None or ws is self._silenced or no in self.skip:
                continue
            try:
                if no in self.garbage_at:
                    await ws.send(b'{"stream":"x","data":{"e":"depthUpdate",', text=True)
                await ws.send(body, text=True)
                self.sent += 1
                if no in self.duplicate:
                    await ws.send(body, text=True)
                    self.sent += 1
                if no in self.close_at:
                    self.close_at.discard(no)
                    self._conn = None
                    await ws.close()
            except Exception:               # the client went away: the exchange goes on
                if self._conn is ws:
                    self._conn = None
        self._passed.set()
        self.done.set()

    # -- REST -------------------------------------------------------------------------------
    async def _http(self, connection, request):
        path, _, query = request.path.partition("?")
        if not path.endswith("/depth"):
            return None                                   # a websocket handshake
        sym = parse_qs(query).get("symbol", [""])[0]
        if self.symbol is not None and sym != self.symbol:
            return connection.respond(HTTPStatus.BAD_REQUEST,
                                      '{"code":-1121,"msg":"Invalid symbol."}')
        if self._snap_idx is not None and not self._served_recorded:
            await self._passed.wait()
            self._served_recorded = True
            body = self.lines[self._snap_idx][2].decode()
        else:
            body = json.dumps(self._snapshot_now())
        self.snapshots_served += 1
        return connection.respond(HTTPStatus.OK, body)

    def _snapshot_now(self):
        """The book at the replay position, with a lastUpdateId the next diff straddles."""
        depth, tr, qu = Columns(BookDeltas), Columns(Trades), Columns(Quotes)
        sync = self._sync
        last_e = None
        while self._book_pos < self.pos:
            no, ts, body = self.lines[self._book_pos]
            self._book_pos += 1
            msg = loads(body)
            data = msg.get("data", msg)
            sync.feed(no, ts, data, depth, tr, qu)
            for r in depth.rows:
                side, price, size, flags = r[2], r[3], r[4], r[6]
                if flags & FLAG_CLEAR:
                    self._book = {1: {}, -1: {}}
                if size == 0:
                    self._book[side].pop(price, None)
                elif price == price:
                    self._book[side][price] = size
            depth.rows.clear()
            tr.rows.clear()
            qu.rows.clear()
        for no, ts, body in self.lines[self.pos:]:     # the next diff
            if b'"depthUpdate"' in body:
                nxt = loads(body)
                nxt = nxt.get("data", nxt)
                break
        else:
            nxt = None
        for no, ts, body in reversed(self.lines[:self.pos]):
            if b'"depthUpdate"' in body:
                last_e = loads(body).get("data", {}).get("E")
                break
        if sync.market == "usdm" and nxt is not None:
            last_id = int(nxt["U"])
        else:
            last_id = int(sync.prev_u if sync.prev_u is not None else 0)
        out = {"lastUpdateId": last_id}
        if sync.market == "usdm" and last_e is not None:
            out["E"] = last_e
            out["T"] = last_e
        out["bids"] = [[repr(p), repr(q)] for p, q in sorted(self._book[1].items(), reverse=True)]
        out["asks"] = [[repr(p), repr(q)] for p, q in sorted(self._book[-1].items())]
        return out
