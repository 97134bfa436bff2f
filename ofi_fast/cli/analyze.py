"""``ofi-fast analyze``: :func:`ofi_fast.analyze` and its printed summary."""

from __future__ import annotations

import json
import math
import sys
import time

from ofi_fast.cli._common import _check_outputs, _input_kw, _positive, _progress, add_inputs


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
    rows.append(("  book crossed / locked", f"{q['crossed']:,} / {q['locked']:,}"))
    return rows


# --------------------------------------------------------------------------------------------
# Commands


def cmd_analyze(args):
    from ofi_fast.pipeline import analyze, json_ready
    t0 = time.perf_counter()
    _check_outputs(args.out, args.plot)
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


def register(sub):
    a = sub.add_parser("analyze", help="OFI bars, impact fit, out-of-sample evaluation",
                       description="Build best-level OFI into clock bars, fit dmid on OFI "
                       "(fit_impact), evaluate it out of sample (same-bar OFI with a past fit, "
                       "and a next-bar forecast), add trade flow and VPIN; print a summary "
                       "with the data quality.")
    add_inputs(a, 1_000_000)
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
