"""``ofi-fast cks`` / ``ofi-fast multilevel``: the tables of :mod:`ofi_fast.analysis`."""

from __future__ import annotations

from ofi_fast.cli._common import CliError, _exist, _positive


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


def register(sub):
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
