"""Live client against the local replay exchange: receive-to-signal latency and whether one
client keeps up with an accelerated replay of a recording (issue 16).

    python bench/bench_live.py --market usdm --speed 100        # the whole USD-M recording
    git show 102eb57:ofi_fast/live/__init__.py > /tmp/live_old.py
    python bench/bench_live.py --market usdm --baseline /tmp/live_old.py --repeat 3   # A/B
    python -m pytest bench/bench_live.py --benchmark-only

The replay exchange (ofi_fast.live.replay) runs in a child process (its own interpreter, so it
does not take the client's CPU); the client (BinanceStream + bars, exchange clock, 10 s bars)
runs here. Reported: messages received, the replay's schedule and wall time, the server's
largest lag behind its schedule (it grows when the client cannot drain the socket: TCP
backpressure), the client's drain time after the server's last send, and the receive-to-signal
latency per applied depth diff (perf_counter_ns right after the websocket returned the message
to the BookOFI updated: decoding, sync, OFI; under bars() one DiffBuffers.step call for the
in-sequence diffs), p50 / p99 / max, and the same
span in thread CPU time (what the work costs when the machine's other processes are taken
out), and the client's CPU time per message received (keeping up at speed S needs less than
the recording's span / messages / S: 36.7 us at 100x on USD-M). ``--baseline FILE``: an older
``ofi_fast/live/__init__.py`` run as the client in turns with the current one (same replay, same
minutes: the machine's load drifts), one line each, marked ``client=baseline|current``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("OFI_FAST_DATA", Path(__file__).resolve().parents[1].parent
                           / "shared" / "data"))


def _serve(path, speed, q):
    from ofi_fast.live.replay import ReplayExchange

    async def run():
        async with ReplayExchange(path, speed=speed) as ex:
            q.put(("ready", ex.port, len(ex.lines), ex.lines[-1][1] - ex.lines[0][1]))
            await ex.done.wait()
            q.put(("done", ex.sent, ex.lag_ns, time.time()))
            await asyncio.sleep(30)
    asyncio.run(run())


def run(market="usdm", speed=100.0, every=10.0):
    """One session; returns a dict of the measurements."""
    from ofi_fast.live import BinanceStream, LiveLatency, bars
    path = DATA / "binance_hftbacktest" / market / "btcusdt_20240808.gz"
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(str(path), speed, q), daemon=True)
    proc.start()
    try:
        _, port, n_lines, span_ns = q.get(timeout=120)
        url = f"127.0.0.1:{port}"
        s = BinanceStream("BTCUSDT", market, ws_url=f"ws://{url}", rest_url=f"http://{url}",
                          clock="exchange", silence=30.0)
        n_bars = 0
        t0 = time.time()
        done = {}

        async def consume():
            nonlocal n_bars
            async for _ in bars(s, every=every, window=1.0):
                n_bars += 1

        async def watch():
            while True:
                await asyncio.sleep(0.05)
                if not q.empty():
                    _, sent, lag, t_done = q.get()
                    done.update(sent=sent, lag=lag, t_done=t_done)
                    while s.no < sent:
                        await asyncio.sleep(0.001)
                    done["t_drained"] = time.time()
                    s.close()
                    return

        async def main():
            task = asyncio.ensure_future(consume())
            await asyncio.wait_for(watch(), 600)
            await asyncio.wait_for(task, 30)
        c0 = time.process_time()
        asyncio.run(main())
        cpu_s = time.process_time() - c0
    finally:
        proc.terminate()
        proc.join(5)
    sig = np.asarray(s.latency.signal, np.int64)
    p50, p99 = LiveLatency.percentiles(s.latency.signal)
    c50, c99 = LiveLatency.percentiles(s.latency.signal_cpu)
    return {"market": market, "speed": speed, "lines": n_lines, "received": s.no,
            "sent": done["sent"], "schedule_s": span_ns / 1e9 / speed,
            "wall_s": done["t_done"] - t0, "server_lag_ms": done["lag"] / 1e6,
            "drain_ms": (done["t_drained"] - done["t_done"]) * 1e3,
            "diffs_timed": int(sig.size), "signal_p50_us": p50 / 1e3,
            "signal_p99_us": p99 / 1e3, "signal_max_us": float(sig.max()) / 1e3,
            "signal_cpu_p50_us": c50 / 1e3, "signal_cpu_p99_us": c99 / 1e3,
            "client_cpu_us_per_msg": cpu_s / max(1, s.no) * 1e6,
            "bars": n_bars, "reconnects": s.quality.reconnects, "gaps": len(s.quality.gaps)}


def test_live_replay_latency(benchmark):
    import pytest
    pytest.importorskip("websockets")
    if not (DATA / "binance_hftbacktest").is_dir():
        pytest.skip("no ../shared/data/binance_hftbacktest")
    r = benchmark.pedantic(run, kwargs={"market": "usdm", "speed": 100.0}, rounds=1,
                           iterations=1)
    benchmark.extra_info.update(r)
    assert r["received"] == r["sent"] and r["gaps"] == 0 and r["reconnects"] == 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--market", default="usdm", choices=("usdm", "spot"))
    ap.add_argument("--speed", type=float, default=100.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline", help="an older ofi_fast/live/__init__.py to run in turns")
    a = ap.parse_args()
    import ofi_fast.live as current
    clients = [("current", current)]
    if a.baseline:
        import importlib.util
        spec = importlib.util.spec_from_file_location("ofi_fast_live_baseline", a.baseline)
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)
        clients.insert(0, ("baseline", base))
    for _ in range(a.repeat):
        for name, mod in clients:
            sys.modules["ofi_fast.live"] = mod          # run() imports the client from here
            r = run(a.market, a.speed)
            print(f"client={name} " * bool(a.baseline) + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()),
                flush=True)
    sys.modules["ofi_fast.live"] = current
    sys.exit(0)
