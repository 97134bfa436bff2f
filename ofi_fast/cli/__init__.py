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
- ``ofi-fast forecast FILE ... [--lead A --lag B]``: :func:`ofi_fast.analysis.forecast`,
  walk-forward event- and clock-time forecasts of the mid (queue imbalance, micro-price, OFI,
  trade flow) against naive baselines, and cross-market lead-lag.
- ``ofi-fast simulate --out DIR``: a simulated LOBSTER dataset (:mod:`ofi_fast.dataset`);
  ``ofi-fast batch INPUT ... --out DIR``: :func:`ofi_fast.batch.run` on Dask distributed.
- ``ofi-fast live binance-usdm|binance-spot SYMBOL``: :mod:`ofi_fast.live`, bars from the
  exchange's websocket as they close.

Each command lives in its own module of this package (listed in :data:`COMMANDS`, each with a
``register(subparsers)``); :mod:`ofi_fast.cli._common` holds the input options they share.

Input goes through :func:`ofi_fast.feeds.open`. Every error in the input or the options
(:class:`ofi_fast.OFIError`, including ``ParseError`` and ``SequenceGapError``, and OS errors)
prints one line ``ofi-fast: error: ...`` to stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import sys

from ofi_fast.cli._common import CliError, _Parser

#: the modules of ``ofi_fast.cli``, one per command (or family), each with ``register(sub)``
COMMANDS = ("analyze", "stream", "bench", "research", "forecast", "simulate", "batch",
            "live")

__all__ = ["CliError", "COMMANDS", "build_parser", "main"]


def build_parser():
    import importlib
    from ofi_fast import __version__
    p = _Parser(prog="ofi-fast", description="Order flow imbalance: analyse, stream and "
                "benchmark limit-order-book data (embedded simulator when no FILE is given).")
    p.add_argument("--version", action="version", version=f"ofi-fast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"ofi_fast.cli.{name}").register(sub)
    p.command_names = list(sub.choices)
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
        print(f"ofi-fast: error: choose a command: {', '.join(parser.command_names)} "
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
