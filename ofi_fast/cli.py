"""The ``ofi-fast`` command (also ``python -m ofi_fast``).

Sub-commands:

- ``ofi-fast analyze [FILE ...]``: best-level OFI (Cont, Kukanov & Stoikov 2014, eq. 10) summed
  into clock bars, the contemporaneous impact regression ``dmid_k = alpha + beta * OFI_k + eps``
  (their eq. 13), a walk-forward out-of-sample evaluation, trade-imbalance ranges; prints a
  summary table, writes the bar table (``--out``, CSV or Parquet) and a figure (``--plot``).
  With no FILE it runs on the embedded simulator (:mod:`ofi_fast.simulate`).
- ``ofi-fast stream [FILE ...]``: replays the events one by one through the streaming
  :class:`ofi_fast.OFI`, printing one line per bar, then per-event latency percentiles.
- ``ofi-fast bench``: latency of the streaming classes (ns per call, p50/p99/p99.9) beside the
  empty-call floor, and batch throughput.

Errors in the input or the options print one line ``ofi-fast: error: ...`` to stderr and exit
with status 2 (no traceback). Three functions are the swap points for the package's other
modules as they land: :func:`open_source` (input formats, later ``ofi_fast.feeds``),
:func:`fit_model` (the impact fit, later ``ofi_fast.fit_impact``) and :func:`walk_forward`
(forecast evaluation, later ``ofi_fast.analysis``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

NS_PER_S = 1_000_000_000
LOBSTER_PRICE_SCALE = 10_000          # LOBSTER prices are USD x 10000
LOBSTER_DUMMY = 9_999_999_999         # LOBSTER's price of an empty level (+ ask, - bid)


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------------------------
# Input: one function, open_source, turns FILE arguments (or none) into chunks of arrays.
# --------------------------------------------------------------------------------------------

class Chunk:
    """Consecutive events: best quotes after each event and the trades among them.

    ``ts`` int64 ns; ``bid_px``/``ask_px`` float64 (NaN for an empty side), ``bid_sz``/``ask_sz``
    float64 (0 for an empty side); ``trade_ts`` int64 ns, ``trade_size`` float64, ``trade_side``
    int8 (aggressor: +1 buy, -1 sell).
    """

    __slots__ = ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz", "trade_ts", "trade_size",
                 "trade_side")

    def __init__(self, ts, bid_px, bid_sz, ask_px, ask_sz, trade_ts, trade_size, trade_side):
        self.ts, self.bid_px, self.bid_sz, self.ask_px, self.ask_sz = (
            ts, bid_px, bid_sz, ask_px, ask_sz)
        self.trade_ts, self.trade_size, self.trade_side = trade_ts, trade_size, trade_side

    def __len__(self):
        return int(self.ts.shape[0])


class Source:
    """A named stream of :class:`Chunk`; ``n_events`` when known in advance (for progress)."""

    def __init__(self, name, n_events, chunks):
        self.name = name
        self.n_events = n_events
        self._chunks = chunks

    def chunks(self):
        return self._chunks()


def _simulator_source(events, seed, levels, chunk_size):
    from ofi_fast.simulate import simulate_chunks

    def chunks():
        for r in simulate_chunks(events, chunk_size=chunk_size, seed=seed, levels=levels):
            bp, bs, ap, az = r.best()
            yield Chunk(r.ts, bp, bs, ap, az, r.trade_ts, r.trade_size, r.trade_side)

    return Source(f"simulator (seed {seed}, {levels} levels)", events, chunks)


def _slice_source(name, arrays, chunk_size):
    """A Source over arrays already in memory, cut into chunks of ``chunk_size`` events."""
    ts = arrays["ts"]
    tts = arrays["trade_ts"]

    def chunks():
        n = ts.shape[0]
        for a in range(0, n, chunk_size):
            b = min(a + chunk_size, n)
            # trades belong to the chunk of their event rows
            ta, tb = np.searchsorted(arrays["trade_row"], [a, b])
            yield Chunk(ts[a:b], arrays["bid_px"][a:b], arrays["bid_sz"][a:b],
                        arrays["ask_px"][a:b], arrays["ask_sz"][a:b], tts[ta:tb],
                        arrays["trade_size"][ta:tb], arrays["trade_side"][ta:tb])

    return Source(name, int(ts.shape[0]), chunks)


def _lobster_members(paths):
    """(label, opener) for the message and orderbook files among ``paths`` (CSV pair or zip)."""
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        z = paths[0]
        try:
            with zipfile.ZipFile(z) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise CliError(f"{z}: not a zip file") from None
        msg = sorted(n for n in names if "message" in Path(n).name and n.endswith(".csv"))
        book = sorted(n for n in names if "orderbook" in Path(n).name and n.endswith(".csv"))
        if not msg or not book:
            raise CliError(f"{z}: no LOBSTER message/orderbook CSV pair inside")

        def opener(member):
            return lambda: zipfile.ZipFile(z).open(member)

        return (f"{z}:{msg[0]}", opener(msg[0])), (f"{z}:{book[0]}", opener(book[0]))
    if len(paths) == 1:
        p = paths[0]
        if "message" in p.name:
            other = p.with_name(p.name.replace("message", "orderbook"))
            paths = [p, other]
        elif "orderbook" in p.name:
            other = p.with_name(p.name.replace("orderbook", "message"))
            paths = [other, p]
        else:
            raise CliError(f"{p}: a LOBSTER message file needs its orderbook file (give both)")
        if not other.exists():
            raise CliError(f"{p}: its LOBSTER pair {other} does not exist (give both files)")
    if len(paths) != 2:
        raise CliError("LOBSTER input is one zip, or a message file and an orderbook file")
    msg = [p for p in paths if "message" in p.name]
    book = [p for p in paths if "orderbook" in p.name]
    if len(msg) != 1 or len(book) != 1:
        msg, book = [paths[0]], [paths[1]]      # unnamed pair: message first, as documented
    return ((str(msg[0]), lambda: open(msg[0], "rb")),
            (str(book[0]), lambda: open(book[0], "rb")))


def _load_csv(label, opener, ncols=None):
    import warnings
    from ofi_fast.errors import ParseError
    try:
        with opener() as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")          # "input contained no data": checked below
            a = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ParseError(f"not a numeric CSV ({exc})", path=label, line=_line_of(exc)) from None
    if a.shape[0] == 0:
        raise CliError(f"{label}: empty file")
    if ncols is not None and a.shape[1] != ncols:
        raise CliError(f"{label}: expected {ncols} columns, found {a.shape[1]}")
    return a


def _line_of(exc):
    import re
    m = re.search(r"at row (\d+)", str(exc))
    return int(m.group(1)) + 1 if m else None


def read_lobster(paths):
    """Best quotes and trades from a LOBSTER message + orderbook pair (CSV files or the zip).

    Row i of the orderbook file is the book after message i. Timestamps (seconds after
    midnight) become int64 ns after midnight; prices are divided by 10000; LOBSTER's dummy price
    of an empty level becomes NaN with size 0. Trades are the executions (types 4 and 5,
    visible and hidden); the message's direction is the resting order's side, so the aggressor
    side is its negation. Returns a dict of arrays (``trade_row``: the trade's message row).
    """
    (mlabel, mopen), (blabel, bopen) = _lobster_members(paths)
    msg = _load_csv(mlabel, mopen, 6)
    book = _load_csv(blabel, bopen)
    if book.shape[1] % 4 or book.shape[0] != msg.shape[0]:
        raise CliError(f"{blabel}: not the LOBSTER orderbook of {mlabel} "
                       f"({book.shape[0]} rows x {book.shape[1]} columns, "
                       f"{msg.shape[0]} messages)")
    ts = np.rint(msg[:, 0] * NS_PER_S).astype(np.int64)
    ask_px, ask_sz, bid_px, bid_sz = (np.ascontiguousarray(book[:, j]) for j in range(4))
    empty_a = ask_px >= LOBSTER_DUMMY
    empty_b = bid_px <= -LOBSTER_DUMMY
    ask_px = ask_px / LOBSTER_PRICE_SCALE
    bid_px = bid_px / LOBSTER_PRICE_SCALE
    ask_px[empty_a], ask_sz[empty_a] = np.nan, 0.0
    bid_px[empty_b], bid_sz[empty_b] = np.nan, 0.0
    ex = np.flatnonzero((msg[:, 1] == 4) | (msg[:, 1] == 5))
    return {"ts": ts, "bid_px": bid_px, "bid_sz": bid_sz, "ask_px": ask_px, "ask_sz": ask_sz,
            "trade_ts": ts[ex], "trade_size": msg[ex, 3].copy(),
            "trade_side": (-msg[ex, 5]).astype(np.int8), "trade_row": ex,
            "label": mlabel}


# Input formats: name -> reader(paths) returning read_lobster's dict. ofi_fast.feeds plugs in
# here as its readers land.
FORMATS = {"lobster": read_lobster}


def detect_format(paths):
    """The format of FILE arguments, from names and, failing that, the first line."""
    for p in paths:
        if p.suffix.lower() == ".zip" or "message" in p.name or "orderbook" in p.name:
            return "lobster"
    with open(paths[0], "rb") as fh:
        first = fh.readline(4096).decode("ascii", "replace").strip()
    fields = first.split(",")
    if len(fields) == 6 and all(_is_number(f) for f in fields):
        return "lobster"
    raise CliError(f"{paths[0]}: unknown format (expected a LOBSTER message/orderbook pair or "
                   f"zip; use --format)")


def _is_number(s):
    try:
        float(s)
    except ValueError:
        return False
    return True


def open_source(files, fmt="auto", *, events=1_000_000, seed=0, levels=5,
                chunk_size=1_000_000):
    """The input as a :class:`Source`: the simulator when ``files`` is empty, else a feed.

    The one place that knows file formats: replace or extend it (``FORMATS``) to read more.
    """
    if not files:
        return _simulator_source(events, seed, levels, chunk_size)
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.exists():
            raise CliError(f"{p}: no such file")
        if p.is_dir():
            raise CliError(f"{p}: is a directory, not a file")
    if fmt == "auto":
        fmt = detect_format(paths)
    if fmt not in FORMATS:
        raise CliError(f"unknown format {fmt!r} (known: {', '.join(sorted(FORMATS))})")
    arrays = FORMATS[fmt](paths)
    return _slice_source(arrays.get("label", str(paths[0])), arrays, chunk_size)


def _progress(source, enabled):
    """Wrap the chunk iterator in a tqdm bar when tqdm is installed and stderr is a TTY."""
    it = source.chunks()
    if not enabled or not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it

    def gen():
        with tqdm(total=source.n_events, unit="ev", unit_scale=True, file=sys.stderr,
                  leave=False) as bar:
            for c in it:
                yield c
                bar.update(len(c))

    return gen()


# --------------------------------------------------------------------------------------------
# Bars: per-chunk library calls (ofi_fast.OFI, ofi_fast.bars) merged onto one clock grid.
# --------------------------------------------------------------------------------------------

class BarBuilder:
    """Clock bars ``[k*every, (k+1)*every)`` built chunk by chunk (memory ~ bars, not events).

    Per bar: ``events``, ``ofi`` (sum of e_n, from :func:`ofi_fast.bars`), ``mid_open`` /
    ``mid_close`` (first/last finite mid in the bar), ``n_trades``, ``buy_volume``,
    ``sell_volume``. The OFI stream continues across chunks (one :class:`ofi_fast.OFI`).
    """

    def __init__(self, every):
        import ofi_fast
        self.every = int(every)
        self.ofi = ofi_fast.OFI()
        self._bars = ofi_fast.bars
        self.k0 = None
        self.n = 0
        self.cols = {k: np.zeros(0) for k in ("events", "ofi", "mid_open", "mid_close",
                                                "n_trades", "buy_volume", "sell_volume")}
        self.first_mid = math.nan
        self.n_events = 0

    def _grow(self, k_hi):
        need = k_hi - self.k0 + 1
        if need <= self.n:
            return
        cap = self.cols["ofi"].shape[0]
        if need > cap:
            cap = max(need, 2 * cap, 1024)
            for name, a in self.cols.items():
                fill = np.nan if name.startswith("mid") else 0.0
                b = np.full(cap, fill)
                b[:self.n] = a[:self.n]
                self.cols[name] = b
        self.n = need

    def add(self, c):
        """Feed one :class:`Chunk`; returns its per-event e_n."""
        if len(c) == 0:
            return np.zeros(0)
        ev = self.every
        e = self.ofi.update_many(c.ts, c.bid_px, c.bid_sz, c.ask_px, c.ask_sz)
        b = self._bars(c.ts, e, every=ev)
        k = b.start // ev
        if self.k0 is None:
            self.k0 = int(k[0])
        elif k[0] < self.k0 + self.n - 1:
            from ofi_fast.errors import TimeOrderError
            raise TimeOrderError(f"ts[{self.n_events}] goes backwards in time (chunk order)",
                                 field="ts", index=self.n_events)
        hi = int(k[-1])
        if c.trade_ts.shape[0]:
            hi = max(hi, int(c.trade_ts[-1] // ev))
        self._grow(hi)
        s = slice(int(k[0]) - self.k0, int(k[-1]) - self.k0 + 1)
        self.cols["events"][s] += b.count
        self.cols["ofi"][s] += b.sum
        mid = 0.5 * (c.bid_px + c.ask_px)
        ok = np.isfinite(mid)
        if ok.any():
            tsm, mm = c.ts[ok], mid[ok]
            if math.isnan(self.first_mid):
                self.first_mid = float(mm[0])
            m = self._bars(tsm, mm, every=ev)
            j = m.start // ev - self.k0
            has = m.count > 0
            self.cols["mid_close"][j[has]] = m.last[has]
            open_ = self.cols["mid_open"]
            new = has & np.isnan(open_[j])
            open_[j[new]] = m.first[new]
        if c.trade_ts.shape[0]:
            tk = c.trade_ts // ev - self.k0
            lo = int(tk[0])
            w = int(tk[-1]) - lo + 1
            rel = tk - lo
            buy = c.trade_side > 0
            sell = c.trade_side < 0
            self.cols["n_trades"][lo:lo + w] += np.bincount(rel, minlength=w)
            self.cols["buy_volume"][lo:lo + w] += np.bincount(
                rel, weights=np.where(buy, c.trade_size, 0.0), minlength=w)
            self.cols["sell_volume"][lo:lo + w] += np.bincount(
                rel, weights=np.where(sell, c.trade_size, 0.0), minlength=w)
        self.n_events += len(c)
        return e

    def table(self):
        """The bar table as a dict of equal-length arrays (see README for the columns)."""
        n = self.n
        t = {k: a[:n].copy() for k, a in self.cols.items()}
        k0 = self.k0 if self.k0 is not None else 0
        out = {"start_ns": (np.arange(n, dtype=np.int64) + k0) * self.every,
               "events": t["events"].astype(np.int64), "ofi": t["ofi"],
               "mid_open": t["mid_open"], "mid_close": _ffill(t["mid_close"])}
        prev = np.concatenate([[self.first_mid], out["mid_close"][:-1]])
        out["dmid"] = out["mid_close"] - prev
        out["n_trades"] = t["n_trades"].astype(np.int64)
        out["buy_volume"] = t["buy_volume"]
        out["sell_volume"] = t["sell_volume"]
        vol = t["buy_volume"] + t["sell_volume"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["trade_imbalance"] = np.where(vol > 0, (t["buy_volume"] - t["sell_volume"])
                                              / np.where(vol > 0, vol, 1.0), np.nan)
        return out


def _ffill(a):
    """Carry the last finite value forward over NaN (leading NaN stay NaN)."""
    ok = ~np.isnan(a)
    idx = np.where(ok, np.arange(a.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    out = a[idx]
    if a.shape[0] and ok.any():
        out[:int(np.argmax(ok))] = np.nan
    elif a.shape[0]:
        out[:] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# Model: the impact fit and its out-of-sample evaluation (swap points for ofi_fast.analysis).
# --------------------------------------------------------------------------------------------

def fit_model(ofi, dmid):
    """OLS of ``dmid = alpha + beta * ofi`` over the bars where both are finite.

    Cont, Kukanov & Stoikov (2014), eq. 13. Returns a dict: ``beta`` (price units per share of
    OFI), ``alpha``, ``r2`` (in-sample R^2, 1 - SSE/SST), ``t_beta`` (classical OLS t-stat),
    ``n``. With fewer than 3 bars or no variation in OFI the numbers are NaN.
    Swap point: ``ofi_fast.fit_impact`` replaces this when it lands.
    """
    x = np.asarray(ofi, np.float64)
    y = np.asarray(dmid, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.shape[0])
    nan = {"beta": math.nan, "alpha": math.nan, "r2": math.nan, "t_beta": math.nan, "n": n}
    if n < 3:
        return nan
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0.0:
        return nan
    beta = float(((x - xm) * (y - ym)).sum() / sxx)
    alpha = float(ym - beta * xm)
    res = y - alpha - beta * x
    sse = float(res @ res)
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - sse / sst if sst > 0 else math.nan
    se = math.sqrt(sse / (n - 2) / sxx) if n > 2 else math.nan
    return {"beta": beta, "alpha": alpha, "r2": r2,
            "t_beta": beta / se if se > 0 else math.inf, "n": n}


def walk_forward(ofi, dmid, min_train=50):
    """Expanding-window OOS evaluation of the contemporaneous impact model.

    For bar t (after ``min_train`` finite bars), alpha and beta are the OLS fit on the bars
    before t only, and the prediction is ``alpha + beta * ofi_t``. ``oos_r2`` = 1 - SSE / SSE of
    the expanding historical mean (Campbell & Thompson 2008); ``hit_rate`` = share of bars with
    dmid != 0 and a non-zero prediction whose signs agree. Returns a dict with ``n_oos``.
    """
    x = np.asarray(ofi, np.float64)
    y = np.asarray(dmid, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.shape[0]
    out = {"oos_r2": math.nan, "hit_rate": math.nan, "n_oos": 0}
    if n <= min_train:
        return out
    # running sums over the bars strictly before t, centred on the first bar for stability
    xc, yc = x - x[0], y - y[0]
    def excl(a):
        return np.concatenate([[0.0], np.cumsum(a)[:-1]])
    cnt = np.arange(n, dtype=np.float64)
    sx, sy = excl(xc), excl(yc)
    sxx, sxy = excl(xc * xc), excl(xc * yc)
    t = np.arange(min_train, n)
    c = cnt[t]
    vxx = sxx[t] - sx[t] ** 2 / c
    vxy = sxy[t] - sx[t] * sy[t] / c
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(vxx > 0, vxy / vxx, 0.0)
    pred = (sy[t] / c + y[0]) + beta * (xc[t] - sx[t] / c)
    bench = sy[t] / c + y[0]
    yt = y[t]
    sse = float(((yt - pred) ** 2).sum())
    ssb = float(((yt - bench) ** 2).sum())
    out["oos_r2"] = 1.0 - sse / ssb if ssb > 0 else math.nan
    moved = (yt != 0) & (pred != 0)
    if moved.any():
        out["hit_rate"] = float((np.sign(pred[moved]) == np.sign(yt[moved])).mean())
    out["n_oos"] = int(t.shape[0])
    return out


def summarize(table, every_ns, n_events, min_train=50):
    """The numbers ``analyze`` prints, as a dict."""
    fit = fit_model(table["ofi"], table["dmid"])
    wf = walk_forward(table["ofi"], table["dmid"], min_train)
    ti = table["trade_imbalance"]
    ti = ti[np.isfinite(ti)]
    span = (int(table["start_ns"][-1]) + every_ns - int(table["start_ns"][0])
            if table["start_ns"].shape[0] else 0)
    return {
        "events": int(n_events), "bars": int(table["start_ns"].shape[0]),
        "empty_bars": int((table["events"] == 0).sum()), "bar_seconds": every_ns / NS_PER_S,
        "span_seconds": span / NS_PER_S,
        "trades": int(table["n_trades"].sum()),
        "beta": fit["beta"], "alpha": fit["alpha"], "t_beta": fit["t_beta"], "r2": fit["r2"],
        "n_fit": fit["n"], "oos_r2": wf["oos_r2"], "hit_rate": wf["hit_rate"],
        "n_oos": wf["n_oos"],
        "trade_imbalance_min": float(ti.min()) if ti.size else math.nan,
        "trade_imbalance_median": float(np.median(ti)) if ti.size else math.nan,
        "trade_imbalance_max": float(ti.max()) if ti.size else math.nan,
        "ofi_abs_median": float(np.median(np.abs(table["ofi"]))) if table["ofi"].size else 0.0,
    }


def format_summary(name, s, elapsed, input_seconds=None):
    """The summary table ``analyze`` prints."""
    def num(v, fmt):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
    rows = [
        ("input", name),
        ("events", f"{s['events']:,}"),
        ("trades", f"{s['trades']:,}"),
        ("time span", f"{s['span_seconds']:,.0f} s"),
        (f"bars ({s['bar_seconds']:g} s)", f"{s['bars']:,} ({s['empty_bars']:,} empty)"),
        ("beta (dmid per share of OFI)", num(s["beta"], ".6g")),
        ("alpha", num(s["alpha"], ".6g")),
        ("t(beta)", num(s["t_beta"], ".2f")),
        ("R^2 (in sample)", num(s["r2"], ".4f")),
        (f"OOS R^2 (walk-forward, {s['n_oos']:,} bars)", num(s["oos_r2"], ".4f")),
        ("hit rate (sign of dmid)", num(s["hit_rate"], ".4f")),
        ("trade imbalance min / median / max",
         " / ".join(num(s[k], "+.4f") for k in ("trade_imbalance_min",
                                                 "trade_imbalance_median",
                                                 "trade_imbalance_max"))),
        ("elapsed", f"{elapsed:.2f} s" + ("" if input_seconds is None else
                    f" (input {input_seconds:.2f} s, analysis {elapsed - input_seconds:.2f} s)")),
    ]
    w = max(len(k) for k, _ in rows)
    lines = ["ofi-fast analyze: dmid = alpha + beta * OFI over clock bars "
             "(Cont, Kukanov & Stoikov 2014)"]
    lines += [f"  {k:<{w}}  {v}" for k, v in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------------------------

def write_table(table, path):
    """Write the bar table: Parquet for a ``.parquet`` suffix (needs pyarrow), else CSV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise CliError("writing .parquet needs pyarrow (pip install 'ofi_fast[parquet]')") \
                from None
        pq.write_table(pa.table({k: v for k, v in table.items()}), str(path))
        return
    if suffix not in (".csv", ".txt"):
        raise CliError(f"{path}: unknown output format {suffix or '(none)'} "
                       "(use .csv or .parquet)")
    cols = list(table)
    fmts = ["%d" if table[k].dtype.kind in "iu" else "%.12g" for k in cols]
    data = np.column_stack([table[k].astype(np.float64) if table[k].dtype.kind == "f"
                            else table[k] for k in cols]) if cols else np.zeros((0, 0))
    with open(path, "w", newline="") as fh:
        fh.write(",".join(cols) + "\n")
        if data.shape[0]:
            np.savetxt(fh, data, fmt=fmts, delimiter=",")


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


def _need_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib (pip install 'ofi_fast[plot]')") from None
    matplotlib.use("Agg")


def plot(table, s, path):
    """Two panels: OFI vs dmid per bar with the fitted line; OFI and mid over time."""
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x, y = table["ofi"], table["dmid"]
    ok = np.isfinite(x) & np.isfinite(y)
    ax1.scatter(x[ok], y[ok], s=6, alpha=0.4, color="tab:blue", label="bars")
    if np.isfinite(s["beta"]) and ok.any():
        xs = np.linspace(x[ok].min(), x[ok].max(), 2)
        ax1.plot(xs, s["alpha"] + s["beta"] * xs, color="tab:red",
                 label=f"fit: beta={s['beta']:.3g}, R²={s['r2']:.3f}")
    ax1.set_xlabel(f"OFI per {s['bar_seconds']:g} s bar (shares)")
    ax1.set_ylabel("mid change per bar")
    ax1.set_title("Order flow imbalance vs mid change")
    ax1.legend(loc="upper left")
    t_h = (table["start_ns"] - table["start_ns"][0]) / 3600e9 if x.size else x
    ax2.plot(t_h, np.cumsum(x), color="tab:blue", lw=0.8, label="cumulative OFI")
    ax2.set_xlabel("hours from start")
    ax2.set_ylabel("cumulative OFI (shares)", color="tab:blue")
    ax3 = ax2.twinx()
    ax3.plot(t_h, table["mid_close"], color="tab:orange", lw=0.8, label="mid")
    ax3.set_ylabel("mid price", color="tab:orange")
    ax2.set_title("OFI and mid over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_analyze(args):
    t0 = time.perf_counter()
    every = _every_ns(args.every)
    if args.out:
        _check_out(args.out, table=True)
    if args.plot:
        _check_out(args.plot)
        _need_matplotlib()
    t1 = time.perf_counter()
    source = open_source(args.files, args.format, events=args.events, seed=args.seed,
                         levels=args.levels, chunk_size=args.chunk_size)
    bb = BarBuilder(every)
    t_input = time.perf_counter() - t1   # reading / simulating, apart from the analysis
    it = iter(_progress(source, not args.no_progress))
    while True:
        t1 = time.perf_counter()
        c = next(it, None)
        t_input += time.perf_counter() - t1
        if c is None:
            break
        bb.add(c)
    if bb.n_events == 0:
        raise CliError("the input holds no events")
    table = bb.table()
    s = summarize(table, every, bb.n_events, args.min_train)
    if args.out:
        write_table(table, args.out)
    if args.plot:
        plot(table, s, args.plot)
    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"input": source.name, **s, "elapsed_seconds": elapsed,
                          "input_seconds": t_input}))
    else:
        print(format_summary(source.name, s, elapsed, t_input))
        for what, p in (("bar table", args.out), ("figure", args.plot)):
            if p:
                print(f"  {what} written to {p}")
    return 0


def _clock(ts):
    """ns after midnight (LOBSTER, simulator) as HH:MM:SS.fff; epoch ns as an ISO UTC time."""
    if abs(ts) < 7 * 86400 * NS_PER_S:
        s = ts / NS_PER_S
        return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"
    import datetime as dt
    return dt.datetime.fromtimestamp(ts / NS_PER_S, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3]


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


def cmd_stream(args):
    import ofi_fast
    from ofi_fast._ofi import _EmptyCall
    every = _every_ns(args.every)
    window = _every_ns(args.window)
    source = open_source(args.files, args.format, events=args.events, seed=args.seed,
                         levels=args.levels, chunk_size=args.chunk_size)
    ofi = ofi_fast.OFI(window_time=window, grow=True)
    clock = time.perf_counter_ns
    lats = []
    out = sys.stdout
    out.write(f"ofi-fast stream: {source.name}; one line per {args.every:g} s bar, "
              f"OFI window {args.window:g} s\n")
    out.write(f"{'bar start':>12}  {'events':>7}  {'OFI(bar)':>10}  {'OFI(window)':>11}  "
              f"{'mid':>11}  {'dmid':>9}\n")
    k_cur = None
    bar_ofi = 0.0
    bar_n = 0
    mid_prev = mid_last = math.nan
    n_total = 0
    floor = None

    def line(k):
        nonlocal mid_prev
        dm = mid_last - mid_prev if not math.isnan(mid_prev) else math.nan
        out.write(f"{_clock(k * every):>12}  {bar_n:>7d}  {bar_ofi:>+10.0f}  "
                  f"{ofi.value:>+11.0f}  {mid_last:>11.4f}  {dm:>+9.4f}\n")
        mid_prev = mid_last

    for c in source.chunks():
        rows = list(zip(c.ts.tolist(), c.bid_px.tolist(), c.bid_sz.tolist(),
                        c.ask_px.tolist(), c.ask_sz.tolist()))
        if floor is None:                     # the timer + empty-call floor, same loop
            floor = _timed_loop(_EmptyCall().update, rows[:100_000])
        lat = np.empty(len(rows), np.int64)
        upd = ofi.update
        for i, (ts, bp, bs, ap, az) in enumerate(rows):
            k = ts // every
            if k != k_cur:
                if k_cur is not None:
                    line(k_cur)
                    for kk in range(k_cur + 1, k):     # empty bars, as ofi_fast.bars keeps
                        bar_ofi, bar_n = 0.0, 0
                        line(kk)
                k_cur, bar_ofi, bar_n = k, 0.0, 0
            t = clock()
            e = upd(ts, bp, bs, ap, az)
            lat[i] = clock() - t
            bar_ofi += e
            bar_n += 1
            m = 0.5 * (bp + ap)
            if m == m:
                if math.isnan(mid_prev) and math.isnan(mid_last):
                    mid_prev = m
                mid_last = m
        lats.append(lat)
        n_total += len(rows)
    if k_cur is None:
        raise CliError("the input holds no events")
    line(k_cur)
    lat = np.concatenate(lats)
    p = _percentiles(lat)
    f = _percentiles(floor)
    out.write(f"\n{n_total:,} events; OFI.update latency per event, ns "
              f"(perf_counter_ns around each call, timer included):\n")
    out.write(f"  {'':<22}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>10}\n")
    out.write(f"  {'OFI.update':<22}{p[0]:>8.0f}{p[1]:>8.0f}{p[2]:>8.0f}{p[3]:>10.0f}\n")
    out.write(f"  {'empty call (floor)':<22}{f[0]:>8.0f}{f[1]:>8.0f}{f[2]:>8.0f}"
              f"{f[3]:>10.0f}\n")
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


def _every_ns(seconds):
    v = int(round(seconds * NS_PER_S))
    if v <= 0:
        raise CliError(f"bar length {seconds!r} s is below one nanosecond")
    return v


def build_parser():
    p = _Parser(prog="ofi-fast", description="Order flow imbalance: analyse, stream and "
                "benchmark limit-order-book data (embedded simulator when no FILE is given).")
    from ofi_fast import __version__
    p.add_argument("--version", action="version", version=f"ofi-fast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def inputs(sp, default_events):
        sp.add_argument("files", nargs="*", metavar="FILE",
                        help="LOBSTER message + orderbook CSV pair or zip; none: simulator")
        sp.add_argument("--format", default="auto", choices=["auto", *sorted(FORMATS)],
                        help="input format (default: detect from names and content)")
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
                       description="Build best-level OFI into clock bars, fit dmid on OFI, "
                       "evaluate walk-forward, print a summary.")
    inputs(a, 1_000_000)
    a.add_argument("--out", metavar="PATH", help="write the bar table (.csv or .parquet)")
    a.add_argument("--plot", metavar="PNG", help="write a figure (needs matplotlib)")
    a.add_argument("--min-train", type=_positive(int), default=50, metavar="BARS",
                   help="bars before the first out-of-sample prediction (default 50)")
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
    return p


def main(argv=None):
    """Entry point of the ``ofi-fast`` console script; returns the exit status."""
    from ofi_fast.errors import OFIError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:        # --help / --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        print("ofi-fast: error: choose a command: analyze, stream or bench "
              "(see 'ofi-fast --help')", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:          # e.g. `ofi-fast stream | head`: stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, OFIError, OSError, zipfile.BadZipFile) as exc:
        msg = str(exc)
        if isinstance(exc, OSError) and exc.filename is not None:
            msg = f"{exc.filename}: {exc.strerror or exc}"
        print(f"ofi-fast: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ofi-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
