"""ofi_fast.live against a local Binance (ofi_fast.live.replay) on 127.0.0.1 serving the
hftbacktest recordings in the exchange's wire format, accelerated; every case of issue 16.

Each test replays the first few thousand lines of a recording (tens of seconds of market time)
and is bounded by asyncio.wait_for. Skips when websockets or the data is absent.
"""

import asyncio
import math
import time

import numpy as np
import pytest

pytest.importorskip("websockets")

import ofi_fast  # noqa: E402
from ofi_fast.feeds.binance import BinanceSync, new_stats  # noqa: E402
from ofi_fast.live import BinanceStream, LiveError, bars  # noqa: E402
from ofi_fast.live.replay import ReplayExchange  # noqa: E402
from tests.conftest import data_file  # noqa: E402

NS = 1_000_000_000
LIMIT = 30.0        # seconds: no test may take longer


def head(market, n, tmp_path):
    """The first ``n`` lines of the market's recording, as a plain file."""
    import gzip
    src = data_file("binance_hftbacktest", market, "btcusdt_20240808.gz")
    out = tmp_path / f"{market}_{n}.txt"
    with gzip.open(src, "rb") as f, open(out, "wb") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            g.write(line)
    return out


async def _session(path, market, *, clock="exchange", speed=50.0, every=2.0, window=1.0,
                   stream_kw=None, **faults):
    async with ReplayExchange(path, speed=speed, **faults) as ex:
        s = BinanceStream("BTCUSDT", market, ws_url=ex.ws_url, rest_url=ex.rest_url,
                          clock=clock, backoff=(0.05, 0.2), **(stream_kw or {}))
        out = []

        async def consume():
            async for b in bars(s, every=every, window=window):
                out.append(b)
        task = asyncio.ensure_future(consume())
        await ex.done.wait()
        t0, seen = time.monotonic(), -1
        while s.no != seen and time.monotonic() - t0 < 5:   # until the client has drained
            seen = s.no
            await asyncio.sleep(0.3)
        s.close()
        await asyncio.wait_for(task, 5)
    return s, ex, out


def live(path, market, **kw):
    return asyncio.run(asyncio.wait_for(_session(path, market, **kw), LIMIT))


def same(a, b):
    """Bars equal field by field (NaN == NaN)."""
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b))


def diff_lines(path):
    """Line numbers (1-based) of the recording's depth diffs."""
    with open(path, "rb") as f:
        return [i for i, line in enumerate(f, 1) if b'"depthUpdate"' in line]


@pytest.mark.parametrize("market,n", [("usdm", 6000), ("spot", 5000)])
def test_exchange_clock_bars_equal_stream(market, n, tmp_path):
    f = head(market, n, tmp_path)
    s, ex, got = live(f, market)
    want = list(ofi_fast.stream(f, every=2.0, window=1.0, clock="exchange"))
    assert ex.sent == n - 1 and s.no == n - 1        # every message but the REST snapshot
    assert len(want) >= 10 and len(got) == len(want)
    bad = [(a, b) for a, b in zip(got, want) if not same(a, b)]
    assert not bad, bad[:2]
    q = s.quality
    assert q.reconnects == 0 and q.gaps == () and q.lost == 0 and s.stats["late"] == 0
    assert q.messages_applied == s.stats["applied"] + 1 and all(b.valid for b in got)


def test_server_close_reconnects_and_resyncs(tmp_path):
    f = head("usdm", 8000, tmp_path)
    cut = diff_lines(f)[250]
    s, ex, got = live(f, "usdm", close_at=[cut], speed=10.0)
    want = {b.start_ns: b for b in ofi_fast.stream(f, every=2.0, window=1.0, clock="exchange")}
    q = s.quality
    assert q.reconnects == 1 and s.stats["connections"] == 2 and len(q.disconnects) == 1
    d = q.disconnects[0]
    assert d.resync_ts is not None and d.resync_ts >= d.ts and d.seconds_invalid >= 0
    assert q.gaps == ()                       # an outage is not a sequence gap
    assert s.stats["snapshots"] == 2
    assert s.stats["snapshot_fetches"] == 2 + s.stats["snapshot_errors"]
    # bars overlapping the outage are flagged; bars from two bars after the resync are exact
    k_res = d.resync_ts // (2 * NS)
    flagged = [b for b in got if not b.valid]
    assert flagged and all(d.ts < b.start_ns + 2 * NS and b.start_ns <= d.resync_ts
                           for b in flagged)
    after = [b for b in got if b.start_ns // (2 * NS) >= k_res + 2]
    assert len(after) >= 5
    for b in after:
        assert same(b, want[b.start_ns]), (b, want[b.start_ns])


def test_gap_resyncs_duplicate_ignored_garbage_counted(tmp_path):
    f = head("spot", 5000, tmp_path)
    diffs = diff_lines(f)
    skipped, dup = diffs[200], diffs[100]
    # speed 10: the 456 diffs replay over 4.6 s, so the snapshot fetched after the gap (at
    # diff 200) has seconds to arrive on a loaded machine (at speed 50 it had half a second)
    s, ex, got = live(f, "spot", skip=[skipped], duplicate=[dup], garbage_at=[diffs[50]],
                      speed=10.0)
    q = s.quality
    assert len(q.gaps) == 1 and q.resyncs == 1 and q.reconnects == 0
    g = q.gaps[0]
    assert "U=" in g.detail and g.resync_ts is not None
    assert s.stats["duplicates"] == 1 and q.dropped["duplicate"] == 1
    assert q.dropped["parse_skip"] == 1 and len(q.parse_first) == 1
    assert "bad Binance message" in q.parse_first[0][1]
    # (a request that fails on a loaded machine is asked again, and counted apart)
    assert s.stats["snapshot_fetches"] == 2 + s.stats["snapshot_errors"] and s.valid
    assert any(not b.valid for b in got) and got[-1].valid
    # the duplicate changed nothing: bars before the gap equal the file's (which has no dup)
    want = {b.start_ns: b for b in ofi_fast.stream(f, every=2.0, window=1.0, clock="exchange")}
    before = [b for b in got if b.start_ns + 2 * NS <= g.ts]
    assert len(before) >= 3 and all(same(b, want[b.start_ns]) for b in before)


def test_silence_reconnects_after_timeout(tmp_path):
    f = head("usdm", 6000, tmp_path)
    mute = diff_lines(f)[200]
    t0 = time.monotonic()
    # speed 10: 2.5 s of replay, so the reconnect and its snapshot after the 0.4 s silence
    # leave hundreds of diffs to apply even when the machine is loaded
    s, ex, got = live(f, "usdm", silent_at=mute, speed=10.0, stream_kw={"silence": 0.4})
    assert time.monotonic() - t0 < LIMIT
    # (a second silence may follow the end of the replay, before the test closes the stream)
    assert s.stats["silences"] >= 1 and s.quality.reconnects == s.stats["silences"]
    d = s.quality.disconnects[0]
    assert "no message for 0.4 s" in d.detail and d.resync_ts is not None
    assert s.no - d.resync_line > 500                 # it went on after the reconnect
    assert s.stats["applied"] > 250 and any(not b.valid for b in got)


def test_planned_reconnect_before_max_age(tmp_path):
    f = head("spot", 3000, tmp_path)
    s, ex, got = live(f, "spot", speed=10.0, stream_kw={"max_age": 1.0})
    q = s.quality
    assert s.stats["planned"] >= 2 and s.stats["connections"] == s.stats["planned"] + 1
    assert q.reconnects == s.stats["planned"] and s.stats["silences"] == 0
    # each outage but the last (the replay may end before its snapshot) resynced
    assert all(d.resync_ts is not None for d in q.disconnects[:-1])
    assert all("planned" in d.detail for d in q.disconnects)


@pytest.mark.parametrize("fault", [False, True])
def test_record_then_analyze_gives_the_live_bars(fault, tmp_path):
    f = head("usdm", 7000, tmp_path)
    rec = tmp_path / "rec.gz"
    faults = {"close_at": [diff_lines(f)[250]]} if fault else {}
    s, ex, got = live(f, "usdm", clock="local", every=0.2, window=0.2, speed=10.0,
                      stream_kw={"record": str(rec)}, **faults)
    assert s.quality.reconnects == int(fault)
    again = list(ofi_fast.stream(rec, every=0.2, window=0.2))      # local clock
    assert len(again) == len(got) >= 10
    for a, b in zip(got, again):
        assert same(a._replace(valid=True), b._replace(valid=True)), (a, b)
    # ofi-fast analyze FILE: the same bars (trades, OFI and closing mid per bar; analyze's
    # ``events`` counts L2 rows, the stream's bars count messages)
    a = ofi_fast.analyze(str(rec), every=0.2)
    t = a.bars
    by = {int(k): i for i, k in enumerate(t["start_ns"])}
    assert int(np.sum(t["n_trades"])) == sum(b.trades for b in got)
    for b in got:
        i = by[b.start_ns]
        assert t["n_trades"][i] == b.trades
        assert t["ofi"][i] == pytest.approx(b.ofi, abs=1e-9)
        assert t["mid_close"][i] == b.mid or (np.isnan(b.mid) and np.isnan(t["mid_close"][i]))


def test_snapshot_older_than_buffered_diffs_is_refetched():
    sync = BinanceSync(market="spot", on_gap="resync", stats=new_stats())
    d = {"e": "depthUpdate", "E": 1, "s": "X", "U": 105, "u": 110, "b": [], "a": []}
    from ofi_fast.feeds._l2 import BookDeltas, Columns
    sync.diff(1, 1, d, Columns(BookDeltas))
    assert sync.snapshot_is_old(100)         # 101 is missing between snapshot and diff
    assert not sync.snapshot_is_old(104) and not sync.snapshot_is_old(107)
    assert not sync.snapshot_is_old(110)     # newer than every diff: wait for the next


def test_bad_arguments_are_one_line_errors():
    for kw, word in [({"market": "coinm"}, "market"), ({"clock": "gps"}, "clock"),
                     ({"silence": 0}, "silence"), ({"trades": "kline"}, "trades")]:
        with pytest.raises(LiveError, match=word):
            BinanceStream("BTCUSDT", **kw)
    with pytest.raises(LiveError, match="symbol"):
        BinanceStream("BTC/USDT")


def test_cli_live_prints_the_stream_bars_and_the_report(tmp_path, capsys):
    """``ofi-fast live binance-spot BTCUSDT --clock exchange`` against the replay (run in a
    thread): the bar lines are those of ``ofi-fast stream`` on the same recording."""
    import threading
    from ofi_fast.cli import main
    from ofi_fast.cli.stream import stream_line
    f = head("spot", 4000, tmp_path)
    rec = tmp_path / "cli.txt"
    ready, urls, stop = threading.Event(), {}, None

    def serve():
        nonlocal stop

        async def run():
            nonlocal stop
            stop = asyncio.Event()
            async with ReplayExchange(f, speed=20.0) as ex:
                urls.update(ws=ex.ws_url, rest=ex.rest_url)
                ready.set()
                await asyncio.wait_for(stop.wait(), LIMIT)
        asyncio.run(run())
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    assert ready.wait(10)
    try:
        rc = main(["live", "binance-spot", "BTCUSDT", "--clock", "exchange", "--every", "2",
                   "--duration", "2.5", "--ws-url", urls["ws"], "--rest-url", urls["rest"],
                   "--record", str(rec)])
    finally:
        stop._loop.call_soon_threadsafe(stop.set)
        th.join(10)
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    bar_lines = lines[2:lines.index("")]
    want = [stream_line(b) for b in ofi_fast.stream(f, every=2.0, window=1.0,
                                                     clock="exchange")]
    # (the session ends mid-replay: the last two bars may be partial)
    assert len(bar_lines) >= 5 and bar_lines[:-2] == want[:len(bar_lines) - 2]
    assert "latency (b) local receive -> signal updated" in out
    assert "reconnects 0" in out and "gaps 0, resyncs 0" in out
    assert rec.stat().st_size > 0


@pytest.mark.parametrize("market", ["usdm", "spot"])
def test_direct_diff_arrays_equal_the_state_machine_rows(market):
    """The live fast path (ofi_fast.live._diff_deltas) gives the rows BinanceSync.diff
    appends, value for value, on every diff of the recording; bad levels are refused."""
    from ofi_fast.feeds._l2 import BookDeltas, Columns
    from ofi_fast.feeds._recorded import loads
    from ofi_fast.live import _diff_deltas
    from ofi_fast.live.replay import read_lines
    lines = read_lines(data_file("binance_hftbacktest", market, "btcusdt_20240808.gz"))
    n = 0
    for no, ts, body in lines:
        if b'"depthUpdate"' not in body:
            continue
        data = loads(body)["data"]
        sync = BinanceSync(market=market, on_gap="resync")
        sync.state, sync.prev_u = "sync", int(data["pu"] if market == "usdm" else
                                                data["U"] - 1)
        cols = Columns(BookDeltas)
        sync.diff(no, ts, data, cols)
        want = cols.flush()
        got = _diff_deltas(data, ts)
        for k in BookDeltas.DTYPES:
            assert np.array_equal(getattr(got, k), getattr(want, k)), (no, k)
            assert getattr(got, k).dtype == getattr(want, k).dtype
        n += 1
    assert n > 3000
    bad = {"E": 1, "u": 2, "b": [["1.0", "-1"]], "a": []}
    with pytest.raises(ValueError, match="bad price or size"):
        _diff_deltas(bad, 0)
    with pytest.raises(ValueError):
        _diff_deltas({"E": 1, "u": 2, "b": [["1.0"]], "a": []}, 0)
    with pytest.raises(ValueError):
        _diff_deltas({"E": 1, "u": 2, "b": [["nan", "1"]], "a": []}, 0)


@pytest.mark.parametrize("silent", [False, True])
def test_unknown_symbol_is_one_clear_error(silent, tmp_path):
    """The exchange refuses the snapshot (HTTP 400, Binance's body): a LiveError naming it,
    not an endless retry, also when the websocket sends nothing (as Binance does for an
    unknown symbol's streams)."""
    f = head("spot", 500, tmp_path)

    async def run():
        async with ReplayExchange(f, speed=10.0, silent_at=1 if silent else None) as ex:
            s = BinanceStream("ETHUSDT", "spot", ws_url=ex.ws_url, rest_url=ex.rest_url)
            async for _ in s:
                pass
    with pytest.raises(LiveError, match="HTTP 400.*Invalid symbol"):
        asyncio.run(asyncio.wait_for(run(), LIMIT))


@pytest.mark.parametrize("market,n", [("usdm", 55), ("spot", 8)])
def test_a_snapshot_after_the_last_message_is_applied_when_it_arrives(market, n, tmp_path):
    """The recording ends with its REST snapshot: the replay sends every diff, then answers
    the snapshot request, and no message follows. The snapshot is applied on arrival (not at
    a next message that never comes): the buffered diffs it makes applicable are applied, and
    the bars equal ofi_fast.stream's on the same file."""
    f = head(market, n, tmp_path)
    s, ex, got = live(f, market)
    want = list(ofi_fast.stream(f, every=2.0, window=1.0, clock="exchange"))
    assert s.no == n - 1 and s.stats["snapshots"] == 1
    assert s.sync.state in ("first", "sync") and s.sync.last_id is not None
    assert len(got) == len(want) >= 1
    assert all(same(a, b) for a, b in zip(got, want)), (got, want)
    assert not math.isnan(got[-1].mid)                   # the book was loaded


@pytest.mark.parametrize("market,n", [("usdm", 6000), ("spot", 5000)])
def test_the_compiled_per_diff_path_takes_the_in_sequence_diffs(market, n, tmp_path):
    """bars() applies the in-sequence diffs through DiffBuffers.step (no state machine call,
    no async-generator hop): nearly every applied diff, and the bars stay ofi_fast.stream's
    (test_exchange_clock_bars_equal_stream checks them on the same runs)."""
    f = head(market, n, tmp_path)
    s, ex, got = live(f, market)
    applied = s.stats["applied"]
    # not taken: the straddling first diff, the diffs replayed at the snapshot, the first
    # diff of each bar (the bar change goes the Python way)
    assert applied > 100 and s.direct >= applied - 3 - 2 * len(got) - 60
    assert s.direct <= applied and len(s.latency.signal) >= s.direct
    want = list(ofi_fast.stream(f, every=2.0, window=1.0, clock="exchange"))
    assert len(got) == len(want) and all(same(a, b) for a, b in zip(got, want))
