"""Pieces every ``ofi-fast`` command shares: the one-line user error, the parser, the input
options and their translation into :func:`ofi_fast.feeds.open` keywords, output checks."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

NS_PER_S = 1_000_000_000


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _exist(paths):
    for p in paths:
        if not Path(p).is_file():
            raise CliError(f"{p}: no such file")


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


def add_inputs(sp, default_events):
    """The input options of ``analyze`` / ``stream`` (and of later commands reading input)."""
    from ofi_fast.feeds import FORMATS
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
                    help="CSV: unit of integer timestamps (auto: from the first row's magnitude "
                    "as an epoch time; a later row of another magnitude is a malformed row)")
    sp.add_argument("--every", type=_positive(float), default=10.0, metavar="SECONDS",
                    help="bar length in seconds (default 10)")
    sp.add_argument("--events", type=_positive(int), default=default_events,
                    metavar="N", help=f"simulator events (default {default_events:,})")
    sp.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    sp.add_argument("--levels", type=_positive(int), default=5,
                    help="simulator book levels (default 5)")
    sp.add_argument("--chunk-size", type=_positive(int), default=1_000_000, metavar="N",
                    help="events per chunk: bounds memory (default 1,000,000)")


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



def _check_outputs(out, plot):
    """Before the work: ``--out`` a writable table path (.csv / .parquet), ``--plot`` a
    writable path with matplotlib installed."""
    if out:
        _check_out(out, table=True)
    if plot:
        _check_out(plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib (pip install 'ofi_fast[plot]')") from None

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
