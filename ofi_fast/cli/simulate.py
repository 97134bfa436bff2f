"""``ofi-fast simulate``: :func:`ofi_fast.dataset.simulate_dataset` (LOBSTER files of
simulated symbol-days, the load of ``ofi-fast batch`` when there is no data)."""

from __future__ import annotations

import datetime as _dt

from ofi_fast.cli._common import CliError, _positive


def _date(s):
    try:
        return _dt.date.fromisoformat(s).isoformat()
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"{s!r} is not a date YYYY-MM-DD") from None


def cmd_simulate(args):
    from ofi_fast.dataset import simulate_dataset
    try:
        ds = simulate_dataset(args.out, args.symbols, args.days, levels=args.levels,
                              events=args.events, seed=args.seed, start=args.start)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    n = len(ds.paths)
    print(f"ofi-fast simulate: {n} LOBSTER zip{'s' if n != 1 else ''} ({args.symbols} "
          f"symbol{'s' if args.symbols != 1 else ''} x {args.days} day"
          f"{'s' if args.days != 1 else ''}, {args.levels} level"
          f"{'s' if args.levels != 1 else ''}, {args.events:,} events a day) in {args.out}")
    print(f"  {'symbol':<8} {'tick':>5} {'lot':>5} {'touch depth':>11} {'first file'}")
    for p, files in zip(ds.params, ds.files):
        print(f"  {p.symbol:<8} {p.tick_size:>5g} {p.lot:>5g} {p.touch_depth:>11,.0f} "
              f"{files[0].name}")
    print(f"  parameters: {ds.out / 'params.json'}")
    return 0


def register(sub):
    s = sub.add_parser("simulate", help="write simulated symbol-days as LOBSTER files",
                       description="Write SYMBOLS x DAYS simulated symbol-days as LOBSTER zips "
                       "(SYMBOL_YYYY-MM-DD_34200000_57600000_L.zip with LOBSTER's message and "
                       "orderbook CSVs), each symbol with its own seeded tick, lot (touch "
                       "depth) and rates, plus params.json.")
    s.add_argument("--out", required=True, metavar="DIR", help="folder to write (created)")
    s.add_argument("--symbols", type=_positive(int), default=3, metavar="K",
                   help="number of symbols (default 3)")
    s.add_argument("--days", type=_positive(int), default=2, metavar="D",
                   help="trading days per symbol (weekdays, default 2)")
    s.add_argument("--levels", type=_positive(int), default=5, metavar="L",
                   help="order-book levels in the files (default 5)")
    s.add_argument("--events", type=_positive(int), default=100_000, metavar="N",
                   help="events per symbol-day (default 100,000)")
    s.add_argument("--seed", type=int, default=0, help="seed of the whole dataset (default 0)")
    s.add_argument("--start", type=_date, default="2024-01-02", metavar="YYYY-MM-DD",
                   help="first trading day (default 2024-01-02)")
    s.set_defaults(func=cmd_simulate)
