"""``ofi-fast live binance-usdm|binance-spot SYMBOL``: :func:`ofi_fast.live.bars` on a live
Binance connection, one line per closed bar (the columns of ``ofi-fast stream``); at exit
(Ctrl-C or ``--duration``) the latency percentiles and the data-quality counts."""

from __future__ import annotations

import asyncio
import math
import sys

from ofi_fast.cli._common import CliError, _check_out, _positive

MARKETS = {"binance-usdm": "usdm", "binance-spot": "spot"}


def cmd_live(args):
    from ofi_fast.cli.stream import stream_line
    try:
        from ofi_fast.live import BinanceStream, LiveLatency, bars
    except ImportError as exc:   # pragma: no cover
        raise CliError(str(exc)) from None
    try:
        import websockets  # noqa: F401
    except ImportError:
        raise CliError("ofi-fast live needs websockets (pip install 'ofi_fast[live]')") from None
    if args.record is not None:
        _check_out(args.record)
    market = MARKETS[args.exchange]
    s = BinanceStream(args.symbol, market, ws_url=args.ws_url, rest_url=args.rest_url,
                      clock=args.clock, record=args.record, silence=args.silence,
                      duration=args.duration,
                      log=lambda m: print(f"ofi-fast: {m}", file=sys.stderr, flush=True))
    out = sys.stdout
    out.write(f"ofi-fast live: {args.exchange} {s.symbol} ({', '.join(s.streams)}); one line "
              f"per {args.every:g} s bar by the {args.clock} clock, rolling window "
              f"{args.window:g} s; times of day UTC\n")
    out.write(f"{'bar start':>12}  {'messages':>8}  {'trades':>6}  {'OFI(bar)':>11}  "
              f"{'OFI(window)':>11}  {'TFI(window)':>11}  {'mid':>11}  {'dmid':>9}\n")
    out.flush()

    async def run():
        async for b in bars(s, every=args.every, window=args.window, levels=args.levels):
            out.write(stream_line(b) + "\n")
            out.flush()

    interrupted = False
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        interrupted = True
    q = s.quality
    ex = LiveLatency.percentiles(s.latency.exchange)
    sig = LiveLatency.percentiles(s.latency.signal)

    def g(x, scale, unit):
        return "-" if math.isnan(x) else f"{x / scale:.3g} {unit}"
    out.write(f"\n{'interrupted' if interrupted else 'stopped'} after {s.no:,} messages "
              f"({s.stats['depth_messages']:,} depth, {s.stats['trades']:,} trades, "
              f"{s.stats['quotes']:,} bookTicker)\n")
    out.write(f"latency (a) exchange event time -> local receive, per depth diff: "
              f"p50 {g(ex[0], 1e6, 'ms')}, p99 {g(ex[1], 1e6, 'ms')} (includes the clocks' "
              f"offset)\n")
    out.write(f"latency (b) local receive -> signal updated, per diff applied: "
              f"p50 {g(sig[0], 1e3, 'us')}, p99 {g(sig[1], 1e3, 'us')}\n")
    dropped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in q.dropped.items()) or "none"
    out.write(f"quality: {q.messages_applied:,} of {q.messages_read:,} book messages applied; "
              f"reconnects {q.reconnects} (silences {s.stats['silences']}, planned "
              f"{s.stats['planned']}); gaps {len(q.gaps)}, resyncs {q.resyncs}; snapshot "
              f"refetches {s.stats['snapshot_refetches']}, failed requests "
              f"{s.stats['snapshot_errors']}; dropped: {dropped}\n")
    for d in (*q.gaps, *q.disconnects):
        out.write(f"  invalid: {d.detail} at message {d.line:,}, "
                  f"{d.seconds_invalid:.3f} s, "
                  f"{'resynced' if d.resync_ts is not None else 'not resynced'}\n")
    for no, why in q.parse_first[:5]:
        out.write(f"  malformed message {no:,}: {why}\n")
    warn = q.warning()
    if warn:
        print(f"ofi-fast: warning: {warn}", file=sys.stderr)
    if s.no == 0:
        print(f"ofi-fast: error: no message received from {s.ws_url} "
              f"({s.stats['reconnects']} connection attempts failed)", file=sys.stderr)
        return 2
    return 130 if interrupted else 0


def register(sub):
    s = sub.add_parser("live", help="live Binance depth + trades through the streaming OFI, "
                       "one line per bar (websockets)")
    s.add_argument("exchange", choices=sorted(MARKETS), help="binance-usdm or binance-spot")
    s.add_argument("symbol", help="e.g. BTCUSDT")
    s.add_argument("--every", type=_positive(float), default=10.0, metavar="SECONDS",
                   help="bar length in seconds (default 10)")
    s.add_argument("--window", type=_positive(float), default=1.0, metavar="SECONDS",
                   help="rolling OFI / TFI window in seconds (default 1)")
    s.add_argument("--levels", type=_positive(int), default=1,
                   help="book levels of the OFI (default 1: best level)")
    s.add_argument("--clock", choices=("local", "exchange"), default="local",
                   help="bars by the local receive time (default) or the exchange's E / T")
    s.add_argument("--duration", type=_positive(float), default=None, metavar="SECONDS",
                   help="stop after this long (default: until Ctrl-C)")
    s.add_argument("--record", default=None, metavar="FILE",
                   help="write every message received (.gz: gzip), readable by "
                        "'ofi-fast analyze FILE'")
    s.add_argument("--ws-url", default=None, help="websocket base (default Binance's)")
    s.add_argument("--rest-url", default=None, help="REST base (default Binance's)")
    s.add_argument("--silence", type=_positive(float), default=10.0, metavar="SECONDS",
                   help="no message for this long = a dead connection (default 10)")
    s.set_defaults(func=cmd_live)
