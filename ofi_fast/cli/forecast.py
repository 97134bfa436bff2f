"""``ofi-fast forecast``: :func:`ofi_fast.analysis.forecast` (walk-forward forecasts of the mid
from the book at event-time and clock-time horizons) and, with ``--lead A --lag B``,
:func:`ofi_fast.forecast.lead_lag` (does market A predict market B?)."""

from __future__ import annotations

import json
import time

from ofi_fast.cli._common import CliError, _check_outputs, _input_kw, _positive, add_inputs


def _list(s):
    return [x for x in (t.strip() for t in s.split(",")) if x]


def cmd_forecast(args):
    from ofi_fast import forecast as fc
    from ofi_fast.pipeline import json_ready
    t0 = time.perf_counter()
    _check_outputs(args.out, args.plot)
    if (args.lead is None) != (args.lag is None):
        raise CliError("--lead and --lag go together (two inputs over the same hours)")
    kw = _input_kw(args)
    for k in ("classify", "chunk_rows"):
        kw.pop(k, None)
    models = tuple(_list(args.models))
    bad = [m for m in models if m not in ("ols", "logit")]
    if bad or not models:
        raise CliError(f"--models takes ols and/or logit, got {args.models!r}")
    common = dict(segments=args.segments, n_boot=args.boot, n_blocks=args.blocks,
                  min_train=args.min_train, seed=args.seed)
    if args.lead is not None:
        if args.files:
            raise CliError("with --lead/--lag give no FILE")
        hz = [fc.parse_horizon(h) for h in _list(args.horizons or "move,0.1s,1s,10s")]
        clock = kw.pop("clock")
        kw.pop("seed")
        res = fc.lead_lag(args.lead, args.lag, horizons=hz, models=models,
                          clock="exchange" if clock == "auto" else clock, **common, **kw)
    else:
        hz = [fc.parse_horizon(h) for h in _list(args.horizons or "move,10,100,0.1s,1s,10s")]
        ev = fc.load(args.files or None, **kw)
        res = fc.forecast_events(ev, horizons=hz, models=models, levels=args.levels,
                                 decay=args.decay, ridge=args.ridge,
                                 features=_list(args.features) if args.features else None,
                                 **common)
        res.info["input"] = ev.name
    if args.out:
        res.write(args.out)
    if args.plot:
        res.plot(args.plot)
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps(json_ready({**res.summary, "elapsed_seconds": elapsed})))
        return 0
    i = res.info
    print("ofi-fast forecast: walk-forward forecasts of the mid change (ticks), "
          "R^2 vs the historical mean, hit rate on non-zero moves, rank IC; 95 % block-bootstrap "
          "intervals")
    if "lead" in i:
        x = i["xcorr"]
        print(f"  lead {i['lead']} ({i['lead_events']:,} events) -> lag {i['lag']} "
              f"({i['events']:,} events), overlap {i['overlap_s']:,.0f} s")
        print(f"  cross-correlation of mid changes ({x['step_s'] * 1000:g} ms grid): peak "
              f"{x['peak_corr']:+.3f} at lag {x['peak_lag_s']:+.3f} s (positive: lead first); "
              f"at 0: {x['corr'][len(x['corr']) // 2]:+.3f}")
    else:
        print(f"  input {i['input']}: {i['events']:,} events, {i['trades']:,} trades, tick "
              f"{i['tick_size']:g}; out of sample from event {i['oos_from_event']:,} "
              f"({i['segments']} segments)")
        if i.get("micro"):
            print(f"  micro-price: spreads 1..{i['micro']['max_spread']} ticks, "
                  f"{i['micro']['n_imbalance']} imbalance bins, {i['micro']['n_iter']} "
                  "iterations, refitted per segment")
    print(res.format(models=models + ("baseline",)))
    for h, why in i.get("skipped", {}).items():
        print(f"  horizon {h} skipped: {why}")
    for what, p in (("table", args.out), ("figure", args.plot)):
        if p:
            print(f"  {what} written to {p}")
    print(f"  elapsed {elapsed:.2f} s")
    return 0


def register(sub):
    a = sub.add_parser("forecast", help="walk-forward forecasts of the mid from the book",
                       description="Forecast the mid change after each quote update (next "
                       "move, next k updates, clock horizons) from queue imbalance, Stoikov's "
                       "micro-price, OFI windows, trade flow and the last move, alone and "
                       "combined, walk-forward with bootstrap intervals, beside naive "
                       "baselines. --lead A --lag B: does market A predict market B?")
    add_inputs(a, 200_000)
    a.add_argument("--horizons", default=None, metavar="H,...",
                   help="move, N (events), Xs / Xms (time); default move,10,100,0.1s,1s,10s "
                   "(lead-lag: move,0.1s,1s,10s)")
    a.add_argument("--features", default=None, metavar="F,...",
                   help="features to use (default all: qi1, qi_depth with depth, ofi_e10, "
                   "ofi_e100, ofi_1s, ofi_10s, tfi_1s, last_move, micro)")
    a.add_argument("--models", default="ols,logit", help="ols and/or logit (default both)")
    a.add_argument("--decay", type=_positive(float), default=0.5,
                   help="depth imbalance weight per level (default 0.5)")
    a.add_argument("--ridge", type=float, default=0.0, help="ridge lambda of the OLS")
    a.add_argument("--segments", type=_positive(int), default=12,
                   help="walk-forward segments (default 12: one fits the micro-price, one "
                   "starts training, ten are forecast)")
    a.add_argument("--boot", type=_positive(int), default=200, help="bootstrap resamples")
    a.add_argument("--blocks", type=_positive(int), default=50,
                   help="bootstrap blocks (default 50)")
    a.add_argument("--min-train", type=_positive(int), default=100, metavar="ROWS",
                   help="training rows needed before a forecast (default 100)")
    a.add_argument("--lead", metavar="FILE", help="the market that may lead")
    a.add_argument("--lag", metavar="FILE", help="the market that may follow")
    a.add_argument("--out", metavar="PATH", help="write the table (.csv or .parquet)")
    a.add_argument("--plot", metavar="PNG", help="hit rate and R^2 against horizon")
    a.add_argument("--json", action="store_true", help="print the result as one JSON line")
    a.set_defaults(func=cmd_forecast)
