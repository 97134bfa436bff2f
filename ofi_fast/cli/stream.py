"""``ofi-fast stream``: :func:`ofi_fast.stream`, one line per bar, then latency percentiles."""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from ofi_fast.cli._common import NS_PER_S, _input_kw, _positive, add_inputs


def _percentiles(lat):
    if lat.size == 0:
        return (math.nan,) * 4
    p = np.percentile(lat, [50, 99, 99.9])
    return float(p[0]), float(p[1]), float(p[2]), float(lat.max())


def _timed_loop(fn, rows):
    """Call ``fn(*row)`` for each row, timing each call with perf_counter_ns: int64 ns."""
    lat = np.empty(len(rows), np.int64)
    clock = time.perf_counter_ns
    for i, r in enumerate(rows):
        t = clock()
        fn(*r)
        lat[i] = clock() - t
    return lat


def _tod(ts):
    """Time of day of ns timestamps (after midnight, or since the epoch: UTC) as HH:MM:SS.fff."""
    s = (ts % (86400 * NS_PER_S)) / NS_PER_S
    return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"


def stream_line(b):
    """One printed line of ``ofi-fast stream`` for a :class:`ofi_fast.pipeline.StreamBar`."""
    return (f"{_tod(b.start_ns):>12}  {b.events:>8d}  {b.trades:>6d}  {b.ofi:>+11.6g}  "
            f"{b.ofi_window:>+11.6g}  {b.tfi_window:>+11.4f}  {b.mid:>11.6g}  {b.dmid:>+9.4g}"
            + ("" if b.valid else "  (invalid: gap)"))


def cmd_stream(args):
    """Print :func:`ofi_fast.stream` one line per bar (empty bars as the library's bars would
    be: no events, values unchanged; a run of more than 3 as one line), then latencies."""
    from ofi_fast._ofi import _EmptyCall
    from ofi_fast.feeds import open as open_source
    from ofi_fast.pipeline import Latency, _every_ns, stream
    kw = _input_kw(args)
    classify = kw.pop("classify")
    fmt = kw.pop("format")
    every = _every_ns(args.every)
    source = open_source(args.files, fmt, **kw)
    lat = Latency()
    out = sys.stdout
    deltas = source.kind == "deltas"
    unit = "messages" if deltas else "events"
    out.write(f"ofi-fast stream: {source.name}"
              + (f" ({source.symbol})" if source.symbol else "")
              + f"; one line per {args.every:g} s bar, rolling window {args.window:g} s; "
              "times of day UTC (simulator: after midnight)\n")
    out.write(f"{'bar start':>12}  {unit:>8}  {'trades':>6}  {'OFI(bar)':>11}  "
              f"{'OFI(window)':>11}  {'TFI(window)':>11}  {'mid':>11}  {'dmid':>9}\n")
    prev = None
    for b in stream(source, every=args.every, window=args.window, classify=classify,
                    latency=lat):
        if prev is not None:
            gap = (b.start_ns - prev.start_ns) // every - 1
            if 0 < gap <= 3:
                for i in range(1, gap + 1):
                    out.write(stream_line(prev._replace(
                        start_ns=prev.start_ns + i * every, events=0, trades=0, ofi=0.0,
                        dmid=0.0 if prev.mid == prev.mid else math.nan)) + "\n")
            elif gap > 3:
                out.write(f"{'':>12}  ({gap:,} empty bars up to {_tod(b.start_ns)})\n")
        out.write(stream_line(b) + "\n")
        prev = b
    c = lat.first_chunk
    cols = ([c.bid_px, c.bid_sz, c.ask_px, c.ask_sz] if not deltas
            else [c.price, c.size, c.price, c.size])
    rows = list(zip(c.ts[:100_000].tolist(), *(a[:100_000].tolist() for a in cols)))
    floor = _timed_loop(_EmptyCall().update, rows)
    p = _percentiles(np.concatenate(lat.events) if lat.events else np.zeros(0))
    pt = _percentiles(np.concatenate(lat.trades) if lat.trades else np.zeros(0))
    f = _percentiles(floor)
    what = (f"{lat.rows:,} L2 rows (snapshots included) in {lat.units:,} messages" if deltas
            else f"{lat.units:,} events")
    out.write(f"\n{what}, {lat.n_trades:,} trades; latency per call, ns "
              f"(perf_counter_ns around each call, timer included):\n")
    out.write(f"  {'':<30}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>10}\n")

    def row(name, v):
        def g(x):
            return "-" if math.isnan(x) else f"{x:.0f}"
        # a space before each column, so a number wider than its column stays apart
        out.write(f"  {name:<30} {g(v[0]):>7} {g(v[1]):>7} {g(v[2]):>7} {g(v[3]):>9}\n")
    row("BookOFI.update_many (message)" if deltas else "OFI.update", p)
    if lat.n_trades:
        row("TradeFlow.update", pt)
    row("empty call (floor)", f)
    warn = source.quality.warning()
    if warn:
        print(f"ofi-fast: warning: {warn}", file=sys.stderr)
    return 0


def register(sub):
    s = sub.add_parser("stream", help="replay events through the streaming OFI, one line "
                       "per bar, then latency percentiles")
    add_inputs(s, 100_000)
    s.add_argument("--window", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="rolling OFI window in seconds (default 1)")
    s.set_defaults(func=cmd_stream)
