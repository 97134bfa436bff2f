"""Tests of ofi_fast.feeds: real files (counts from ../shared/data/README.md), hand-made
malformed / gapped files, chunked == whole-file."""

import gzip
import json
import tempfile
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ofi_fast.feeds as F
from ofi_fast.errors import ChecksumError, ParseError, SequenceGapError
from ofi_fast.feeds.sources import InputError
from ofi_fast.feeds import binance as BN
from ofi_fast.feeds import lobster as L
from ofi_fast.feeds._l2 import FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT

from conftest import data_file

# ------------------------------------------------------------------------------------------------
# LOBSTER
# ------------------------------------------------------------------------------------------------

# README table: file -> (rows, level, counts of types 1/2/3/4/5)
LOBSTER_ZIPS = {
    "LOBSTER_SampleFile_AAPL_2012-06-21_1.zip": (118_497, 1, (54818, 252, 28437, 23658, 11332)),
    "LOBSTER_SampleFile_AMZN_2012-06-21_1.zip": (57_515, 1, (27845, 16, 18235, 8974, 2445)),
    "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip": (155_935, 5, (77381, 450, 66685, 8974, 2445)),
    "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip": (49_482, 1, (24368, 7, 13429, 7765, 3913)),
    "LOBSTER_SampleFile_GOOG_2012-06-21_5.zip": (112_673, 5, (54907, 16, 46072, 7765, 3913)),
    "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip": (147_916, 10, (71258, 19, 64961, 7765, 3913)),
}
AAPL_MSG = "AAPL_2012-06-21_34200000_57600000_message_10.csv"
# 2012-06-21 00:00 New York (EDT, UTC-4) = 1340236800 + 4 * 3600 s since the epoch
NY_MIDNIGHT_NS = 1_340_251_200 * 10**9


def _check_book_consistency(m):
    """Facts of the LOBSTER format that hold on every real file (THEORY-DETAIL 7.1)."""
    # a visible execution hits the best level on the executed order's side of the previous book
    ex = np.flatnonzero(m.type == L.EXECUTE_VISIBLE)
    ex = ex[ex > 0]
    best = np.where(m.direction[ex] == -1, m.ask_px[ex - 1, 0], m.bid_px[ex - 1, 0])
    np.testing.assert_array_equal(m.price[ex], best)
    # a hidden execution leaves the visible book unchanged
    h = np.flatnonzero(m.type == L.EXECUTE_HIDDEN)
    h = h[h > 0]
    for col in ("ask_px", "ask_sz", "bid_px", "bid_sz"):
        a = getattr(m, col)
        np.testing.assert_array_equal(a[h], a[h - 1])
    # aggressor = opposite of the executed limit order's direction; no side elsewhere
    trade = (m.type == 4) | (m.type == 5)
    np.testing.assert_array_equal(m.side[trade], -m.direction[trade])
    assert not m.side[~trade].any()
    # NaN exactly where size is 0 beyond the occupied levels; prices on the $0.01 grid
    for px, sz in ((m.ask_px, m.ask_sz), (m.bid_px, m.bid_sz)):
        assert (sz[np.isnan(px)] == 0).all()
        ok = px[~np.isnan(px)]
        np.testing.assert_allclose(np.round(ok * 100), ok * 100, atol=1e-6)
    assert (np.diff(m.ts) >= 0).all()
    assert (np.nanmin(m.ask_px[:, 0]) > 0) and (m.ask_px[:, 0] > m.bid_px[:, 0]).sum() > 0.99 * len(m)


@pytest.mark.parametrize("name", sorted(LOBSTER_ZIPS))
def test_lobster_zip_counts_match_readme(name):
    rows, level, counts = LOBSTER_ZIPS[name]
    r = F.LobsterReader(data_file("lobster", name), chunk_rows=50_000)
    m = r.read()
    assert len(m) == r.rows == rows
    assert r.level == level and m.ask_px.shape == (rows, level)
    assert tuple(r.counts[t] for t in (1, 2, 3, 4, 5)) == counts
    assert r.counts[6] == r.counts[7] == 0
    assert tuple(int((m.type == t).sum()) for t in (1, 2, 3, 4, 5)) == counts
    # session 09:30-16:00 New York: first message 34200.004-34200.017 s (README rounds), last 57599.3-57599.96
    t0 = (m.ts[0] - NY_MIDNIGHT_NS) / 1e9
    t1 = (m.ts[-1] - NY_MIDNIGHT_NS) / 1e9
    assert 34200.004 <= t0 <= 34200.018 and 57599.3 <= t1 <= 57599.97
    _check_book_consistency(m)
    assert r.errors.count == 0


def test_lobster_aapl_csv_slice():
    r = F.LobsterReader(data_file("lobster", AAPL_MSG))
    m = r.read()
    assert len(m) == 999 and m.ask_px.shape == (999, 10)
    assert (r.counts[1], r.counts[3], r.counts[4], r.counts[5]) == (471, 369, 98, 61)
    assert r.counts[2] == r.counts[6] == r.counts[7] == 0
    # row 1: 34200.004241176,1,16113575,18,5853300,1 -> buy submission of 18 @ 585.33,
    # and order-book row 1 shows bid 1 = 5853300 x 18
    assert m.ts[0] == NY_MIDNIGHT_NS + 34200_004241176
    # row 2 has 8 decimals ("34200.00426064"): the fraction is scaled exactly, not float-parsed
    assert m.ts[1] == NY_MIDNIGHT_NS + 34200_004260640
    assert (m.type[0], m.order_id[0], m.size[0], m.price[0], m.direction[0]) == (
        1, 16113575, 18.0, 585.33, 1)
    assert (m.bid_px[0, 0], m.bid_sz[0, 0]) == (585.33, 18.0)
    # 09:30:49.086 for the last row; no trailing newline in the file
    assert m.ts[-1] == NY_MIDNIGHT_NS + 34249_086375027
    _check_book_consistency(m)


@pytest.mark.parametrize("chunk_rows", [1, 7, 128, 998, 999, 5000])
def test_lobster_chunked_equals_whole(chunk_rows):
    path = data_file("lobster", AAPL_MSG)
    whole = F.read_lobster(path)
    chunks = list(F.iter_lobster(path, chunk_rows=chunk_rows))
    assert all(len(c) <= chunk_rows for c in chunks)
    assert len(chunks) == -(-999 // chunk_rows)
    joined = F.LobsterMessages.concat(chunks)
    for k, v in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)


def test_lobster_zip_chunked_equals_whole():
    path = data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_5.zip")
    whole = F.read_lobster(path)
    joined = F.LobsterMessages.concat(list(F.iter_lobster(path, chunk_rows=9_999)))
    for k, v in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)


def test_readers_without_prefetch_read_the_same_in_one_thread(monkeypatch):
    """``prefetch=False`` (what batch workers use) reads the same arrays as the block-ahead
    thread does, and starts no such thread (its starts are counted: a small file's thread can
    be over before the first chunk is seen, so liveness would be a race)."""
    from ofi_fast.feeds import _common
    started = []
    real = _common.BlockPrefetcher.__init__

    def counting(self, *a, **kw):
        started.append(1)
        real(self, *a, **kw)
    monkeypatch.setattr(_common.BlockPrefetcher, "__init__", counting)
    zpath = data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_5.zip")
    tpath = data_file("tardis", TARDIS_L2)
    for make in (lambda pf: F.LobsterReader(zpath, chunk_rows=9_999, prefetch=pf),
                 lambda pf: F.TardisReader(tpath, chunk_rows=500, prefetch=pf)):
        started.clear()
        ahead = list(make(True))
        assert started                            # the block-ahead thread was used
        started.clear()
        alone = list(make(False))
        assert not started
        assert len(ahead) == len(alone) > 1
        for a, b in zip(ahead, alone):
            for k, v in a.as_dict().items():
                np.testing.assert_array_equal(getattr(b, k), v, err_msg=k)


def test_lobster_fast_path_equals_exact_slow_path():
    """The vectorised parse equals the line-by-line exact decimal parse on the real file."""
    path = data_file("lobster", AAPL_MSG)
    r = F.LobsterReader(path, orderbook=False)
    m = r.read()
    lines = path.read_bytes().decode().splitlines()
    slow = np.array([L._slow_message(ln.encode()) for ln in lines], dtype=np.int64)
    exp = r._columns(slow[:, 0], slow[:, 1], slow[:, 2], slow[:, 3:])
    for k, v in exp.items():
        np.testing.assert_array_equal(getattr(m, k), v, err_msg=k)
    assert m.ask_px.shape == (999, 0)


def test_lobster_trades_aggressor():
    m = F.read_lobster(data_file("lobster", AAPL_MSG))
    t = F.lobster_trades(m)
    assert len(t) == 98 + 61
    # execution of a sell limit order (direction -1) is buyer-initiated (+1)
    sell_lo = m.direction[(m.type == 4) | (m.type == 5)] == -1
    np.testing.assert_array_equal(t.side == 1, sell_lo)


def test_lobster_sub_ns_digits_rounded(tmp_path):
    msg = ["34200.1234567894,1,1,1,1000000,1", "34200.1234567895,1,1,1,1000000,1",
           "34200.9999999999,1,1,1,1000000,1", "34201.5,1,1,1,1000000,1"]
    mp = _write(tmp_path, msg, [BOOK[1]] * 4)
    m = F.read_lobster(mp, tz=None)
    base = 1_583_107_200 * 10**9
    np.testing.assert_array_equal(m.ts - base, [34200_123456789, 34200_123456790,
                                                34201_000000000, 34201_500000000])
    # the slow path agrees
    assert [L._slow_message(x.encode())[:2] for x in msg[:3]] == [
        [34200, 123456789], [34200, 123456790], [34201, 0]]


def test_midnight_ns():
    assert F.midnight_ns("2012-06-21") == NY_MIDNIGHT_NS
    assert F.midnight_ns("2012-01-03") == (1_325_548_800 + 5 * 3600) * 10**9  # EST, UTC-5
    assert F.midnight_ns("2012-06-21", tz=None) == 1_340_236_800 * 10**9


# hand-made LOBSTER files -------------------------------------------------------------------------

MSG = [
    "34200.1,1,11,100,1000000,1",
    "34200.123456789,1,12,50,1000100,-1",
    "34200.2,7,0,0,-1,-1",
    "34200.3,7,0,0,0,-1",
    "34200.4,7,0,0,1,-1",
    "34200.5,4,12,20,1000100,-1",
    "34201,3,11,100,1000000,1",
]
BOOK = [
    "9999999999,0,1000000,100",
    "1000100,50,1000000,100",
    "1000100,50,1000000,100",
    "1000100,50,1000000,100",
    "1000100,50,1000000,100",
    "1000100,30,1000000,100",
    "1000100,30,-9999999999,0",
]


def _write(tmp_path, msg, book, date="2020-03-02", level=1, crlf=False, final_nl=True):
    nl = "\r\n" if crlf else "\n"
    mp = tmp_path / f"X_{date}_34200000_57600000_message_{level}.csv"
    bp = tmp_path / f"X_{date}_34200000_57600000_orderbook_{level}.csv"
    end = nl if final_nl else ""
    mp.write_text(nl.join(msg) + end)
    bp.write_text(nl.join(book) + end)
    return mp


@pytest.mark.parametrize("crlf,final_nl", [(False, True), (True, False)])
def test_lobster_handmade_halts_dummies_times(tmp_path, crlf, final_nl):
    mp = _write(tmp_path, MSG, BOOK, crlf=crlf, final_nl=final_nl)
    r = F.LobsterReader(mp, tz=None)
    m = r.read()
    base = 1_583_107_200 * 10**9  # 2020-03-02 00:00 UTC
    np.testing.assert_array_equal(m.ts - base, [34200_100000000, 34200_123456789, 34200_200000000,
                                                34200_300000000, 34200_400000000, 34200_500000000,
                                                34201_000000000])
    np.testing.assert_array_equal(m.type, [1, 1, 7, 7, 7, 4, 3])
    np.testing.assert_array_equal(m.halt, [0, 0, L.HALT_BEGIN, L.HALT_QUOTING, L.HALT_TRADING, 0, 0])
    assert np.isnan(m.price[2:5]).all() and m.price[5] == 100.01
    np.testing.assert_array_equal(m.side, [0, 0, 0, 0, 0, 1, 0])
    assert np.isnan(m.ask_px[0, 0]) and m.ask_sz[0, 0] == 0
    assert np.isnan(m.bid_px[6, 0]) and m.bid_sz[6, 0] == 0
    assert m.bid_px[0, 0] == 100.0
    assert r.counts[7] == 3
    # fast path (no halts / integer seconds) and slow path (this file) agree in chunks
    joined = F.LobsterMessages.concat(list(F.iter_lobster(mp, tz=None, chunk_rows=2)))
    for k, v in m.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)


@pytest.mark.parametrize("bad,reason", [
    ("34200.6,9,1,1,1000000,1", "type"),
    ("34200.6,1,1,1,1000000,0", "direction"),
    ("34200.6,1,1,1,1000000", "columns"),
    ("34200.6,1,1,x,1000000,1", "invalid"),
    ("34200.6.1,1,1,1,1000000,1", "decimal"),
    ("34200.,1,1,1,1000000,1,", "columns"),
    ("-34200.1,1,1,1,1000000,1", "negative"),
])
def test_lobster_malformed_message(tmp_path, bad, reason):
    msg = MSG[:6] + [bad] + MSG[6:]
    book = BOOK[:6] + [BOOK[5]] + BOOK[6:]
    mp = _write(tmp_path, msg, book)
    with pytest.raises(ParseError) as ei:
        F.read_lobster(mp)
    assert ei.value.line == 7 and mp.name in str(ei.value) and ":7:" in str(ei.value)
    r = F.LobsterReader(mp, on_error="skip", chunk_rows=3)
    m = r.read()
    assert r.errors.count == 1 and r.errors.first[0][0] == 7
    assert len(m) == 7 and r.rows == 7
    np.testing.assert_array_equal(m.type, [1, 1, 7, 7, 7, 4, 3])
    np.testing.assert_array_equal(m.bid_sz[:, 0], [100] * 6 + [0])  # books stay aligned


def test_lobster_malformed_book_and_misalignment(tmp_path):
    book = BOOK[:3] + ["1000100,50,1000000"] + BOOK[4:]
    mp = _write(tmp_path, MSG, book)
    with pytest.raises(ParseError) as ei:
        F.read_lobster(mp)
    assert ei.value.line == 4 and "orderbook" in str(ei.value)
    r = F.LobsterReader(mp, on_error="skip")
    m = r.read()
    assert r.ob_errors.count == 1 and len(m) == 6
    np.testing.assert_array_equal(m.halt, [0, 0, 1, 3, 0, 0])  # row 4 dropped from both files
    mp = _write(tmp_path, MSG, BOOK[:-1])
    with pytest.raises(ParseError, match="rows"):
        F.read_lobster(mp)


def test_lobster_time_backwards(tmp_path):
    msg = list(MSG)
    msg[3] = "34200.15,7,0,0,0,-1"
    mp = _write(tmp_path, msg, BOOK)
    for chunk_rows in (2, 3, 100):
        with pytest.raises(ParseError, match="backwards") as ei:
            F.read_lobster(mp, chunk_rows=chunk_rows)
        assert ei.value.line == 4


def test_lobster_needs_date(tmp_path):
    p = tmp_path / "msg.csv"
    p.write_text(MSG[0] + "\n")
    with pytest.raises(ValueError, match="date"):
        F.read_lobster(p)
    m = F.read_lobster(p, date="2020-03-02", tz=None)
    assert m.ts[0] == (1_583_107_200 + 34200) * 10**9 + 100_000_000 and m.ask_px.shape == (1, 0)


# ------------------------------------------------------------------------------------------------
# Binance
# ------------------------------------------------------------------------------------------------



class MiniBook:
    """Tiny pure-Python price-level book used to check the readers' delta streams."""

    def __init__(self):
        self.bids, self.asks = {}, {}

    def apply(self, side, price, size, flags=0):
        if flags & FLAG_CLEAR:
            self.bids.clear()
            self.asks.clear()
        book = self.bids if side == 1 else self.asks
        if size == 0:
            book.pop(price, None)
        elif price == price:
            book[price] = size

    def touch(self):
        bb = max(self.bids) if self.bids else float("nan")
        ba = min(self.asks) if self.asks else float("nan")
        return bb, self.bids.get(bb, 0.0), ba, self.asks.get(ba, 0.0)


def _rebuilt_touch(d):
    """{update_id: touch after that message} from a BookDeltas (skipping snapshot batches)."""
    book, out = MiniBook(), {}
    for i in range(len(d)):
        f = int(d.flags[i])
        book.apply(int(d.side[i]), float(d.price[i]), float(d.size[i]), f)
        if f & FLAG_BATCH_END and not f & FLAG_SNAPSHOT:
            out[int(d.update_id[i])] = book.touch()
    return out


@pytest.mark.parametrize("market,counts", [
    ("spot", dict(lines=41_249, depth_messages=3_451, applied=3_449, trades=9_757,
                  quotes=28_040, snapshots=1, first_applied_line=6, snapshot_lines=[8])),
    ("usdm", dict(lines=93_954, depth_messages=6_551, applied=6_547, trades=21_313,
                  quotes=66_089, snapshots=1, first_applied_line=42, snapshot_lines=[55])),
])
def test_binance_hftbacktest_sync_and_counts(market, counts):
    r = BN.BinanceReader(data_file("binance_hftbacktest", market, "btcusdt_20240808.gz"))
    c = r.read()
    st = r.stats
    for k, v in counts.items():
        assert st[k] == v, k
    assert r.market == market
    # no gap after sync; every diff either applied or dropped as stale before the first applied
    assert st["gaps"] == [] and st["dropped_gap"] == 0 and st["unsynced_at_end"] == 0
    assert st["applied"] + st["dropped_stale"] == st["depth_messages"]
    assert len(c.trades) == st["trades"] and len(c.quotes) == st["quotes"]
    d = c.depth
    snap = (d.flags & FLAG_SNAPSHOT) != 0
    assert snap.sum() == 2000 and (d.side[snap] == 1).sum() == 1000  # 1000 levels a side
    assert d.flags[0] & FLAG_CLEAR and d.update_id[0] == (50093239218 if market == "spot"
                                                          else 5123107852948)
    assert ((d.flags & FLAG_BATCH_END) != 0).sum() <= st["applied"] + 1
    # update ids non-decreasing after the snapshot; sides +-1; sizes >= 0
    assert (np.diff(d.update_id) >= 0).all() and set(np.unique(d.side)) == {-1, 1}
    assert (d.size >= 0).all() and (d.price > 0).all()
    # the two clocks are kept as given (E runs ~1.27 s ahead of the local clock here)
    live = ~snap
    off = (d.ts_exchange[live] - d.ts_local[live]) / 1e9
    assert 1.0 < np.median(off) < 1.6
    # aggressor side from m: m true = buyer is maker = seller-initiated
    t = c.trades
    assert set(np.unique(t.side)) == {-1, 1} and (np.diff(t.trade_id) > 0).all()
    # the rebuilt touch equals the recorded bookTicker at matching update ids
    touch = _rebuilt_touch(d)
    q = c.quotes
    hits = 0
    for j in range(len(q)):
        tt = touch.get(int(q.update_id[j]))
        if tt is not None:
            hits += 1
            assert tt == (q.bid_px[j], q.bid_sz[j], q.ask_px[j], q.ask_sz[j]), j
    assert hits > 500
    if market == "spot":
        assert (q.ts_exchange == F.NO_TIME).all()
    else:
        assert (q.ts_exchange > 0).all()


def test_binance_first_trade_values():
    c = BN.read_binance(data_file("binance_hftbacktest", "spot", "btcusdt_20240808.gz"))
    # line 4: "t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true
    t = c.trades
    assert (t.trade_id[0], t.price[0], t.size[0], t.side[0]) == (3735683259, 61837.63, 0.02, -1)
    assert t.ts_exchange[0] == 1723161255342 * 10**6 and t.ts_local[0] == 1723161254087896568


def test_binance_chunked_equals_whole():
    path = data_file("binance_hftbacktest", "spot", "btcusdt_20240808.gz")
    whole = BN.read_binance(path)
    parts = list(BN.iter_binance(path, chunk_rows=3000))
    assert len(parts) > 10
    for name in ("depth", "trades", "quotes"):
        assert all(len(getattr(p, name)) <= 3000 + 2000 for p in parts)
        joined = type(getattr(whole, name)).concat([getattr(p, name) for p in parts])
        for k, v in getattr(whole, name).as_dict().items():
            np.testing.assert_array_equal(getattr(joined, k), v, err_msg=f"{name}.{k}")


def test_binance_cryptofeed_nknusdt_sync_fixture():
    ws = data_file("cryptofeed_sample_data", "BINANCE.ws.1.0")
    http = data_file("cryptofeed_sample_data", "BINANCE.http.0.0")
    r = BN.BinanceReader(ws, snapshots=http, symbol="nknusdt")
    c = r.read()
    st = r.stats
    # snapshot lastUpdateId 499869752: the first diff (U 499869750, u 499869752) is dropped,
    # the second (U 499869753) applies; 150 NKNUSDT diffs in all, no gap
    assert st["depth_messages"] == 150 and st["dropped_stale"] == 1 and st["applied"] == 149
    assert st["snapshots"] == 1 and st["gaps"] == [] and st["markers"] == 1
    assert r.market == "spot"
    assert c.depth.update_id[0] == 499869752
    live = (c.depth.flags & FLAG_SNAPSHOT) == 0
    assert c.depth.update_id[live][0] > 499869752
    assert st["other_symbol"] > 0
    assert c.depth.ts_local[0] == 1633998512_320639000
    assert len(c.trades) == 1  # one NKNUSDT aggTrade
    touch = _rebuilt_touch(c.depth)
    q = c.quotes
    hits = [j for j in range(len(q)) if int(q.update_id[j]) in touch]
    for j in hits:
        assert touch[int(q.update_id[j])] == (q.bid_px[j], q.bid_sz[j], q.ask_px[j], q.ask_sz[j])


# hand-made Binance files ---------------------------------------------------------------------------

def _diff(U, u, b=(), a=(), pu=None, E=1000, s="BTCUSDT"):
    d = {"e": "depthUpdate", "E": E, "s": s, "U": U, "u": u,
         "b": [list(x) for x in b], "a": [list(x) for x in a]}
    if pu is not None:
        d["pu"] = pu
    return {"stream": "btcusdt@depth", "data": d}


def _snap(last, bids=(("100.0", "1.0"),), asks=(("101.0", "2.0"),)):
    return {"lastUpdateId": last, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}


def _write_rec(tmp_path, msgs, name="rec.gz", raw_lines=None):
    lines = [f"{1_000_000 + i} {json.dumps(m)}" for i, m in enumerate(msgs)]
    for pos, text in (raw_lines or {}).items():
        lines.insert(pos, text)
    p = tmp_path / name
    data = ("\n".join(lines) + "\n").encode()
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return p


SPOT_OK = [
    _diff(5, 8, b=[("99.0", "3.0")]),               # buffered, stale (u <= 10): dropped
    _diff(9, 12, a=[("101.0", "0")]),               # buffered, straddles 11: first applied
    _snap(10),
    _diff(13, 13, b=[("100.0", "0.5")], a=[("102.0", "1.0")]),
    {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 7,
                                         "p": "100.5", "q": "0.1", "T": 2, "m": False}},
    _diff(14, 15, b=[("100.5", "2.0")]),
]


def test_binance_handmade_spot_sync(tmp_path):
    p = _write_rec(tmp_path, SPOT_OK)
    r = BN.BinanceReader(p)
    c = r.read()
    st = r.stats
    assert (st["dropped_stale"], st["applied"], st["depth_messages"]) == (1, 3, 4)
    assert st["first_applied_line"] == 2 and st["snapshot_lines"] == [3]
    d = c.depth
    np.testing.assert_array_equal(d.update_id, [10, 10, 12, 13, 13, 15])
    np.testing.assert_array_equal(d.side, [1, -1, -1, 1, -1, 1])
    np.testing.assert_array_equal(d.size, [1.0, 2.0, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_array_equal(d.flags, [FLAG_SNAPSHOT | FLAG_CLEAR,
                                            FLAG_SNAPSHOT | FLAG_BATCH_END, FLAG_BATCH_END,
                                            0, FLAG_BATCH_END, FLAG_BATCH_END])
    assert d.ts_exchange[0] == F.NO_TIME and d.ts_exchange[2] == 1000 * 10**6
    np.testing.assert_array_equal(d.ts_local, [1_000_002, 1_000_002, 1_000_001, 1_000_003,
                                               1_000_003, 1_000_005])
    assert (c.trades.side[0], c.trades.trade_id[0], c.trades.ts_exchange[0]) == (1, 7, 2 * 10**6)


def test_binance_spot_gap_raises_or_resyncs(tmp_path):
    msgs = SPOT_OK + [_diff(17, 18, b=[("100.0", "1")]),    # gap: expected U == 16
                      _diff(19, 19), _snap(20), _diff(20, 20), _diff(21, 22, b=[("99", "1")])]
    p = _write_rec(tmp_path, msgs)
    with pytest.raises(SequenceGapError) as ei:
        BN.read_binance(p)
    msg = str(ei.value)
    assert "U=17" in msg and "16" in msg and "u=18" in msg and f"{p}:7" in msg
    r = BN.BinanceReader(p, on_gap="resync")
    c = r.read()
    st = r.stats
    assert [g[0] for g in st["gaps"]] == [7]
    assert st["dropped_gap"] == 2           # lines 7 and 8 until the snapshot at line 9
    assert st["dropped_stale"] == 2         # line 2 before the 1st snapshot, line 10 (u 20)
    assert st["applied"] == 4 and st["snapshots"] == 2
    d = c.depth
    clear = np.flatnonzero(d.flags & FLAG_CLEAR)
    assert len(clear) == 2 and d.update_id[clear[1]] == 20
    assert d.update_id[-1] == 22


def test_binance_snapshot_newer_than_buffer_is_a_gap(tmp_path):
    p = _write_rec(tmp_path, [_diff(5, 8), _snap(10), _diff(12, 13)])
    with pytest.raises(SequenceGapError, match="straddle"):
        BN.read_binance(p)
    r = BN.BinanceReader(p, on_gap="resync")
    r.read()
    assert r.stats["dropped_gap"] == 1 and r.stats["dropped_stale"] == 1


def test_binance_futures_rule(tmp_path):
    # futures: drop u < L; first must have U <= L <= u; then pu == previous u
    msgs = [_diff(1, 9, pu=0), _diff(10, 12, pu=9, b=[("1", "1")]), _snap(10),
            _diff(13, 15, pu=12, a=[("2", "1")]), _diff(16, 16, pu=14)]
    p = _write_rec(tmp_path, msgs)
    with pytest.raises(SequenceGapError, match="pu=14") as ei:
        BN.read_binance(p)
    assert ei.value.index == 5
    r = BN.BinanceReader(p, on_gap="resync")
    r.read()
    assert r.market == "usdm" and r.stats["applied"] == 2 and r.stats["dropped_stale"] == 1
    assert r.stats["dropped_gap"] == 1
    # on spot rules the same file's first diff u=12 >= L+1=11 also straddles; but u == L:
    msgs = [_diff(8, 10, pu=7), _snap(10), _diff(11, 11, pu=10)]
    r = BN.BinanceReader(_write_rec(tmp_path, msgs, "f2.gz"))
    r.read()
    assert r.stats["applied"] == 2 and r.stats["dropped_stale"] == 0  # u == L kept on futures
    r = BN.BinanceReader(_write_rec(tmp_path, msgs, "f3.gz"), market="spot")
    r.read()
    assert r.stats["applied"] == 1 and r.stats["dropped_stale"] == 1  # u <= L dropped on spot


@pytest.mark.parametrize("bad", ["1000 {not json", "{\"stream\": 1}x", "abc {}", "12345",
                                 '1000 {"data":{"e":"trade","p":"1"}}',
                                 '1000 {"data":{"e":"trade","E":1,"t":1,"p":"x","q":"1",'
                                 '"T":1,"m":false}}',
                                 '1000 {"data":{"e":"trade","E":1,"t":1,"p":"1","q":"1",'
                                 '"T":1,"m":"no"}}'])
def test_binance_malformed_lines(tmp_path, bad):
    p = _write_rec(tmp_path, SPOT_OK, "plain.txt", raw_lines={3: bad})
    with pytest.raises(ParseError) as ei:
        BN.read_binance(p)
    assert ei.value.line == 4 and str(p) in str(ei.value)
    r = BN.BinanceReader(p, on_error="skip")
    c = r.read()
    assert r.errors.count == 1 and r.errors.first[0][0] == 4
    assert r.stats["applied"] == 3 and len(c.trades) == 1


def test_binance_unsynced_and_other_symbols_counted(tmp_path):
    msgs = [_diff(1, 2), _diff(3, 4, s="ETHUSDT"), _diff(3, 4)]
    r = BN.BinanceReader(_write_rec(tmp_path, msgs))
    c = r.read()
    assert r.stats["unsynced_at_end"] == 2 and r.stats["other_symbol"] == 1 and len(c.depth) == 0


# ------------------------------------------------------------------------------------------------
# Tardis
# ------------------------------------------------------------------------------------------------
TARDIS_L2 = "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv"
TARDIS_TRADES = "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv"


def _batch_ends_reference(lt, snap):
    """Pure-Python group-by of consecutive rows sharing (local_timestamp, is_snapshot)."""
    out = []
    for i in range(len(lt)):
        nxt = i + 1 < len(lt)
        out.append(not nxt or lt[i + 1] != lt[i] or snap[i + 1] != snap[i])
    return np.array(out)


def test_tardis_l2_real_file():
    r = F.TardisReader(data_file("tardis", TARDIS_L2))
    assert r.kind == "incremental_book_L2"
    d = r.read()
    assert len(d) == r.stats["rows"] == 2050 and r.stats["snapshots"] == 1
    snap = (d.flags & FLAG_SNAPSHOT) != 0
    assert snap[:2000].all() and not snap[2000:].any()
    assert (d.side[:2000] == 1).sum() == 1000 and (d.side[:2000] == -1).sum() == 1000
    assert (d.ts_exchange[:2000] == 1575158405045139 * 1000).all()
    upd = slice(2000, None)
    assert (d.side[upd] == -1).sum() == 39 and (d.side[upd] == 1).sum() == 11
    assert d.ts_exchange[-1] == 1575158405598000 * 1000
    assert np.flatnonzero(d.flags & FLAG_CLEAR).tolist() == [0]
    lines = data_file("tardis", TARDIS_L2).read_text().splitlines()[1:]
    lt = [int(x.split(",")[3]) * 1000 for x in lines]
    np.testing.assert_array_equal(d.ts_local, lt)
    np.testing.assert_array_equal((d.flags & FLAG_BATCH_END) != 0,
                                  _batch_ends_reference(lt, snap))
    np.testing.assert_array_equal(d.price, [float(x.split(",")[6]) for x in lines])
    np.testing.assert_array_equal(d.size, [float(x.split(",")[7]) for x in lines])
    # the book read at batch ends is never crossed
    book = MiniBook()
    for i in range(len(d)):
        book.apply(int(d.side[i]), d.price[i], d.size[i], int(d.flags[i]))
        if d.flags[i] & FLAG_BATCH_END:
            bb, _, ba, _ = book.touch()
            assert bb < ba


@pytest.mark.parametrize("chunk_rows", [1, 7, 1999, 2000, 2001, 10**6])
def test_tardis_chunked_equals_whole(chunk_rows):
    path = data_file("tardis", TARDIS_L2)
    whole = F.read_tardis(path)
    parts = list(F.iter_tardis(path, chunk_rows=chunk_rows))
    assert all(len(p) <= chunk_rows for p in parts)
    joined = F.BookDeltas.concat(parts)
    for k, v in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)
    tr = F.read_tardis(data_file("tardis", TARDIS_TRADES))
    joined = F.Trades.concat(list(F.iter_tardis(data_file("tardis", TARDIS_TRADES),
                                                 chunk_rows=chunk_rows)))
    for k, v in tr.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)


def test_tardis_trades_real_file():
    r = F.TardisReader(data_file("tardis", TARDIS_TRADES))
    t = r.read()
    assert r.kind == "trades" and len(t) == 100
    assert (t.side == 1).sum() == 52 and (t.side == -1).sum() == 48
    first = data_file("tardis", TARDIS_TRADES).read_text().splitlines()[1].split(",")
    assert t.ts_exchange[0] == int(first[2]) * 1000 and t.ts_local[0] == int(first[3]) * 1000
    assert t.trade_id[0] == int(first[4]) and t.price[0] == float(first[6])
    assert t.side[0] == (1 if first[5] == "buy" else -1)
    # 00:00:03.572 to 00:00:35.763 UTC on 2019-12-01
    day = 1_575_158_400 * 10**9
    assert 3.57 < (t.ts_exchange[0] - day) / 1e9 < 3.58
    assert 35.76 < (t.ts_exchange[-1] - day) / 1e9 < 35.77


HDR = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"


def _tardis_file(tmp_path, rows, name="t.csv"):
    p = tmp_path / name
    p.write_text(HDR + "\n" + "\n".join(rows) + "\n")
    return p


def test_tardis_handmade_snapshots_batches(tmp_path):
    rows = ["x,Y,1,1,false,bid,9,1",          # before any snapshot: dropped, counted
            "x,Y,2,2,true,bid,10,1", "x,Y,2,2,true,ask,11,1", "x,Y,2,2,true,ask,12,0",
            "x,Y,3,3,false,bid,10,2", "x,Y,3,3,false,ask,11,0",
            "x,Y,4,4,false,ask,11.5,3",
            "x,Y,5,5,true,bid,20,1", "x,Y,5,5,true,ask,21,1",   # re-sent snapshot
            "x,Y,6,6,true,bid,30,1", "x,Y,6,6,true,ask,31,1"]   # a new one right after
    p = _tardis_file(tmp_path, rows)
    for chunk_rows in (1, 2, 3, 100):
        r = F.TardisReader(p, chunk_rows=chunk_rows)
        d = r.read()
        assert r.stats["dropped_before_snapshot"] == 1 and r.stats["snapshots"] == 3
        S, C, E = FLAG_SNAPSHOT, FLAG_CLEAR, FLAG_BATCH_END
        np.testing.assert_array_equal(d.flags, [S | C, S, S | E, 0, E, E, S | C, S | E,
                                                S | C, S | E])
        np.testing.assert_array_equal(d.ts_local, np.array([2, 2, 2, 3, 3, 4, 5, 5, 6, 6]) * 1000)
        assert d.size[2] == 0  # a zero amount inside a snapshot is kept (= absent level)


@pytest.mark.parametrize("bad", ["x,Y,3,3,false,bod,10,2", "x,Y,3,3,false,bid,10",
                                 "x,Y,3,3,maybe,bid,10,2", "x,Y,3,3,false,bid,abc,2",
                                 "x,Y,3.5,3,false,bid,10,2", "x,Y,3,3,false,bid,10,-2",
                                 "x,Y,3,3,false,bid,nan,2", "x,Y,3,3,false,bid,10,2,7"])
def test_tardis_malformed(tmp_path, bad):
    rows = ["x,Y,2,2,true,bid,10,1", "x,Y,2,2,true,ask,11,1", bad, "x,Y,4,4,false,ask,11.5,3"]
    p = _tardis_file(tmp_path, rows)
    with pytest.raises(ParseError) as ei:
        F.read_tardis(p)
    assert ei.value.line == 4 and str(p) in str(ei.value)
    r = F.TardisReader(p, on_error="skip", chunk_rows=2)
    d = r.read()
    assert r.errors.count == 1 and r.errors.first[0][0] == 4 and len(d) == 3
    np.testing.assert_array_equal(d.price, [10, 11, 11.5])


def test_tardis_book_snapshot_and_bad_header(tmp_path):
    cols = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for i in range(2):
        cols += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price", f"bids[{i}].amount"]
    p = tmp_path / "s.csv"
    p.write_text(",".join(cols) + "\nx,Y,1,2,11,1,10,2,12,3,,\nx,Y,3,4,11,1,10,2,,,9,4\n")
    s = F.read_tardis(p)
    assert s.ask_px.shape == (2, 2)
    np.testing.assert_array_equal(s.ask_px[0], [11, 12])
    assert np.isnan(s.bid_px[0, 1]) and s.bid_sz[0, 1] == 0 and np.isnan(s.ask_px[1, 1])
    np.testing.assert_array_equal(s.bid_px[1], [10, 9])
    np.testing.assert_array_equal(s.ts_local, [2000, 4000])
    q = tmp_path / "q.csv"
    q.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="header"):
        F.TardisReader(q)


# ------------------------------------------------------------------------------------------------
# Kraken and Coinbase (cryptofeed captures)
# ------------------------------------------------------------------------------------------------

KRAKEN_PAIRS = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF", "OCEAN/XBT",
                "OMG/USD", "XBT/CHF", "ADA/XBT"]


def _kraken_checksum_reference(asks, bids):
    """Kraken's guide, written independently: asks ascending, bids descending, top 10 each."""
    def fmt(s):
        return str(int(s.replace(".", ""))) if s.replace(".", "").strip("0") else ""
    a = sorted(asks.items(), key=lambda kv: float(kv[0]))[:10]
    b = sorted(bids.items(), key=lambda kv: -float(kv[0]))[:10]
    text = "".join(fmt(p) + fmt(v) for p, v in a + b)
    return zlib.crc32(text.encode())


def test_kraken_every_checksum_verifies():
    path = data_file("cryptofeed_sample_data", "KRAKEN.ws.50.0")
    total = 0
    for pair in KRAKEN_PAIRS:
        r = F.KrakenBookReader(path, pair=pair)
        d = r.read()
        st = r.stats
        assert st["snapshots"] == 1 and st["gaps"] == [] and r.errors.count == 0
        assert st["checksums_verified"] == st["updates"]
        total += st["checksums_verified"]
        # rebuilt book at batch ends is not crossed
        book = MiniBook()
        for i in range(len(d)):
            book.apply(int(d.side[i]), d.price[i], d.size[i], int(d.flags[i]))
            if d.flags[i] & FLAG_BATCH_END:
                bb, _, ba, _ = book.touch()
                assert bb < ba
        # snapshot levels keep the (older) time each level was last changed
        assert (d.ts_local > 1618678132 * 10**9).all() and (d.ts_exchange > 1.5e18).all()
    assert total == 4269  # README: 4,269 messages carry a checksum


def test_kraken_checksum_function_matches_reference():
    asks = {"0.05005": "0.00000500", "0.05010": "1.5", "0.05020": "3.0"}
    bids = {"0.05000": "0.00001000", "0.04990": "10.0"}
    as_book = {float(p): (p, v) for p, v in asks.items()}
    bs_book = {float(p): (p, v) for p, v in bids.items()}
    assert F.kraken_checksum(as_book, bs_book) == _kraken_checksum_reference(asks, bids)
    # the string is "5005" "500" "5010" "15" "5020" "30" "5000" "1000" "4990" "100"
    assert F.kraken_checksum(as_book, bs_book) == zlib.crc32(b"5005500501015502030500010004990100")


def test_kraken_checksum_mismatch_names_message(tmp_path):
    lines = data_file("cryptofeed_sample_data", "KRAKEN.ws.50.0").read_bytes().split(b"\n")
    idx = next(i for i, ln in enumerate(lines) if b'"XMR/USD"' in ln and b'"c":"' in ln)
    bad = lines[idx]
    start = bad.index(b'"c":"') + 5
    end = bad.index(b'"', start)
    crc = int(bad[start:end])
    lines[idx] = bad[:start] + str((crc + 1) % 2**32).encode() + bad[end:]
    p = tmp_path / "kraken.txt"
    p.write_bytes(b"\n".join(lines[:idx + 200]))
    with pytest.raises(SequenceGapError) as ei:
        F.read_kraken_book(p, pair="XMR/USD")
    assert isinstance(ei.value, ChecksumError)  # the specific subclass, still a gap error
    assert ei.value.expected == (crc + 1) % 2**32 and ei.value.got == crc
    assert f"{p}:{idx + 1}" in str(ei.value) and str(crc) in str(ei.value)
    assert "XMR/USD" in str(ei.value) and ei.value.index == idx + 1
    r = F.KrakenBookReader(p, pair="XMR/USD", on_gap="resync")
    r.read()
    assert r.stats["dropped_gap"] == 1 and r.stats["before_snapshot"] > 0
    assert [g[0] for g in r.stats["gaps"]] == [idx + 1]
    # other pairs in the same file still verify
    r = F.KrakenBookReader(p, pair="SC/EUR")
    r.read()
    assert r.stats["checksums_verified"] > 0


def test_kraken_malformed(tmp_path):
    p = tmp_path / "k.txt"
    p.write_text('1.0: [1,{"as":[["10.0","1.0","1.5"]],"bs":[["9.0","2.0","1.5"]]},"book-10","A/B"]\n'
                 '2.0: [1,{"a":[["x","1.0","2.5"]]},"book-10","A/B"]\n'
                 '3.0: [1,{"b":[["9.5","1.0","3.5"]]},"book-10","A/B"]\n')
    with pytest.raises(ParseError) as ei:
        F.read_kraken_book(p)
    assert ei.value.line == 2
    r = F.KrakenBookReader(p, on_error="skip")
    d = r.read()
    assert r.errors.count == 1 and len(d) == 3
    np.testing.assert_array_equal(d.ts_exchange, [1_500_000_000, 1_500_000_000, 3_500_000_000])
    np.testing.assert_array_equal(d.side, [1, -1, 1])


def test_kraken_trades_real_capture():
    path = data_file("cryptofeed_sample_data", "KRAKEN.ws.48.0")
    lines = path.read_text().splitlines()
    msgs = 0
    for pair, n_msgs, n_trades in (("XMR/USD", 3, 4), ("SC/EUR", 5, 6)):
        r = F.KrakenTradesReader(path, pair=pair)
        t = r.read()
        assert r.stats["messages"] == n_msgs and len(t) == r.stats["trades"] == n_trades
        msgs += n_msgs
        # every trade checked against the raw JSON of its line (taker side b -> +1, s -> -1)
        exp = []
        for ln in lines:
            head, _, body = ln.partition(": ")
            if body.startswith("[") and f'"trade","{pair}"]' in body:
                for e in json.loads(body)[1]:
                    exp.append((int(Fraction(e[2]) * 10**9), int(Fraction(head) * 10**9),
                                float(e[0]), float(e[1]), {"b": 1, "s": -1}[e[3]]))
        assert list(zip(t.ts_exchange.tolist(), t.ts_local.tolist(), t.price.tolist(),
                        t.size.tolist(), t.side.tolist())) == exp
        assert (t.trade_id == -1).all()
    assert msgs == 8  # README: 8 trade messages


def test_kraken_trades_reader_skips_book_messages():
    # the book capture has 4- and 5-element book messages (["a"], ["b"] or both) and no trade
    path = data_file("cryptofeed_sample_data", "KRAKEN.ws.50.0")
    r = F.KrakenTradesReader(path)
    t = r.read()
    assert len(t) == 0 and r.errors.count == 0 and r.stats["other_channel"] > 1000


def test_kraken_trades_malformed(tmp_path):
    p = tmp_path / "kt.txt"
    p.write_text('1.0: [1,[["10.0","1.0","1.5","b","m",""]],"trade","A/B"]\n'
                 '2.0: [1,[["10.0","1.0","2.5","x","m",""]],"trade","A/B"]\n'
                 '3.0: [1,[["9.5","2.0","3.5","s","l",""]],"trade","A/B"]\n'
                 '4.0: [1,[["9.5","2.0","4.5","s","l",""]],"trade","C/D"]\n')
    with pytest.raises(ParseError, match="side") as ei:
        F.read_kraken_trades(p)
    assert ei.value.line == 2
    r = F.KrakenTradesReader(p, on_error="skip", chunk_rows=1)
    t = r.read()
    assert r.errors.count == 1 and r.stats["other_pair"] == 1
    np.testing.assert_array_equal(t.side, [1, -1])
    np.testing.assert_array_equal(t.ts_exchange, [1_500_000_000, 3_500_000_000])


COINBASE_PRODUCTS = ["BAND-BTC", "BAND-GBP", "CRV-EUR", "DASH-BTC", "NMR-EUR", "NU-GBP",
                     "SKL-BTC", "SKL-GBP", "SKL-USD", "YFI-BTC"]


def test_coinbase_counts_and_sides():
    path = data_file("cryptofeed_sample_data", "COINBASE.ws.28.0")
    tot = {}
    for prod in COINBASE_PRODUCTS:
        r = F.CoinbaseReader(path, product=prod)
        c = r.read()
        for k in ("snapshots", "l2update", "match", "last_match", "ticker"):
            tot[k] = tot.get(k, 0) + r.stats[k]
        assert r.stats["before_snapshot"] == 0 and r.errors.count == 0
        assert len(c.trades) == r.stats["match"] + r.stats["last_match"]
        assert ((c.depth.flags & FLAG_CLEAR) != 0).sum() == 1
    assert tot == {"snapshots": 10, "l2update": 9719, "match": 97, "last_match": 10,
                   "ticker": 107}
    # first SKL-BTC match: "side":"sell" (maker) -> buyer-initiated; trade_id 280232
    c = F.read_coinbase(path, product="SKL-BTC")
    i = int(np.flatnonzero(c.trades.trade_id == 280232)[0])
    assert c.trades.side[i] == 1 and c.trades.price[i] == 0.00001305 and c.trades.size[i] == 985
    assert c.trades.ts_exchange[i] == 1618677817_089723000
    d = c.depth
    first_upd = int(np.flatnonzero((d.flags & FLAG_SNAPSHOT) == 0)[0])
    assert d.ts_exchange[first_upd] == 1618677817_075687000 and d.side[first_upd] == -1


def test_coinbase_malformed_and_chunks(tmp_path):
    p = tmp_path / "cb.txt"
    p.write_text(
        '1.0: {"type":"snapshot","product_id":"A-B","bids":[["1.0","2"]],"asks":[["1.1","3"]]}\n'
        '2.0: {"type":"l2update","product_id":"A-B","changes":[["buy","1.05","1"]],'
        '"time":"2021-04-17T16:43:37.5Z"}\n'
        '3.0: {"type":"l2update","product_id":"A-B","changes":[["hold","1.05","1"]],'
        '"time":"2021-04-17T16:43:37.6Z"}\n'
        '4.0: {"type":"match","product_id":"A-B","trade_id":5,"side":"buy","size":"0.5",'
        '"price":"1.0","time":"2021-04-17T16:43:38.000001Z"}\n')
    with pytest.raises(ParseError) as ei:
        F.read_coinbase(p)
    assert ei.value.line == 3
    r = F.CoinbaseReader(p, on_error="skip", chunk_rows=1)
    parts = list(r)
    c = F.CoinbaseChunk(F.BookDeltas.concat([x.depth for x in parts]),
                        F.Trades.concat([x.trades for x in parts]))
    assert r.errors.count == 1 and len(c.depth) == 3 and len(c.trades) == 1
    assert c.trades.side[0] == -1  # maker was the buyer -> seller-initiated
    assert c.trades.ts_exchange[0] == 1618677818_000001000
    assert c.depth.ts_exchange[2] == 1618677817_500000000


# ------------------------------------------------------------------------------------------------
# Bitstamp L3 -> L2
# ------------------------------------------------------------------------------------------------

def test_bitstamp_l3_real_capture():
    r = F.BitstampL3Reader(data_file("bitstamp_ob_analytics", "orders.csv.gz"), chunk_rows=50_000)
    parts = list(r)
    d = F.BookDeltas.concat(parts)
    st = r.stats
    assert st["rows"] == 314_057 and r.errors.count == 0
    assert st["created"] + st["changed"] + st["deleted"] == 314_057
    # the capture opens with 6,512 synthetic creates and closes with 6,518 synthetic deletes of
    # everything still resting: the aggregated book ends empty, every level's last size is 0
    assert st["created"] >= 6_512 and st["deleted"] >= 6_518
    assert r.orders == {} and r.levels == {}
    last = {}
    for side, px, sz in zip(d.side.tolist(), d.price.tolist(), d.size.tolist()):
        last[(side, px)] = sz
    assert set(last.values()) == {0.0}
    assert (d.size >= 0).all() and set(np.unique(d.side)) == {-1, 1}
    assert (d.flags[-1] & FLAG_BATCH_END) and (d.ts_local >= d.ts_exchange - 10**10).all()
    # the book after the synthetic snapshot (first 6,512 creates) is not crossed
    book = MiniBook()
    for i in range(6_512):
        book.apply(int(d.side[i]), d.price[i], d.size[i])
    bb, _, ba, _ = book.touch()
    assert bb < ba and 70_000 < bb < 90_000
    assert all(len(p) <= 50_000 + 1 for p in parts)


def test_bitstamp_trades_real():
    t = F.read_bitstamp_trades(data_file("bitstamp_ob_analytics", "trades.csv"))
    assert len(t) == 284 and (t.side == 1).sum() == 162 and (t.side == -1).sum() == 122
    assert t.trade_id[0] == 568694537 and t.ts_exchange[0] == 1777689383817 * 10**6
    assert t.ts_local[0] == 1777689383889 * 10**6 and t.price[0] == 78319.0


def test_bitstamp_l3_handmade(tmp_path):
    p = tmp_path / "orders.csv"
    p.write_text("id,timestamp,exchange_timestamp,price,volume,action,direction\n"
                 "1,10,9,100.0,0.1,created,bid\n"
                 "2,11,10,100.0,0.2,created,bid\n"      # level 100 = 0.3 exactly
                 "3,12,11,101.0,1.0,created,ask\n"
                 "1,13,12,100.0,0.05,changed,bid\n"     # partial fill: 0.25
                 "2,14,13,99.5,0.2,changed,bid\n"       # amended to 99.5: two levels change
                 "9,15,14,100.0,1.0,deleted,bid\n"      # unknown order: counted, ignored
                 "3,16,15,101.0,1.0,created,ask\n"      # duplicate create: a change, no-op
                 "1,17,16,100.0,0.05,deleted,bid\n")
    r = F.BitstampL3Reader(p, chunk_rows=2)
    d = F.BookDeltas.concat(list(r))
    np.testing.assert_array_equal(d.side, [1, 1, -1, 1, 1, 1, 1])
    np.testing.assert_array_equal(d.price, [100, 100, 101, 100, 100, 99.5, 100])
    np.testing.assert_array_equal(d.size, [0.1, 0.3, 1.0, 0.25, 0.05, 0.2, 0.0])
    np.testing.assert_array_equal(d.update_id, [1, 2, 3, 1, 2, 2, 1])
    E = FLAG_BATCH_END
    np.testing.assert_array_equal(d.flags, [E, E, E, E, 0, E, E])
    np.testing.assert_array_equal(d.ts_exchange, np.array([9, 10, 11, 12, 13, 13, 16]) * 10**6)
    assert r.stats["unknown_order"] == 1 and r.stats["duplicate_create"] == 1
    assert r.stats["no_change"] == 1 and r.orders == {2: (1, 99.5, 20_000_000), 3: (-1, 101.0, 10**8)}


def test_bitstamp_l3_stale_snapshot_orders(tmp_path):
    # opening snapshot (creates sharing exchange time 5): bids 100, 99; asks 101 (stale), 102
    p = tmp_path / "orders.csv"
    p.write_text("id,timestamp,exchange_timestamp,price,volume,action,direction\n"
                 "1,9,5,100.0,1.0,created,bid\n"
                 "2,9,5,99.0,1.0,created,bid\n"
                 "3,9,5,101.0,1.0,created,ask\n"
                 "4,9,5,102.0,2.0,created,ask\n"
                 "5,10,6,101.5,0.5,created,bid\n"      # live bid through ask 101 ...
                 "4,11,7,102.0,1.5,changed,ask\n"      # ... still resting at ms 7: 3 is stale;
                                                         # a live event names 4: never stale
                 "6,12,8,102.0,0.1,created,bid\n"      # crosses 4, but 4 is live: kept
                 "3,13,9,101.0,0.4,changed,ask\n"      # a live change names 3: restored
                 "3,14,10,101.0,0.4,deleted,ask\n")
    r = F.BitstampL3Reader(p)
    d = F.BookDeltas.concat(list(r))
    E = FLAG_BATCH_END
    # ask 101 is emptied in a message of its own when exchange ms 7 begins (id of the bid)
    np.testing.assert_array_equal(d.side, [1, 1, -1, -1, 1, -1, -1, 1, -1, -1])
    np.testing.assert_array_equal(d.price, [100, 99, 101, 102, 101.5, 101, 102, 102, 101, 101])
    np.testing.assert_array_equal(d.size, [1, 1, 1, 2, 0.5, 0, 1.5, 0.1, 0.4, 0])
    np.testing.assert_array_equal(d.flags, [E] * 10)
    np.testing.assert_array_equal(d.update_id, [1, 2, 3, 4, 5, 5, 4, 6, 3, 3])
    st = r.stats
    assert (st["snapshot_orders"], st["stale_removed"], st["stale_restored"]) == (4, 1, 1)
    assert st["unknown_order"] == 0 and 3 not in r.orders and 4 in r.orders


@pytest.mark.parametrize("bad", ["4,1,1,100.0,1.0,created,mid", "4,1,1,100.0,1.0,moved,bid",
                                 "4,1,1,100.0,-1.0,created,bid", "4,1,1,100.0,created,bid",
                                 "4,1,x,100.0,1.0,created,bid"])
def test_bitstamp_l3_malformed(tmp_path, bad):
    p = tmp_path / "orders.csv"
    p.write_text("id,timestamp,exchange_timestamp,price,volume,action,direction\n"
                 f"1,1,1,100.0,1.0,created,bid\n{bad}\n2,2,2,101.0,1.0,created,ask\n")
    with pytest.raises(ParseError) as ei:
        F.read_bitstamp_l3(p)
    assert ei.value.line == 3
    r = F.BitstampL3Reader(p, on_error="skip")
    assert len(r.read()) == 2 and r.errors.count == 1


# ------------------------------------------------------------------------------------------------
# Generic CSV / Parquet
# ------------------------------------------------------------------------------------------------

def test_generic_trades_equal_dedicated_readers():
    """The generic reader, given the column names, reads the real files like the dedicated ones."""
    path = data_file("bitstamp_ob_analytics", "trades.csv")
    cols = {"ts": "exchange_timestamp", "ts_local": "timestamp", "price": "price",
            "size": "amount", "side": "side", "trade_id": "trade_id"}
    for chunk_rows in (7, 10**6):
        g = F.read_trades(path, cols, ts_unit="ms", chunk_rows=chunk_rows)
        ref = F.read_bitstamp_trades(path)
        for k, v in ref.as_dict().items():
            np.testing.assert_array_equal(getattr(g, k), v, err_msg=k)
    path = data_file("tardis", TARDIS_TRADES)
    cols = {"ts": "timestamp", "ts_local": "local_timestamp", "price": "price",
            "size": "amount", "side": "side", "trade_id": "id"}
    g = F.read_trades(path, cols, ts_unit="us")
    ref = F.read_tardis(path)
    for k, v in ref.as_dict().items():
        np.testing.assert_array_equal(getattr(g, k), v, err_msg=k)


def test_generic_quotes_csv_units_and_errors(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text("time;bb;bq;aa;aq;seq\n"
                 "1618678133.136361;10.5;1;10.6;2;7\n"
                 "2021-04-17T16:48:53.575687Z;10.5;0;10.7;3;8\n"
                 "1618678134;;0;10.7;3;9\n")
    cols = {"ts": "time", "bid_px": "bb", "bid_sz": "bq", "ask_px": "aa", "ask_sz": "aq",
            "update_id": "seq"}
    q = F.read_quotes(p, cols, ts_unit="s", delimiter=";")
    np.testing.assert_array_equal(q.ts_exchange, [1618678133_136361000, 1618678133_575687000,
                                                  1618678134_000000000])
    assert (q.ts_local == F.NO_TIME).all()
    assert np.isnan(q.bid_px[2]) and q.bid_sz[2] == 0 and q.ask_sz[1] == 3
    np.testing.assert_array_equal(q.update_id, [7, 8, 9])
    with pytest.raises(ValueError, match="bid_sz"):
        F.QuotesReader(p, {"ts": "time", "bid_px": "bb"})
    with pytest.raises(ValueError, match="header"):
        F.read_quotes(p, dict(cols, ts="when"), delimiter=";")
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,price,size,side\n1,10,1,buy\n2,10,-1,sell\n3,10,1,hold\n4,10,1\n5,11,2,S\n")
    with pytest.raises(ParseError) as ei:
        F.read_trades(bad, {"ts": "ts", "price": "price", "size": "size", "side": "side"})
    assert ei.value.line == 3
    r = F.TradesReader(bad, {"ts": "ts", "price": "price", "size": "size", "side": "side"},
                       on_error="skip", chunk_rows=2)
    t = r.read()
    assert r.errors.count == 3 and [x[0] for x in r.errors.first] == [3, 4, 5]
    np.testing.assert_array_equal(t.ts_exchange, [1, 5])
    np.testing.assert_array_equal(t.side, [1, -1])


def test_generic_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 1000
    ts = np.arange(n, dtype=np.int64) * 1_000_003 + 1_600_000_000_000_000_000
    table = pa.table({"t": pa.array(ts, pa.timestamp("ns")), "px": np.linspace(1, 2, n),
                      "qty": np.arange(n, dtype=np.float64),
                      "aggr": np.where(np.arange(n) % 3 == 0, "buy", "sell")})
    p = tmp_path / "t.parquet"
    pq.write_table(table, p)
    cols = {"ts": "t", "price": "px", "size": "qty", "side": "aggr"}
    whole = F.read_trades(p, cols)
    np.testing.assert_array_equal(whole.ts_exchange, ts)
    np.testing.assert_array_equal(whole.price, np.linspace(1, 2, n))
    np.testing.assert_array_equal(whole.side, np.where(np.arange(n) % 3 == 0, 1, -1))
    parts = list(F.iter_trades(p, cols, chunk_rows=64))
    assert max(len(x) for x in parts) == 64
    joined = F.Trades.concat(parts)
    for k, v in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)
    # integer ms timestamps in Parquet are scaled like CSV ones
    pq.write_table(pa.table({"t": ts // 10**6, "px": np.ones(n), "qty": np.ones(n)}), p)
    t = F.read_trades(p, {"ts": "t", "price": "px", "size": "qty"}, ts_unit="ms")
    np.testing.assert_array_equal(t.ts_exchange, ts // 10**6 * 10**6)
    assert (t.side == 0).all()


# ------------------------------------------------------------------------------------------------
# Differential (hypothesis): the vectorised LOBSTER parse vs an independent exact reference
# ------------------------------------------------------------------------------------------------


_row = st.tuples(st.integers(0, 86_399), st.text("0123456789", min_size=0, max_size=12),
                 st.sampled_from([1, 2, 3, 4, 5]), st.integers(0, 10**12),
                 st.integers(0, 10**6), st.integers(1, 10**8), st.sampled_from([1, -1]))


def _ns_reference(sec, frac):
    """Seconds string -> ns with Fraction arithmetic, sub-ns rounded half up."""
    x = Fraction(f"{sec}.{frac}" if frac else str(sec)) * 10**9
    return int(x) + (1 if x - int(x) >= Fraction(1, 2) else 0)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=40), chunk_rows=st.integers(1, 50))
def test_lobster_parse_matches_exact_reference(rows, chunk_rows):
    rows = sorted(rows, key=lambda r: _ns_reference(r[0], r[1]))
    lines = [(f"{s}.{f}" if f else f"{s}") + f",{t},{i},{z},{p},{d}"
             for s, f, t, i, z, p, d in rows]
    with tempfile.TemporaryDirectory() as tmp:
        mp = Path(tmp) / "X_2020-03-02_34200000_57600000_message_1.csv"
        mp.write_text("\n".join(lines) + "\n")
        whole = F.read_lobster(mp, orderbook=False, tz=None)
        parts = F.LobsterMessages.concat(list(F.iter_lobster(mp, orderbook=False, tz=None,
                                                             chunk_rows=chunk_rows)))
    base = 1_583_107_200 * 10**9
    exp_ts = [base + _ns_reference(s, f) for s, f, *_ in rows]
    assert whole.ts.tolist() == exp_ts
    assert whole.price.tolist() == [p / 10_000 for *_, p, _ in rows]
    assert whole.side.tolist() == [(-d if t in (4, 5) else 0) for _, _, t, _, _, _, d in rows]
    for k, v in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(parts, k), v, err_msg=k)


def test_kraken_coinbase_chunked_equal_whole():
    path = data_file("cryptofeed_sample_data", "KRAKEN.ws.50.0")
    whole = F.read_kraken_book(path, pair="XMR/USD")
    parts = list(F.KrakenBookReader(path, pair="XMR/USD", chunk_rows=100))
    assert len(parts) > 5
    joined = F.BookDeltas.concat(parts)
    for k, v in whole.as_dict().items():
        np.testing.assert_array_equal(getattr(joined, k), v, err_msg=k)
    path = data_file("cryptofeed_sample_data", "COINBASE.ws.28.0")
    whole = F.read_coinbase(path, product="SKL-BTC")
    parts = list(F.CoinbaseReader(path, product="SKL-BTC", chunk_rows=50))
    assert len(parts) > 5
    for name in ("depth", "trades"):
        joined = type(getattr(whole, name)).concat([getattr(p, name) for p in parts])
        for k, v in getattr(whole, name).as_dict().items():
            np.testing.assert_array_equal(getattr(joined, k), v, err_msg=f"{name}.{k}")


def test_tardis_gzip_equals_plain(tmp_path):
    src = data_file("tardis", TARDIS_L2)
    gz = tmp_path / "l2.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    a, b = F.read_tardis(src), F.read_tardis(gz, chunk_rows=333)
    for k, v in a.as_dict().items():
        np.testing.assert_array_equal(getattr(b, k), v, err_msg=k)


def test_bitstamp_l3_taker_sweep_removes_no_snapshot_order(tmp_path):
    # a taker bid at 105 sweeps snapshot asks 101 and 102 within exchange ms 6 (its makers are
    # named by their own deletes) and is deleted in the same ms: ask 103 is no stale order
    p = tmp_path / "orders.csv"
    p.write_text("id,timestamp,exchange_timestamp,price,volume,action,direction\n"
                 "1,9,5,100.0,1.0,created,bid\n"
                 "2,9,5,101.0,1.0,created,ask\n"
                 "3,9,5,102.0,1.0,created,ask\n"
                 "4,9,5,103.0,1.0,created,ask\n"
                 "7,10,6,105.0,2.0,created,bid\n"
                 "2,10,6,101.0,0.0,deleted,ask\n"
                 "7,10,6,101.0,1.0,changed,bid\n"
                 "3,10,6,102.0,0.0,deleted,ask\n"
                 "7,10,6,102.0,0.0,deleted,bid\n"
                 "8,11,7,99.0,1.0,created,bid\n")
    r = F.BitstampL3Reader(p)
    list(r)
    assert r.stats["stale_removed"] == 0 and set(r.orders) == {1, 4, 8}


def _grouped_tardis(tmp_path, name, every=3):
    """A Tardis 'grouped' file (as PERPETUALS / SPOT downloads are): the shared BTCUSDT rows,
    with every ``every``-th row also written as an ETHUSDT row right after it."""
    lines = data_file("tardis", name).read_text().splitlines(keepends=True)
    out, eth = [lines[0]], 0
    for i, ln in enumerate(lines[1:]):
        out.append(ln)
        if i % every == 0:
            out.append(ln.replace(",BTCUSDT,", ",ETHUSDT,"))
            eth += 1
    p = tmp_path / name.replace("BTCUSDT", "PERPETUALS")
    p.write_text("".join(out))
    return p, eth, len(lines) - 1


@pytest.mark.parametrize("name", [TARDIS_L2, TARDIS_TRADES])
def test_tardis_grouped_file_reads_one_symbol(tmp_path, name):
    """Every row's symbol is checked: symbol= reads that symbol's rows only (the others
    counted), exactly the single-symbol file's arrays; without symbol= a second symbol is an
    error naming its line."""
    p, eth, btc = _grouped_tardis(tmp_path, name)
    whole = F.read_tardis(data_file("tardis", name))
    for chunk_rows in (7, 10**6):
        r = F.TardisReader(p, symbol="BTCUSDT", chunk_rows=chunk_rows)
        got = type(whole).concat(list(r))
        for k, v in whole.as_dict().items():
            np.testing.assert_array_equal(getattr(got, k), v, err_msg=k)
        assert r.stats["other_symbol"] == eth and r.stats["rows"] == btc
    r = F.TardisReader(p, symbol="ETHUSDT")
    assert len(r.read()) == eth and r.stats["other_symbol"] == btc
    with pytest.raises(ParseError) as ei:
        F.read_tardis(p)
    assert ei.value.line == 3 and "symbol" in str(ei.value) and "ETHUSDT" in str(ei.value)


def test_tardis_grouped_file_through_feeds_open(tmp_path):
    p, eth, btc = _grouped_tardis(tmp_path, TARDIS_L2)
    with pytest.raises(InputError, match=r"several symbols \(BTCUSDT, ETHUSDT\)"):
        F.open([p])
    with pytest.raises(InputError, match=r"no symbol 'XRPUSDT'.*BTCUSDT, ETHUSDT"):
        F.open([p], symbol="XRPUSDT")
    src = F.open([p], symbol="ETHUSDT")
    assert src.symbol == "ETHUSDT" and src.symbols == ["BTCUSDT", "ETHUSDT"]
    assert sum(len(c) for c in src.chunks()) == eth
    assert src.quality.other_symbol == btc
