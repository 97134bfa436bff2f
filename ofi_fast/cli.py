"""The ``ofi-fast`` command (also ``python -m ofi_fast``): argument parsing and printing only.

Sub-commands:

- ``ofi-fast analyze [FILE ...]``: :func:`ofi_fast.analyze` (OFI clock bars, the impact fit,
  its walk-forward evaluation and next-bar forecast, trade flow, VPIN, data quality); prints
  the summary (``--json``: the summary dict as one JSON line), writes the bar table (``--out``,
  CSV or Parquet) and a figure (``--plot``). With no FILE it runs on the embedded simulator.
- ``ofi-fast stream [FILE ...]``: :func:`ofi_fast.stream`, one line per bar, then per-call
  latency percentiles.
- ``ofi-fast bench``: latency of the streaming classes beside the empty-call floor.
- ``ofi-fast cks LOBSTER_1.zip ...`` / ``ofi-fast multilevel LOBSTER_M.zip:M ...``: the
  Cont-Kukanov-Stoikov and multi-level tables of :mod:`ofi_fast.analysis`.

Input goes through :func:`ofi_fast.feeds.open`. Every error in the input or the options
(:class:`ofi_fast.OFIError`, including ``ParseError`` and ``SequenceGapError``, and OS errors)
prints one line ``ofi-fast: error: ...`` to stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

NS_PER_S = 1_000_000_000


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _vol(v):
    """A volume: whole numbers with thousands separators, else 6 significant digits."""
    return f"{v:,.0f}" if v == int(v) or abs(v) >= 1e6 else f"{v:,.6g}"


def _t(v, perfect):
    if perfect:
        return "perfect fit"
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def format_summary(s, elapsed=None, input_seconds=None, note=""):
    """The summary table ``analyze`` prints, from :attr:`ofi_fast.pipeline.Analysis.summary`."""
    def num(v, fmt):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
    q = s["quality"]
    rows = [("input", s["input"]), ("symbol", s["symbol"] or "(not named by the input)")]
    if note:
        rows.append(("read as", note))
    rows += [
        ("events", f"{s['events']:,}" + (f" ({s['messages']:,} messages, {s['snapshots']} "
                                          f"snapshot{'s' if s['snapshots'] != 1 else ''})"
                                          if "messages" in s else "")),
        ("trades", f"{s['trades']:,}"),
        ("time span", f"{s['span_seconds']:,.0f} s"),
        (f"bars ({s['bar_seconds']:g} s)", f"{s['bars']:,} ({s['empty_bars']:,} empty"
         + (f", {s['invalid_bars']:,} invalid after a gap" if s["invalid_bars"] else "") + ")"),
        ("beta (dmid per unit of OFI)", num(s["beta"], ".6g")),
        ("alpha", num(s["alpha"], ".6g")),
        (f"t(beta) plain / Newey-West({s['nw_lags']})",
         f"{_t(s['t_beta'], s['perfect_fit'])} / {_t(s['t_beta_robust'], s['perfect_fit'])}"),
        (f"R^2 (in sample, {s['n_fit']:,} bars)", num(s["r2"], ".4f")),
        (f"OOS R^2 (same-bar OFI, past fit, {s['n_oos']:,} bars)",
         s["oos_note"] if "oos_note" in s else num(s["oos_r2"], ".4f")),
        ("  hit rate (sign of dmid)", num(s["hit_rate"], ".4f")),
        (f"forecast R^2 (next bar, {s['n_forecast']:,} bars)",
         s["forecast_note"] if "forecast_note" in s else num(s["forecast_r2"], ".4f")),
        ("  hit rate (sign of next dmid)", num(s["forecast_hit_rate"], ".4f")),
        ("trade imbalance min / median / max",
         " / ".join(num(s[k], "+.4f") for k in ("trade_imbalance_min",
                                                 "trade_imbalance_median",
                                                 "trade_imbalance_max"))),
    ]
    if "buy_volume" in s:
        rows.append(("buy / sell volume (imbalance)",
                     f"{_vol(s['buy_volume'])} / {_vol(s['sell_volume'])} "
                     f"({num(s['trade_imbalance_total'], '+.4f')})"
                     + (f", {_vol(s['unknown_volume'])} unsigned" if s["unknown_volume"]
                        else "")))
    if "vpin_method" in s:
        rows.append((f"VPIN min / median / max ({s['vpin_method']})",
                     " / ".join(num(s[k], ".4f") for k in ("vpin_min", "vpin_median",
                                                             "vpin_max"))))
        rows.append(("  VPIN buckets", f"{s['vpin_buckets_closed']:,} of "
                     f"{num(s['vpin_bucket_volume'], '.6g')}, window {s['vpin_n_buckets']}"))
    rows += _quality_rows(q)
    if elapsed is not None:
        rows.append(("elapsed", f"{elapsed:.2f} s" + ("" if input_seconds is None else
                     f" (input {input_seconds:.2f} s, analysis "
                     f"{elapsed - input_seconds:.2f} s)")))
    w = max(len(k) for k, _ in rows)
    lines = ["ofi-fast analyze: dmid = alpha + beta * OFI over clock bars "
             "(Cont, Kukanov & Stoikov 2014)"]
    lines += [f"  {k:<{w}}  {v}" for k, v in rows]
    lines += [f"  warning: {x}" for x in s["warnings"]]
    return "\n".join(lines)


def _quality_rows(q):
    """The data-quality block of the summary (see README "DataQuality")."""
    def pct(n):
        return f"{100 * n / q['messages_read']:.1f} %" if q["messages_read"] else "n/a"
    unit = q["unit"]
    rows = [("data quality", f"{q['messages_applied']:,} of {q['messages_read']:,} {unit} "
             f"applied; {q['lost']:,} lost ({pct(q['lost'])})")]
    for cause, n in q["dropped"].items():
        rows.append((f"  dropped: {cause.replace('_', ' ')}", f"{n:,} ({pct(n)})"))
    for g in q["gaps"][:5]:
        ids = "" if g["first_id"] is None else f" ids {g['first_id']}..{g['last_id']} after " \
            f"{g['prev_id']},"
        end = f"resync at line {g['resync_line']}" if g["resync_line"] is not None \
            else "no resync"
        rows.append(("  gap", f"{g['path']}:{g['line']}:{ids} {g['rows_invalid']:,} {unit} "
                     f"over {g['seconds_invalid']:.3f} s, {end}"))
    if len(q["gaps"]) > 5:
        rows.append(("  gaps", f"{len(q['gaps']):,} in all"))
    if q["truncated"]:
        rows.append(("  truncated", f"at line {q['truncated'][0]}: {q['truncated'][1]}"))
    if q["other_symbol"]:
        rows.append(("  other symbols", f"{q['other_symbol']:,} {unit} (not read)"))
    if q.get("stale_orders"):
        rows.append(("  stale snapshot orders removed", f"{q['stale_orders']:,}"))
    rows.append(("  book crossed / locked / removed",
                 f"{q['crossed']:,} / {q['locked']:,} / {q['levels_removed']:,}"))
    return rows


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def _input_kw(args):
    return dict(format=args.format, symbol=args.symbol, clock=args.clock,
                tick_size=args.tick_size, chunk_rows=args.chunk_size, on_gap=args.on_gap,
                on_error=args.on_error, columns=args.columns, ts_unit=args.ts_unit,
                events=args.events, seed=args.seed, levels=args.levels,
                classify=None if args.classify == "none" else args.classify)


def _check_out(path, table=False):
    """Fail before the work if an output path cannot be written (or its format is unknown)."""
    p = Path(path)
    if not p.parent.exists():
        raise CliError(f"{p}: folder {p.parent} does not exist")
    if p.is_dir():
        raise CliError(f"{p}: is a directory")
    if table:
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise CliError("writing .parquet needs pyarrow "
                               "(pip install 'ofi_fast[parquet]')") from None
        elif suffix not in (".csv", ".txt"):
            raise CliError(f"{p}: unknown output format {suffix or '(none)'} "
                           "(use .csv or .parquet)")


def _progress(enabled):
    """A tqdm wrapper of the chunk iterator when tqdm is installed and stderr is a TTY."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    def wrap(it):
        with tqdm(unit="ev", unit_scale=True, file=sys.stderr, leave=False) as bar:
            for c in it:
                yield c
                bar.update(len(c))
    return wrap


def cmd_analyze(args):
    from ofi_fast.pipeline import analyze, json_ready
    t0 = time.perf_counter()
    if args.out:
        _check_out(args.out, table=True)
    if args.plot:
        _check_out(args.plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib (pip install 'ofi_fast[plot]')") from None
    timing = {}
    a = analyze(args.files, every=args.every, min_train=args.min_train,
                vpin_bucket=args.vpin_bucket, vpin_buckets=args.vpin_buckets,
                progress=_progress(not args.no_progress), timing=timing, **_input_kw(args))
    if args.out:
        a.bars.write(args.out)
    if args.plot:
        a.plot(args.plot)
    elapsed = time.perf_counter() - t0
    warn = a.quality.warning()
    if warn:
        print(f"ofi-fast: warning: {warn}", file=sys.stderr)
    for w in a.summary["warnings"]:
        print(f"ofi-fast: warning: {w}", file=sys.stderr)
    if args.json:
        d = {**a.summary, "elapsed_seconds": elapsed, "input_seconds": timing["input_seconds"]}
        print(json.dumps(json_ready(d)))
    else:
        print(format_summary(a.summary, elapsed, timing["input_seconds"], a.note))
        for what, p in (("bar table", args.out), ("figure", args.plot)):
            if p:
                print(f"  {what} written to {p}")
    return 0


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
        out.write(f"  {name:<30}{g(v[0]):>8}{g(v[1]):>8}{g(v[2]):>8}{g(v[3]):>10}\n")
    row("BookOFI.update_many (message)" if deltas else "OFI.update", p)
    if lat.n_trades:
        row("TradeFlow.update", pt)
    row("empty call (floor)", f)
    warn = source.quality.warning()
    if warn:
        print(f"ofi-fast: warning: {warn}", file=sys.stderr)
    return 0


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
        print(f"  {name:<28}{f(a):>8}{f(b):>8}{f(c):>8}{bt:>10}")
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    return 0



def cmd_cks(args):
    """The Cont-Kukanov-Stoikov table (:func:`ofi_fast.analysis.cks_table`)."""
    from ofi_fast.analysis import cks_table
    _exist(args.files)
    print(cks_table(args.files, bar_seconds=args.every, window_minutes=args.window_minutes))
    return 0


def cmd_multilevel(args):
    """The multi-level / integrated OFI table (:func:`ofi_fast.analysis.multilevel_table`)."""
    from ofi_fast.analysis import multilevel_table
    specs = []
    for s in args.specs:
        path, sep, lv = s.rpartition(":")
        if not sep or not lv.isdigit() or int(lv) < 1:
            raise CliError(f"{s!r}: expected LOBSTER_levelM.zip:M (M the number of levels)")
        specs.append((path, int(lv)))
    _exist([p for p, _ in specs])
    print(multilevel_table(specs, bar_seconds=args.every, window_minutes=args.window_minutes))
    return 0


def _exist(paths):
    for p in paths:
        if not Path(p).is_file():
            raise CliError(f"{p}: no such file")


# --------------------------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"ofi-fast: error: {message} (see '{self.prog} --help')\n")


def _positive(kind):
    def conv(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not a valid {kind.__name__}") from None
        if not v > 0 or (kind is float and not math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be positive, got {s!r}")
        return v
    conv.__name__ = kind.__name__
    return conv


def build_parser():
    from ofi_fast import __version__
    from ofi_fast.feeds import FORMATS
    p = _Parser(prog="ofi-fast", description="Order flow imbalance: analyse, stream and "
                "benchmark limit-order-book data (embedded simulator when no FILE is given).")
    p.add_argument("--version", action="version", version=f"ofi-fast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def inputs(sp, default_events):
        sp.add_argument("files", nargs="*", metavar="FILE",
                        help="input file(s): a LOBSTER zip or message + orderbook pair, a "
                        "Binance/Coinbase/Kraken recording, Tardis or Bitstamp book (+ trades) "
                        "CSV, or a quotes (+ trades) CSV; none: the simulator")
        sp.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                        help="input format (default: detect from names and content)")
        sp.add_argument("--clock", default="auto", choices=["auto", "local", "exchange"],
                        help="recordings: timestamps from the local receive clock or the "
                        "exchange's (auto: local for Binance, Coinbase, Kraken, Tardis; "
                        "exchange for Bitstamp)")
        sp.add_argument("--tick-size", type=_positive(float), default=None, metavar="PRICE",
                        help="price grid of the book (default: known or inferred)")
        sp.add_argument("--symbol", default=None,
                        help="Binance symbol / Coinbase product / Kraken pair / Tardis symbol "
                        "to read (default: the first found; the one used is printed)")
        sp.add_argument("--on-gap", default="resync", choices=["resync", "raise"],
                        help="a sequence gap: report it and resync at the next snapshot "
                        "(default), or stop with an error naming file:line and ids")
        sp.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                        help="a malformed line: stop (default) or skip and count it")
        sp.add_argument("--columns", default=None, metavar="FIELD=COL,...",
                        help="CSV: column names, fields ts, bid_px, bid_sz, ask_px, ask_sz, "
                        "price, size, side (default: recognised from the header)")
        sp.add_argument("--classify", default="tick", choices=["tick", "none"],
                        help="sign trades the feed gives no side by the tick rule (default) "
                        "or leave them unsigned")
        sp.add_argument("--ts-unit", default="auto", choices=["auto", "ns", "us", "ms", "s"],
                        help="CSV: unit of integer timestamps (auto: from their magnitude)")
        sp.add_argument("--every", type=_positive(float), default=10.0, metavar="SECONDS",
                        help="bar length in seconds (default 10)")
        sp.add_argument("--events", type=_positive(int), default=default_events,
                        metavar="N", help=f"simulator events (default {default_events:,})")
        sp.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
        sp.add_argument("--levels", type=_positive(int), default=5,
                        help="simulator book levels (default 5)")
        sp.add_argument("--chunk-size", type=_positive(int), default=1_000_000, metavar="N",
                        help="events per chunk: bounds memory (default 1,000,000)")

    a = sub.add_parser("analyze", help="OFI bars, impact fit, out-of-sample evaluation",
                       description="Build best-level OFI into clock bars, fit dmid on OFI "
                       "(fit_impact), evaluate it out of sample (same-bar OFI with a past fit, "
                       "and a next-bar forecast), add trade flow and VPIN; print a summary "
                       "with the data quality.")
    inputs(a, 1_000_000)
    a.add_argument("--out", metavar="PATH", help="write the bar table (.csv or .parquet)")
    a.add_argument("--plot", metavar="PNG", help="write a figure (needs matplotlib)")
    a.add_argument("--min-train", type=_positive(int), default=50, metavar="BARS",
                   help="bars before the first out-of-sample prediction (default 50)")
    a.add_argument("--vpin-bucket", type=_positive(float), default=None, metavar="VOLUME",
                   help="VPIN bucket volume (default: total volume / (4 x --vpin-buckets))")
    a.add_argument("--vpin-buckets", type=_positive(int), default=50, metavar="N",
                   help="buckets per VPIN value (default 50)")
    a.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)

    s = sub.add_parser("stream", help="replay events through the streaming OFI, one line "
                       "per bar, then latency percentiles")
    inputs(s, 100_000)
    s.add_argument("--window", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="rolling OFI window in seconds (default 1)")
    s.set_defaults(func=cmd_stream)

    b = sub.add_parser("bench", help="latency of the streaming classes on this machine")
    b.add_argument("--events", type=_positive(int), default=200_000, metavar="N",
                   help="simulated events per case (default 200,000)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=cmd_bench)

    for name, helptext, func in (
            ("cks", "Cont-Kukanov-Stoikov table on LOBSTER level-1 zips", cmd_cks),
            ("multilevel", "best-level vs multi-level vs integrated OFI on LOBSTER zips",
             cmd_multilevel)):
        c = sub.add_parser(name, help=helptext, description=helptext)
        if name == "cks":
            c.add_argument("files", nargs="+", metavar="LOBSTER_1.zip")
        else:
            c.add_argument("specs", nargs="+", metavar="LOBSTER_M.zip:M")
        c.add_argument("--every", type=_positive(int), default=10, metavar="SECONDS",
                       help="bar length in whole seconds (default 10)")
        c.add_argument("--window-minutes", type=_positive(int), default=30, metavar="MIN",
                       help="regression window in minutes (default 30)")
        c.set_defaults(func=func)
    return p


def main(argv=None):
    """Entry point of the ``ofi-fast`` console script; returns the exit status."""
    import zipfile
    from ofi_fast.errors import OFIError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:        # --help / --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        print("ofi-fast: error: choose a command: analyze, stream, bench, cks or multilevel "
              "(see 'ofi-fast --help')", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:          # e.g. `ofi-fast stream | head`: stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, OFIError, OSError, zipfile.BadZipFile, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None:
            msg = f"{exc.filename}: {exc.strerror or exc}"
        print(f"ofi-fast: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ofi-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
