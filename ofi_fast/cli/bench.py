"""``ofi-fast bench``: latency of the streaming classes beside the empty-call floor."""

from __future__ import annotations

import math
import sys
import time

from ofi_fast.cli._common import NS_PER_S, _positive
from ofi_fast.cli.stream import _percentiles, _timed_loop


def bench_rows(n_events, seed=0):
    """Latency rows of ``ofi-fast bench``: (name, p50, p99, p99.9, batch ns/event or None)."""
    import ofi_fast
    from ofi_fast._ofi import _EmptyCall
    from ofi_fast.simulate import simulate
    r = simulate(n_events, seed=seed, levels=1)
    bp, bs, ap, az = r.best()
    ts = r.ts
    rows = list(zip(ts.tolist(), bp.tolist(), bs.tolist(), ap.tolist(), az.tolist()))
    ts_vals = list(zip(ts.tolist(), (bs - az).tolist()))
    results = []

    def batch(fn):
        best = math.inf
        for _ in range(3):
            t = time.perf_counter_ns()
            fn()
            best = min(best, time.perf_counter_ns() - t)
        return best / n_events

    cases = [
        ("empty call (floor)", lambda: _EmptyCall().update, rows, None),
        ("OFI()", lambda: ofi_fast.OFI().update, rows,
         lambda: ofi_fast.OFI().update_many(ts, bp, bs, ap, az)),
        ("OFI(window=1000)", lambda: ofi_fast.OFI(window=1000).update, rows,
         lambda: ofi_fast.OFI(window=1000).update_many(ts, bp, bs, ap, az)),
        ("OFI(window_time=1s)", lambda: ofi_fast.OFI(window_time=NS_PER_S, grow=True).update,
         rows, lambda: ofi_fast.OFI(window_time=NS_PER_S, grow=True).update_many(
             ts, bp, bs, ap, az)),
        ("RollingSum(window_time=1s)",
         lambda: ofi_fast.RollingSum(window_time=NS_PER_S, grow=True).update, ts_vals,
         lambda: ofi_fast.RollingSum(window_time=NS_PER_S, grow=True).update_many(
             ts, bs - az)),
        ("l1_ofi (batch)", None, None, lambda: ofi_fast.l1_ofi(bp, bs, ap, az)),
    ]
    for name, make, data, many in cases:
        p = _percentiles(_timed_loop(make(), data)) if make else (math.nan,) * 4
        results.append((name, p[0], p[1], p[2], batch(many) if many else None))
    return results


def cmd_bench(args):
    t0 = time.perf_counter()
    res = bench_rows(args.events, args.seed)
    print(f"ofi-fast bench: {args.events:,} simulated events, Python {sys.version.split()[0]}")
    print("per call (perf_counter_ns around each call, timer included), and batch ns/event:")
    print(f"  {'':<28}{'p50':>8}{'p99':>8}{'p99.9':>8}{'batch':>10}")
    for name, a, b, c, many in res:
        def f(v):
            return "-" if v is None or math.isnan(v) else f"{v:.0f}"
        bt = "-" if many is None else f"{many:.1f}"
        # a space before each column, so a number wider than its column stays apart
        print(f"  {name:<28} {f(a):>7} {f(b):>7} {f(c):>7} {bt:>9}")
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    return 0



def register(sub):
    b = sub.add_parser("bench", help="latency of the streaming classes on this machine")
    b.add_argument("--events", type=_positive(int), default=200_000, metavar="N",
                   help="simulated events per case (default 200,000)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=cmd_bench)
