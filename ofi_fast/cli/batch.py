"""``ofi-fast batch``: :func:`ofi_fast.batch.run`, many symbol-days on Dask distributed."""

from __future__ import annotations

import sys

from ofi_fast.cli._common import CliError, _positive


def cmd_batch(args):
    from ofi_fast import batch
    if args.scheduler and args.workers:
        raise CliError("give --scheduler or --workers, not both")
    opts = dict(every=args.every, min_train=args.min_train, chunk_rows=args.chunk_size,
                on_gap=args.on_gap, on_error=args.on_error, format=args.format,
                symbol=args.symbol, clock=args.clock, tick_size=args.tick_size,
                classify=None if args.classify == "none" else args.classify)
    r = batch.run(args.inputs, args.out, client=args.scheduler, workers=args.workers,
                  force=args.force, progress=not args.no_progress and sys.stderr.isatty(),
                  **opts)
    print(f"ofi-fast batch: {len(r.inputs)} input{'s' if len(r.inputs) != 1 else ''}: "
          f"{r.done} done, {r.failed} failed, {r.skipped} skipped ({r.submitted} "
          f"task{'s' if r.submitted != 1 else ''}) -> {args.out}"
          + (f" ({len(r.rows)} done there in all)" if len(r.rows) != r.done + r.skipped
             else ""))
    if r.rows:
        print(r.format_cross_section())
    for inp, err in r.errors:
        print(f"  failed: {inp}: {err}")
    if r.errors:
        print(f"  errors: {args.out}/errors.csv ({len(r.errors)})")
    if r.submitted:
        ts = sorted(r.task_seconds)
        print(f"elapsed {r.seconds:.2f} s (task median {ts[len(ts) // 2]:.3f} s)")
    return 1 if r.errors else 0


def register(sub):
    from ofi_fast.feeds import FORMATS
    b = sub.add_parser(
        "batch", help="analyse many symbol-days on Dask distributed",
        description="Run `ofi-fast analyze` on every INPUT (files, folders, globs; one task "
        "per symbol-day) on a Dask cluster and write DIR/bars/symbol=S/date=D/part-0.parquet, "
        "DIR/summary.parquet, DIR/errors.csv, DIR/manifest.json, DIR/cross_section.parquet. "
        "A rerun skips inputs already done (same parameters, unchanged files). Exit status 1 "
        "when an input failed (listed in errors.csv), 2 on a usage error.")
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or globs")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    b.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://host:8786 (default: a local "
                   "cluster)")
    b.add_argument("--workers", type=_positive(int), default=None, metavar="N",
                   help="local cluster: worker processes (default: one per core)")
    b.add_argument("--force", action="store_true", help="redo inputs already done")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--every", type=_positive(float), default=10.0, metavar="SECONDS",
                   help="bar length in seconds (default 10)")
    b.add_argument("--min-train", type=_positive(int), default=50, metavar="BARS",
                   help="bars before the first out-of-sample prediction (default 50)")
    b.add_argument("--chunk-size", type=_positive(int), default=1_000_000, metavar="N",
                   help="events per chunk: bounds each worker's memory (default 1,000,000)")
    b.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="input format (default: detect per input)")
    b.add_argument("--symbol", default=None, help="instrument of multi-symbol recordings")
    b.add_argument("--clock", default="auto", choices=["auto", "local", "exchange"],
                   help="recordings: local receive clock or the exchange's")
    b.add_argument("--tick-size", type=_positive(float), default=None, metavar="PRICE",
                   help="price grid of the book (default: known or inferred)")
    b.add_argument("--on-gap", default="resync", choices=["resync", "raise"],
                   help="a sequence gap: resync (default) or fail that input")
    b.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                   help="a malformed line: fail that input (default) or skip and count it")
    b.add_argument("--classify", default="tick", choices=["tick", "none"],
                   help="sign unsided trades by the tick rule (default) or leave them")
    b.set_defaults(func=cmd_batch)
