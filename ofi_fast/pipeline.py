"""The main job as a library: :func:`analyze` and :func:`stream`.

``analyze(inputs)`` reads a :class:`~ofi_fast.feeds.Source` chunk by chunk (memory bounded by
the chunk size and the number of bars), builds best-level OFI (Cont, Kukanov & Stoikov 2014,
eq. 10) into clock bars through the streaming objects (:class:`ofi_fast.OFI` on best quotes,
:class:`ofi_fast.BookOFI` on L2 deltas, :class:`ofi_fast.TradeFlow` on trades), fits
``dmid_k = alpha + beta * OFI_k + eps`` (:func:`ofi_fast.fit_impact`), evaluates it walk-forward
(:func:`impact_oos`) and as a next-bar forecast (:func:`forecast`), adds VPIN on the bars
(:func:`bar_vpin`), and returns an :class:`Analysis`: the bar table, the fit, the summary dict
(what ``ofi-fast analyze --json`` prints, minus timing), the :class:`~ofi_fast.quality.DataQuality`.

``stream(inputs)`` replays the same input event by event in time order and yields one
:class:`StreamBar` per bar as it closes (what ``ofi-fast stream`` prints).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from ofi_fast.errors import OFIError
from ofi_fast.feeds.sources import Chunk, InputError, Source, infer_tick_size, open as open_source
from ofi_fast.quality import DataQuality

NS_PER_S = 1_000_000_000

#: Most bars one analysis may hold (8 float64 columns: about 640 MB); a timestamp that would
#: need more is a :class:`BarLimitError` before anything is allocated.
MAX_BARS = 10_000_000

#: Crossed-book policy of the books the pipeline rebuilds: a crossed state is applied and
#: counted, never repaired by deleting levels the feed still shows.
CROSSED_POLICY = "keep"

#: Fewer non-empty bars than this in a fit: the summary carries a warning.
MIN_FIT_BARS = 30


class BarLimitError(OFIError):
    """The bars would span more than :data:`MAX_BARS` (a far-future or corrupt timestamp)."""


def _iso(ts_ns: int) -> str:
    """ns since the epoch as an ISO-8601 UTC time (or the raw number when out of range)."""
    import datetime as dt
    try:
        return dt.datetime.fromtimestamp(ts_ns / NS_PER_S, dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return f"{ts_ns} ns"


def _on_grid(dmid: np.ndarray, tick_size: float | None) -> np.ndarray:
    """Mid changes rounded to the half-tick grid the mids lie on (mid = (bid + ask) / 2 with
    both on the tick grid), so an unchanged mid is exactly 0 and no float residue (1e-13) is
    left; unchanged without a tick size."""
    if not tick_size:
        return dmid
    half = 0.5 * float(tick_size)
    with np.errstate(invalid="ignore"):
        return np.rint(dmid / half) * half


# --------------------------------------------------------------------------------------------
# Bars: per-chunk library calls (ofi_fast.OFI / BookOFI, TradeFlow, bars) on one clock grid.
# --------------------------------------------------------------------------------------------

_BAR_COLS = ("events", "ofi", "mid_open", "mid_close", "n_trades", "buy_volume", "sell_volume",
             "unknown_volume", "last_price")


class BarBuilder:
    """Clock bars ``[k*every, (k+1)*every)`` built chunk by chunk (memory ~ bars, not events).

    Per bar: ``events`` (input rows: quote updates or L2 deltas), ``ofi`` (sum of the best-level
    e_n, Cont, Kukanov & Stoikov 2014 eq. 10, from :class:`ofi_fast.OFI` over best quotes or
    :class:`ofi_fast.BookOFI` over L2 deltas, summed by :func:`ofi_fast.bars`), ``mid_open`` /
    ``mid_close`` (mid after the first / last event of the bar; for L2 deltas after the first /
    last *complete* exchange message, ``FLAG_BATCH_END``), ``n_trades``, ``buy_volume``,
    ``sell_volume`` (signed volume from :class:`ofi_fast.TradeFlow`: the feed's aggressor side,
    side-0 trades signed by ``classify``, e.g. the tick rule; ``unknown_volume`` what stays
    unsigned). The OFI, book and trade-flow streams continue across chunks.
    """

    def __init__(self, every, *, kind="quotes", tick_size=None, classify="tick",
                 max_bars=MAX_BARS):
        import ofi_fast
        self.every = int(every)
        self.max_bars = int(max_bars)
        self.kind = kind
        self.tick_size = tick_size
        self.ofi = ofi_fast.OFI() if kind == "quotes" else None
        self.flow = ofi_fast.TradeFlow(classify=classify)
        self._bars = ofi_fast.bars
        self.k0 = None
        self.n = 0
        self.cols = {k: np.zeros(0) for k in _BAR_COLS}
        self.first_mid = math.nan
        self.n_events = 0
        self.n_rows = 0               # input rows handed to the book / OFI (snapshots included)
        self.n_trades = 0
        self.n_trades_unsided = 0     # trades whose feed gave no aggressor side (side 0)
        self.n_messages = 0           # L2: complete messages (OFI events)
        self.n_snapshots = 0
        self._snap = None             # L2: rows of a snapshot being collected
        self._last_k = None
        self._open_bar = None         # L2: absolute number of the bar whose mid_open is set

    # -- the bar grid ------------------------------------------------------------------------
    def _fill(self, name):
        return np.nan if name.startswith("mid") or name == "last_price" else 0.0

    def _limit(self, k_lo, k_hi):
        """A grid spanning bars k_lo..k_hi (with the bars so far) of more than ``max_bars``
        bars is a :class:`BarLimitError` naming the timestamp, before anything is allocated."""
        lo = k_lo if self.k0 is None else min(k_lo, self.k0)
        hi = k_hi if self.k0 is None else max(k_hi, self.k0 + self.n - 1)
        if hi - lo + 1 > self.max_bars:
            far = k_hi if hi == k_hi else k_lo
            near = lo if far == hi else hi
            raise BarLimitError(
                f"timestamp {far * self.every} ns ({_iso(far * self.every)}) would need "
                f"{hi - lo + 1:,} bars of {self.every / NS_PER_S:g} s from "
                f"{_iso(near * self.every)} (at most {self.max_bars:,}; check the timestamps or "
                "use a longer bar)", field="ts")

    def _span(self, k_lo, k_hi):
        """Make bars k_lo..k_hi exist (the grid grows at either end); return k0."""
        self._limit(k_lo, k_hi)
        if self.k0 is None:
            self.k0 = k_lo
        if k_lo < self.k0:
            pad = self.k0 - k_lo
            for name, a in self.cols.items():
                b = np.full(a.shape[0] + pad, self._fill(name))
                b[pad:pad + self.n] = a[:self.n]
                self.cols[name] = b
            self.k0 = k_lo
            self.n += pad
        need = k_hi - self.k0 + 1
        if need > self.n:
            cap = self.cols["ofi"].shape[0]
            if need > cap:
                cap = max(need, 2 * cap, 1024)
                for name, a in self.cols.items():
                    b = np.full(cap, self._fill(name))
                    b[:self.n] = a[:self.n]
                    self.cols[name] = b
            self.n = need
        return self.k0

    def _check_order(self, k_first):
        if self._last_k is not None and k_first < self._last_k:
            from ofi_fast.errors import TimeOrderError
            raise TimeOrderError(f"ts[{self.n_events}] goes backwards in time (chunk order)",
                                 field="ts", index=self.n_events)

    def _add_event_bars(self, ts, e):
        ev = self.every
        self._limit(int(ts[0]) // ev, int(ts[-1]) // ev)
        b = self._bars(ts, e, every=ev)
        k = b.start // ev
        self._check_order(int(k[0]))
        k0 = self._span(int(k[0]), int(k[-1]))
        s = slice(int(k[0]) - k0, int(k[-1]) - k0 + 1)
        self.cols["events"][s] += b.count
        self.cols["ofi"][s] += b.sum
        self._last_k = int(k[-1])

    # -- input -------------------------------------------------------------------------------
    def add(self, c):
        """Feed one :class:`Chunk`; returns its per-event e_n (empty for trades only)."""
        e = np.zeros(0)
        self.n_rows += len(c)
        if len(c):
            e = self._add_quotes(c) if c.kind == "quotes" else self._add_deltas(c)
            self.n_events += len(c)
        if c.trade_ts.shape[0]:
            self._add_trades(c.trade_ts, c.trade_price, c.trade_size, c.trade_side)
        return e

    def _add_quotes(self, c):
        ev = self.every
        e = self.ofi.update_many(c.ts, c.bid_px, c.bid_sz, c.ask_px, c.ask_sz)
        self._add_event_bars(c.ts, e)
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
        return e

    def _bookofi(self, price):
        import ofi_fast
        if self.ofi is None:
            if self.tick_size is None:
                self.tick_size = infer_tick_size(price)
            self.ofi = ofi_fast.BookOFI(self.tick_size, levels=1, crossed=CROSSED_POLICY)
        return self.ofi

    def _add_deltas(self, c):
        from ofi_fast.errors import OFIError
        bo = self._bookofi(c.price)
        try:
            return self._add_deltas_to(bo, c)
        except OFIError as exc:
            if getattr(exc, "field", None) in ("price", "bid_px", "ask_px"):
                raise type(exc)(f"{exc} (book tick size {self.tick_size:g}; set it with "
                                "--tick-size)", field=exc.field, index=exc.index) from None
            raise

    def _add_deltas_to(self, bo, c):
        from ofi_fast.feeds import FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT
        n = len(c)
        e = np.zeros(n)
        snap = (c.flags & FLAG_SNAPSHOT) != 0
        be = (c.flags & FLAG_BATCH_END) != 0
        # runs of snapshot / diff rows
        cuts = np.flatnonzero(snap[1:] != snap[:-1]) + 1
        starts = np.r_[0, cuts]
        ends = np.r_[cuts, n]
        snap_ts = _snapshot_times(c) if snap.any() else None
        for a, b in zip(starts.tolist(), ends.tolist()):
            if snap[a]:
                self._snapshot_rows(c, a, b, snap_ts, be, (c.flags & FLAG_CLEAR) != 0)
            else:
                e[a:b] = self._diff_rows(bo, c, a, b, be)
        # snapshot rows are not events: they restart the book (and may be stamped out of
        # order, e.g. Binance diffs buffered before the REST snapshot)
        diff = ~snap
        if diff.any():
            self._add_event_bars(c.ts[diff], e[diff])
        self.n_events += int(diff.sum()) - n      # add() counts every row
        return e

    def _snapshot_rows(self, c, a, b, snap_ts, be, clear):
        """Collect snapshot rows; at each batch end load the snapshot into the BookOFI (OFI
        restarts from it: it never spans a snapshot). The book after it is the bar's closing
        mid until a later message of the bar (as in :func:`stream`): ``snap_ts`` maps the
        snapshot's end row to its time there (:func:`_snapshot_times`)."""
        i = a
        while i < b:
            if clear[i] or self._snap is None:
                self._snap = []
            ends = np.flatnonzero(be[i:b])
            j = i + int(ends[0]) + 1 if ends.size else b
            self._snap.append((c.side[i:j], c.price[i:j], c.size[i:j]))
            if ends.size:
                side = np.concatenate([s for s, _, _ in self._snap])
                px = np.concatenate([p for _, p, _ in self._snap])
                sz = np.concatenate([z for _, _, z in self._snap])
                bid, ask = side > 0, side < 0
                self.ofi.load_snapshot(px[bid], sz[bid], px[ask], sz[ask])
                self._snap = None
                self.n_snapshots += 1
                m = self.ofi.book.mid
                if math.isnan(self.first_mid) and math.isfinite(m):
                    self.first_mid = float(m)
                if math.isfinite(m):
                    k = int(snap_ts[j - 1]) // self.every
                    if self._last_k is not None:
                        k = max(k, self._last_k)
                    k0 = self._span(k, k)             # (may replace the column arrays)
                    self.cols["mid_close"][k - k0] = m
            i = j

    def _diff_rows(self, bo, c, a, b, be):
        """Apply diff rows a..b bar by bar; read the mid after the first and the last complete
        message of each bar."""
        ev = self.every
        ts = c.ts[a:b]
        self._limit(int(ts[0]) // ev, int(ts[-1]) // ev)
        k = ts // ev
        out = np.empty(b - a)
        bounds = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1, b - a]
        book = bo.book
        self._check_order(int(k[0]))
        k0 = self._span(int(k[0]), int(k[-1]))
        mo, mc = self.cols["mid_open"], self.cols["mid_close"]
        for s, t in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            j = int(k[s]) - k0
            ends = np.flatnonzero(be[a + s:a + t])
            pieces = {s, t}
            if ends.size:
                pieces |= {s + int(ends[0]) + 1, s + int(ends[-1]) + 1}
                self.n_messages += int(ends.size)
            pieces = sorted(pieces)
            first = True
            for p, q in zip(pieces[:-1], pieces[1:]):
                out[p:q] = bo.update_many(ts[p:q], c.side[a + p:a + q], c.price[a + p:a + q],
                                          c.size[a + p:a + q], batch_end=be[a + p:a + q])
                if be[a + q - 1]:
                    # mid after the bar's first / last complete message (NaN when a side of
                    # the book is empty then: the close is carried from the previous bar)
                    m = book.mid
                    if first and self._open_bar != j + k0:
                        mo[j] = m
                        self._open_bar = j + k0
                    first = False
                    mc[j] = m
                    if math.isnan(self.first_mid) and math.isfinite(m):
                        self.first_mid = float(m)
        return out

    def _add_trades(self, ts, price, size, side):
        ev = self.every
        self._limit(int(ts[0]) // ev, int(ts[-1]) // ev)
        signed = self.flow.update_many(ts, price, size, side)
        tk = ts // ev
        k0 = self._span(int(tk[0]), int(tk[-1]))
        tk = tk - k0
        lo = int(tk[0])
        w = int(tk[-1]) - lo + 1
        rel = tk - lo
        sl = slice(lo, lo + w)
        self.cols["n_trades"][sl] += np.bincount(rel, minlength=w)
        self.cols["buy_volume"][sl] += np.bincount(rel, np.where(signed > 0, signed, 0.0),
                                                   minlength=w)
        self.cols["sell_volume"][sl] += np.bincount(rel, np.where(signed < 0, -signed, 0.0),
                                                    minlength=w)
        self.cols["unknown_volume"][sl] += np.bincount(rel, np.where(signed == 0, size, 0.0),
                                                       minlength=w)
        lb = self._bars(ts, price, every=ev)          # the bar's last trade price
        has = lb.count > 0
        self.cols["last_price"][(lb.start[has] // ev) - k0] = lb.last[has]
        self.n_trades += int(ts.shape[0])
        self.n_trades_unsided += int(np.count_nonzero(np.asarray(side) == 0))

    # -- output ------------------------------------------------------------------------------
    def table(self, gaps=()):
        """The bar table as a dict of equal-length arrays (see README for the columns).

        ``gaps``: :class:`~ofi_fast.quality.Gap` s; a bar that overlaps ``[gap.ts,
        gap.resync_ts]`` (to the end when never resynced) gets ``valid`` False."""
        n = self.n
        t = {k: a[:n].copy() for k, a in self.cols.items()}
        k0 = self.k0 if self.k0 is not None else 0
        out = {"start_ns": (np.arange(n, dtype=np.int64) + k0) * self.every,
               "events": t["events"].astype(np.int64), "ofi": t["ofi"],
               "mid_open": t["mid_open"], "mid_close": _ffill(t["mid_close"])}
        prev = np.concatenate([[self.first_mid], out["mid_close"][:-1]])
        out["dmid"] = _on_grid(out["mid_close"] - prev, self.tick_size)
        out["n_trades"] = t["n_trades"].astype(np.int64)
        out["buy_volume"] = t["buy_volume"]
        out["sell_volume"] = t["sell_volume"]
        vol = t["buy_volume"] + t["sell_volume"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["trade_imbalance"] = np.where(vol > 0, (t["buy_volume"] - t["sell_volume"])
                                              / np.where(vol > 0, vol, 1.0), np.nan)
        valid = np.ones(n, bool)
        for g in gaps:
            end = g.resync_ts if g.resync_ts is not None else np.iinfo(np.int64).max
            valid &= ~((out["start_ns"] + self.every > g.ts) & (out["start_ns"] <= end))
        out["valid"] = valid
        self._unknown = t["unknown_volume"]
        self._last_price = t["last_price"]
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
# VPIN on the bar table (Easley, Lopez de Prado & O'Hara 2012: time bars fill volume buckets)
# --------------------------------------------------------------------------------------------

def bar_vpin(table, last_price, unknown_volume, every, *, true_sides, bucket_volume=None,
             n_buckets=50):
    """VPIN over the bars: each bar with volume is one "trade" of its volume V_k and a buy
    fraction (``B_k / (B_k + S_k)`` from the trade sides when ``true_sides``, else bulk volume
    classification ``Z(dP_k / sigma)`` of :func:`ofi_fast.bvc` on the bars' last trade prices),
    fed to :func:`ofi_fast.vpin`. This is the paper's own construction (trades aggregated into
    time bars, bars split across equal-volume buckets), and it lets the bucket size be chosen
    after the total volume is known with memory bounded by the bars.

    ``bucket_volume`` default: total volume / (4 * n_buckets), so the sample holds about
    4 * n_buckets buckets and 3 * n_buckets + 1 VPIN values, each over a quarter of the sample.
    Returns (vpin per bar: the value after the last bucket closed by the end of that bar, NaN
    before; dict of summary numbers).
    """
    import ofi_fast
    start = table["start_ns"]
    buy, sell = table["buy_volume"], table["sell_volume"]
    vol = buy + sell
    info = {"vpin_method": "true sides" if true_sides else "BVC", "vpin_bucket_volume": math.nan,
            "vpin_n_buckets": int(n_buckets), "vpin_buckets_closed": 0,
            "vpin_min": math.nan, "vpin_median": math.nan, "vpin_max": math.nan}
    per_bar = np.full(start.shape[0], np.nan)
    if not true_sides:
        vol = vol + unknown_volume
    has = vol > 0
    total = float(vol.sum())
    if total <= 0:
        return per_bar, info
    V = float(bucket_volume) if bucket_volume else total / (4 * n_buckets)
    info["vpin_bucket_volume"] = V
    ts, v = start[has], vol[has]
    if true_sides:
        frac = buy[has] / v
    else:
        lp = last_price[has]
        bv = ofi_fast.bvc(ts, lp, v, every=every)
        frac = bv.buy_fraction[(ts - bv.start[0]) // every]
    bk = ofi_fast.vpin(ts, v, buy_fraction=frac, bucket_volume=V, n_buckets=int(n_buckets))
    info["vpin_buckets_closed"] = int(bk.ts.shape[0])
    idx = np.searchsorted(bk.ts, start, side="right") - 1
    ok = idx >= 0
    per_bar[ok] = bk.vpin[idx[ok]]
    fin = bk.vpin[np.isfinite(bk.vpin)]
    if fin.size:
        info.update(vpin_min=float(fin.min()), vpin_median=float(np.median(fin)),
                    vpin_max=float(fin.max()))
    return per_bar, info


# --------------------------------------------------------------------------------------------
# Model: the impact fit (ofi_fast.fit_impact) and its out-of-sample evaluation
# (ofi_fast.RollingOLS, ofi_fast.analysis.walk_forward / oos_metrics).
# --------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------
# Model: the impact fit (ofi_fast.fit_impact) and its out-of-sample evaluation
# (ofi_fast.RollingOLS, ofi_fast.analysis.walk_forward / oos_metrics).
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fit:
    """The contemporaneous impact fit ``dmid = alpha + beta * OFI`` over the valid bars.

    ``beta`` (price units per unit of OFI), ``alpha``, ``r2``, ``t_beta`` (classical) and
    ``t_beta_robust`` (Newey-West with ``nw_lags`` lags), ``n`` bars fitted, ``n_nonempty`` of
    them with events. ``perfect``: the residuals are zero (R^2 = 1 to rounding), so the t
    statistics are undefined (reported as inf, printed as "perfect fit"). ``warning``: why the
    numbers should not be read as evidence (fewer than :data:`MIN_FIT_BARS` non-empty bars, a
    perfect fit), else None.
    """

    beta: float
    alpha: float
    r2: float
    t_beta: float
    t_beta_robust: float
    n: int
    nw_lags: int
    n_nonempty: int
    perfect: bool = False
    warning: str | None = None


def fit_model(ofi, dmid, events=None) -> Fit:
    """``ofi_fast.fit_impact(ofi, dmid)`` (CKS 2014 eq. 14; NaN bars skipped) as a :class:`Fit`.

    ``events`` (per bar) counts the non-empty bars for the warning."""
    import ofi_fast
    f = ofi_fast.fit_impact(ofi, dmid)
    ok = np.isfinite(np.asarray(ofi, np.float64)) & np.isfinite(np.asarray(dmid, np.float64))
    n_ne = int(np.count_nonzero(ok & (np.asarray(events) > 0))) if events is not None \
        else int(f.n)
    t, tr = float(f.t_beta), float(f.t_beta_robust)
    perfect = bool(f.n > 2 and math.isfinite(f.r2) and f.r2 >= 1.0 - 1e-12)
    if perfect:
        t = tr = math.inf if f.beta >= 0 else -math.inf
    warn = []
    if perfect:
        warn.append(f"perfect fit on {int(f.n)} bars: t undefined")
    if n_ne < MIN_FIT_BARS:
        warn.append(f"fit on {n_ne} non-empty bars (fewer than {MIN_FIT_BARS}): not evidence; "
                    "give more data or a shorter --every")
    return Fit(beta=float(f.beta), alpha=float(f.alpha), r2=float(f.r2), t_beta=t,
               t_beta_robust=tr, n=int(f.n), nw_lags=int(f.lags), n_nonempty=n_ne,
               perfect=perfect, warning="; ".join(warn) or None)


def impact_oos(ofi, dmid, min_train=50):
    """Walk-forward evaluation of the *contemporaneous* impact model (parameters out of sample).

    For bar t, ``alpha`` and ``beta`` are the OLS fit on the bars before t only (an expanding
    :class:`ofi_fast.RollingOLS`, ``update_many(forecast=True)``: each prediction is made before
    its own bar is added), applied to the same bar's OFI: ``yhat_t = alpha + beta * OFI_t``.
    This is *not* a forecast: OFI_t is only known at the end of bar t. It measures how stable
    the price-impact coefficient is. Bars before ``min_train`` fitted bars get no prediction.
    Metrics (:func:`ofi_fast.analysis.oos_metrics`): ``oos_r2`` = 1 - SSE / SSE of the
    expanding historical mean of dmid (Campbell & Thompson 2008), ``hit_rate`` = share of bars
    with dmid != 0 and a non-zero prediction whose signs agree, ``n_oos`` bars evaluated.
    """
    import ofi_fast
    from ofi_fast.analysis import oos_metrics
    x = np.asarray(ofi, np.float64)
    y = np.asarray(dmid, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = np.ascontiguousarray(x[ok]), np.ascontiguousarray(y[ok])
    n = x.shape[0]
    out = {"oos_r2": math.nan, "hit_rate": math.nan, "n_oos": 0}
    if n <= min_train:
        return out
    yhat = ofi_fast.RollingOLS().update_many(x, y, forecast=True)
    ybar = np.full(n, np.nan)
    ybar[1:] = np.cumsum(y)[:-1] / np.arange(1, n)
    yhat[:min_train] = np.nan
    m = oos_metrics(y, yhat, ybar)
    out.update(oos_r2=m["r2_oos"], hit_rate=m["hit_rate"], n_oos=m["n"])
    return out


def forecast(table, every_ns, min_train=50):
    """Next-bar forecast: OFI of bar k predicts dmid of bar k+1, evaluated walk-forward by
    :func:`ofi_fast.analysis.walk_forward` (expanding RollingOLS). Its guard refuses any pair
    whose feature ends after its target starts, and each forecast is fitted only on pairs whose
    target had ended before it: no look-ahead. Returns ``forecast_r2``, ``forecast_hit_rate``,
    ``n_forecast`` (NaN / 0 with too few bars)."""
    from ofi_fast.analysis import predictive_pairs, walk_forward as wf
    out = {"forecast_r2": math.nan, "forecast_hit_rate": math.nan, "n_forecast": 0}
    ok = np.isfinite(table["dmid"])
    if int(ok.sum()) <= min_train + 1:
        return out
    start = table["start_ns"][ok]
    t = {"end": start + every_ns, "ofi": table["ofi"][ok], "dmid": table["dmid"][ok]}
    X, y, fe, ts_, te = predictive_pairs(t, ["ofi"], target="dmid")
    r = wf(X, y, feature_end=fe, target_start=ts_, target_end=te, min_train=min_train)
    m = r["metrics"]
    out.update(forecast_r2=m["r2_oos"], forecast_hit_rate=m["hit_rate"], n_forecast=m["n"])
    return out



def _why_empty(n_bars: int, need: int) -> str:
    return (f"n/a: {n_bars} usable bars, needs more than {need} (lower --min-train / "
            "min_train, or use a shorter --every / every, or more data)")


def summarize(table, every_ns, n_events, min_train=50, *, bb=None, vpin_bucket=None,
              vpin_buckets=50):
    """The numbers ``analyze`` prints, as a dict (adds the ``vpin`` column to ``table`` when a
    :class:`BarBuilder` ``bb`` is given). Bars with ``valid`` False (after a gap, before its
    resync) are left out of the fit and the evaluations."""
    valid = table.get("valid", np.ones(table["ofi"].shape[0], bool))
    ofi = np.where(valid, table["ofi"], np.nan)
    dmid = np.where(valid, table["dmid"], np.nan)
    fit = fit_model(ofi, dmid, table["events"])
    wf = impact_oos(ofi, dmid, min_train)
    fc = forecast({**table, "ofi": ofi, "dmid": dmid}, every_ns, min_train)
    ti = table["trade_imbalance"]
    ti = ti[np.isfinite(ti)]
    span = (int(table["start_ns"][-1]) + every_ns - int(table["start_ns"][0])
            if table["start_ns"].shape[0] else 0)
    n_usable = int(np.count_nonzero(np.isfinite(ofi) & np.isfinite(dmid)))
    warnings = [fit.warning] if fit.warning else []
    notes = {}
    if wf["n_oos"] == 0:
        notes["oos_note"] = _why_empty(n_usable, min_train)
    if fc["n_forecast"] == 0:
        notes["forecast_note"] = _why_empty(n_usable, min_train + 1)
    s = {
        "events": int(n_events), "bars": int(table["start_ns"].shape[0]),
        "empty_bars": int((table["events"] == 0).sum()),
        "invalid_bars": int(np.count_nonzero(~valid)), "bar_seconds": every_ns / NS_PER_S,
        "span_seconds": span / NS_PER_S,
        "trades": int(table["n_trades"].sum()),
        "beta": fit.beta, "alpha": fit.alpha, "t_beta": fit.t_beta,
        "t_beta_robust": fit.t_beta_robust, "nw_lags": fit.nw_lags, "r2": fit.r2,
        "n_fit": fit.n, "n_fit_nonempty": fit.n_nonempty, "perfect_fit": fit.perfect,
        "oos_r2": wf["oos_r2"], "hit_rate": wf["hit_rate"], "n_oos": wf["n_oos"], **fc,
        **notes, "warnings": warnings,
        "trade_imbalance_min": float(ti.min()) if ti.size else math.nan,
        "trade_imbalance_median": float(np.median(ti)) if ti.size else math.nan,
        "trade_imbalance_max": float(ti.max()) if ti.size else math.nan,
        "ofi_abs_median": float(np.median(np.abs(table["ofi"]))) if table["ofi"].size else 0.0,
    }
    if bb is not None:
        flow = bb.flow
        s.update(buy_volume=float(flow.buy_volume), sell_volume=float(flow.sell_volume),
                 unknown_volume=float(flow.unknown_volume),
                 trade_imbalance_total=(float(flow.imbalance) if not flow.empty else math.nan),
                 trades_unsided=int(bb.n_trades_unsided))
        true_sides = bb.n_trades_unsided == 0
        table["vpin"], info = bar_vpin(table, bb._last_price, bb._unknown, every_ns,
                                       true_sides=true_sides, bucket_volume=vpin_bucket,
                                       n_buckets=vpin_buckets)
        s.update(info)
        s["tick_size"] = bb.tick_size
        if bb.kind == "deltas":
            s.update(messages=int(bb.n_messages), snapshots=int(bb.n_snapshots))
    return s, fit


def json_ready(d):
    """``d`` with every non-finite float as None (strict JSON), recursively."""
    if isinstance(d, dict):
        return {k: json_ready(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [json_ready(v) for v in d]
    if isinstance(d, float) and not math.isfinite(d):
        return None
    return d


# --------------------------------------------------------------------------------------------
# Results: the bar table and the analysis
# --------------------------------------------------------------------------------------------

#: Columns holding ns since the epoch: datetime64[ns, UTC] in DataFrames, timestamp in Parquet.
TIME_COLUMNS = ("start_ns",)


class BarTable:
    """The bar table: equal-length numpy columns, one row per clock bar ``[start, start +
    every)`` from the first event's bar to the last (empty bars kept).

    Columns (README "The bar table"): ``start_ns`` (int64, ns since the epoch; the simulator
    and undated LOBSTER files: ns after midnight of 1970-01-01), ``events``, ``ofi``,
    ``mid_open``, ``mid_close``, ``dmid``, ``n_trades``, ``buy_volume``, ``sell_volume``,
    ``trade_imbalance``, ``valid`` (False after a gap until its resync), ``vpin``.
    ``table["ofi"]`` is a column; ``to_pandas()`` / ``to_polars()`` / ``to_parquet(path)`` /
    ``to_csv(path)`` convert it (times as datetime64[ns, UTC] / Parquet timestamps; CSV times
    as exact integers).
    """

    def __init__(self, columns: dict[str, np.ndarray], every_ns: int):
        self.columns = dict(columns)
        self.every_ns = int(every_ns)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __len__(self) -> int:
        return int(self.columns["start_ns"].shape[0])

    def keys(self) -> list[str]:
        return list(self.columns)

    def __repr__(self) -> str:
        return f"BarTable({len(self)} bars of {self.every_ns / NS_PER_S:g} s, {self.keys()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BarTable):
            return NotImplemented
        return self.every_ns == other.every_ns and self.keys() == other.keys() and all(
            np.array_equal(self[k], other[k], equal_nan=self[k].dtype.kind == "f")
            for k in self.keys())

    def to_pandas(self):
        """A pandas DataFrame; ``start_ns`` becomes ``start`` (datetime64[ns, UTC])."""
        import pandas as pd
        d: dict[str, Any] = {}
        for k, v in self.columns.items():
            if k in TIME_COLUMNS:
                d[k[:-3]] = pd.to_datetime(v, unit="ns", utc=True)
            else:
                d[k] = v
        return pd.DataFrame(d)

    def to_polars(self):
        """A polars DataFrame; ``start_ns`` becomes ``start`` (Datetime("ns", "UTC"))."""
        import polars as pl
        d: dict[str, Any] = {}
        for k, v in self.columns.items():
            if k in TIME_COLUMNS:
                d[k[:-3]] = pl.Series(v).cast(pl.Datetime("ns", "UTC"))
            else:
                d[k] = v
        return pl.DataFrame(d)

    def to_arrow(self):
        """A pyarrow Table; ``start_ns`` becomes ``start`` (timestamp[ns, tz=UTC])."""
        import pyarrow as pa
        cols: dict[str, Any] = {}
        for k, v in self.columns.items():
            if k in TIME_COLUMNS:
                cols[k[:-3]] = pa.array(v, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
            else:
                cols[k] = pa.array(v)
        return pa.table(cols)

    def to_parquet(self, path) -> None:
        """Write Parquet (needs pyarrow) atomically: a temporary name in the same folder,
        renamed when complete."""
        import pyarrow.parquet as pq
        table = self.to_arrow()
        with atomic_path(path) as tmp:
            pq.write_table(table, str(tmp))

    def to_csv(self, path) -> None:
        """Write CSV atomically; integer columns (``start_ns`` too) as exact integers, floats
        with 12 significant digits, booleans as 0/1, NaN as empty fields' ``nan``."""
        cols = self.keys()
        text = []
        for k in cols:
            v = self.columns[k]
            if v.dtype.kind in "iub":
                text.append(v.astype(np.int64).astype(str))
            else:
                text.append(np.char.mod("%.12g", v.astype(np.float64)))
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            fh.write(",".join(cols) + "\n")
            n = len(self)
            step = 100_000
            for a in range(0, n, step):
                rows = [",".join(r) for r in zip(*(t[a:a + step] for t in text))]
                fh.write("\n".join(rows) + "\n")

    def write(self, path) -> None:
        """Parquet for a ``.parquet`` suffix, CSV for ``.csv`` / ``.txt`` (atomic)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".parquet":
            self.to_parquet(path)
        elif suffix in (".csv", ".txt"):
            self.to_csv(path)
        else:
            raise InputError(f"{path}: unknown output format {suffix or '(none)'} "
                             "(use .csv or .parquet)")


class atomic_path:
    """``with atomic_path(path) as tmp:`` write ``tmp`` (same folder, hidden temporary name);
    on success it is renamed over ``path`` (atomic on POSIX), on any error or Ctrl-C it is
    removed and ``path`` is left as it was."""

    def __init__(self, path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


@dataclass(frozen=True, eq=False)
class Analysis:
    """What :func:`analyze` returns.

    ``bars``: the :class:`BarTable`; ``fit``: the :class:`Fit` over the valid bars;
    ``summary``: the dict ``ofi-fast analyze --json`` prints, minus timing (``input``,
    ``symbol``, the numbers, ``quality``); ``quality``: the
    :class:`~ofi_fast.quality.DataQuality`; ``source``: the input's name; ``symbol``;
    ``note``: how the input was read. :meth:`plot` writes the figure.
    """

    bars: BarTable
    fit: Fit
    summary: dict[str, Any]
    quality: DataQuality
    source: str
    symbol: str | None = None
    note: str = ""

    def plot(self, path) -> None:
        """Write the two-panel figure (needs matplotlib): OFI vs dmid per bar with the fitted
        line; cumulative OFI and the mid over time. The title names the instrument and the
        dates. Atomic like every output."""
        plot(self.bars, self.summary, path, title=_title(self))


def _title(a: Analysis) -> str:
    st = a.bars["start_ns"]
    if not st.shape[0]:
        return a.symbol or a.source
    t0, t1 = _iso(int(st[0]))[:19].replace("T", " "), _iso(int(st[-1]) + a.bars.every_ns)
    return f"{a.symbol or Path(a.source).name}: {t0} to {t1[:19].replace('T', ' ')} UTC"


def plot(table, s, path, title=""):
    """Two panels: OFI vs dmid per bar with the fitted line; OFI and mid over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    x, y = table["ofi"], table["dmid"]
    ok = np.isfinite(x) & np.isfinite(y) & table["valid"]
    ax1.scatter(x[ok], y[ok], s=6, alpha=0.4, color="tab:blue", label="bars")
    if np.isfinite(s["beta"]) and ok.any():
        xs = np.linspace(x[ok].min(), x[ok].max(), 2)
        ax1.plot(xs, s["alpha"] + s["beta"] * xs, color="tab:red",
                 label=f"fit: beta={s['beta']:.3g}, R²={s['r2']:.3f}")
    ax1.set_xlabel(f"OFI per {s['bar_seconds']:g} s bar (size units)")
    ax1.set_ylabel("mid change per bar")
    ax1.set_title("Order flow imbalance vs mid change")
    ax1.legend(loc="upper left")
    st = table["start_ns"]
    t_h = (st - st[0]) / 3600e9 if x.size else x
    ax2.plot(t_h, np.cumsum(x), color="tab:blue", lw=0.8, label="cumulative OFI")
    ax2.set_xlabel("hours from start")
    ax2.set_ylabel("cumulative OFI (size units)", color="tab:blue")
    ax3 = ax2.twinx()
    ax3.plot(t_h, table["mid_close"], color="tab:orange", lw=0.8, label="mid")
    ax3.set_ylabel("mid price", color="tab:orange")
    ax2.set_title("OFI and mid over time")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".").lower() or "png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------

def _every_ns(seconds: float, what: str = "every") -> int:
    v = float(seconds)
    if not (v > 0 and math.isfinite(v)):
        raise InputError(f"{what} must be a positive number of seconds, not {seconds!r}")
    n = int(round(v * NS_PER_S))
    if n <= 0:
        raise InputError(f"{what}={seconds!r} s is below one nanosecond")
    return n


def _source(inputs, format, kw) -> Source:
    if isinstance(inputs, Source):
        return inputs
    return open_source(inputs, format, **kw)


def analyze(inputs=None, *, format: str = "auto", every: float = 10.0, min_train: int = 50,
            vpin_bucket: float | None = None, vpin_buckets: int = 50, classify: str | None = "tick",
            symbol: str | None = None, clock: str = "auto", tick_size: float | None = None,
            chunk_rows: int = 1_000_000, on_gap: str = "resync", on_error: str = "raise",
            columns=None, ts_unit: str = "auto", events: int = 1_000_000, seed: int = 0,
            levels: int = 5, max_bars: int = MAX_BARS, progress=None, timing=None) -> Analysis:
    """The ``ofi-fast analyze`` job on ``inputs`` (None: the simulator; a
    :class:`~ofi_fast.feeds.Source`, or anything :func:`ofi_fast.feeds.open` takes).

    ``every``: bar length in seconds; ``min_train``: bars before the first out-of-sample
    prediction; ``vpin_bucket`` / ``vpin_buckets``: VPIN bucket volume (default total volume /
    (4 * vpin_buckets)) and buckets per value; ``classify``: sign trades without a side by the
    tick rule ("tick") or leave them unsigned (None). The input options (``symbol``, ``clock``,
    ``tick_size``, ``chunk_rows``, ``on_gap``, ``on_error``, ``columns``, ``ts_unit``, and
    ``events`` / ``seed`` / ``levels`` for the simulator) go to :func:`ofi_fast.feeds.open`.
    ``on_gap="raise"``: a :class:`~ofi_fast.errors.SequenceGapError` at the first gap.
    ``progress``: a wrapper of the chunk iterator (e.g. tqdm); ``timing``: a dict that gets
    ``input_seconds`` (time spent reading).
    """
    every_ns = _every_ns(every)
    if isinstance(min_train, bool) or not isinstance(min_train, (int, np.integer)) \
            or min_train < 1:
        raise InputError(f"min_train must be a positive integer, not {min_train!r}")
    source = _source(inputs, format, dict(
        symbol=symbol, clock=clock, tick_size=tick_size, chunk_rows=chunk_rows, on_gap=on_gap,
        on_error=on_error, columns=columns, ts_unit=ts_unit, events=events, seed=seed,
        levels=levels))
    tick = source.tick_size or (tick_size if tick_size else None)
    bb = BarBuilder(every_ns, kind=source.kind, tick_size=tick, classify=classify,
                    max_bars=max_bars)
    t_input = 0.0
    it = source.chunks()
    if progress is not None:
        it = progress(it)
    it = iter(it)
    while True:
        t1 = time.perf_counter()
        c = next(it, None)
        t_input += time.perf_counter() - t1
        if c is None:
            break
        if bb.tick_size is None and len(c) and c.kind == "quotes":
            bb.tick_size = infer_tick_size(c.bid_px[np.isfinite(c.bid_px)][:100_000])
        bb.add(c)
    if timing is not None:
        timing["input_seconds"] = t_input
    if bb.n_events == 0:
        raise InputError(f"{source.name}: the input holds no events"
                         + (f" for {source.symbol}" if source.symbol else ""))
    q = source.quality
    table = bb.table(q.gaps)
    s, fit = summarize(table, every_ns, bb.n_events, min_train, bb=bb,
                       vpin_bucket=vpin_bucket, vpin_buckets=vpin_buckets)
    table["valid"] = table.pop("valid")           # last column, after vpin
    q = dataclasses.replace(q, rows_applied=bb.n_rows, invalid_bars=s["invalid_bars"],
                            **_book_counts(bb))
    summary = {"input": source.name, "symbol": source.symbol, **s, "quality": q.as_dict()}
    return Analysis(bars=BarTable(table, every_ns), fit=fit, summary=summary, quality=q,
                    source=source.name, symbol=source.symbol, note=source.note)


def _book_counts(bb) -> dict[str, int]:
    """Crossed / locked states at message ends, from the counters the book has."""
    book = getattr(bb.ofi, "book", None)
    if book is None:
        return {}
    out = {}
    for name, attr in (("crossed", "n_crossed"), ("locked", "n_locked")):
        v = getattr(book, attr, None)
        if v is not None:
            out[name] = int(v)
    return out


# --------------------------------------------------------------------------------------------
# stream
# --------------------------------------------------------------------------------------------

class StreamBar(NamedTuple):
    """One bar of :func:`stream`, yielded when the first event of a later bar arrives (or at
    the end of the input).

    ``start_ns``: bar start (ns); ``events``: quote updates (or, for L2 deltas, exchange
    messages) in the bar; ``trades``; ``ofi``: best-level OFI summed over the bar;
    ``ofi_window`` / ``tfi_window``: the rolling OFI (:class:`ofi_fast.OFI` / ``BookOFI``
    ``value``) and trade flow imbalance (:class:`ofi_fast.TradeFlow` ``imbalance``, NaN with no
    trade in the window) over the last ``window`` seconds at the bar's last event; ``mid``: the
    mid at the bar's last complete message; ``dmid``: change from the previous bar's mid (on the
    half-tick grid; NaN for the first); ``valid``: False while the book is invalid after a gap.
    """

    start_ns: int
    events: int
    trades: int
    ofi: float
    ofi_window: float
    tfi_window: float
    mid: float
    dmid: float
    valid: bool


class Latency:
    """Per-call times (ns, perf_counter_ns around each call, timer included) that
    :func:`stream` records when given one: ``events`` (``OFI.update`` or ``BookOFI.update_many``
    per message) and ``trades`` (``TradeFlow.update``), as lists of int64 arrays per chunk."""

    def __init__(self) -> None:
        self.events: list[np.ndarray] = []
        self.trades: list[np.ndarray] = []
        self.rows = 0
        self.units = 0
        self.n_trades = 0
        self.first_chunk: Chunk | None = None


def _snapshot_times(c):
    """Per row of a deltas chunk, the time :func:`stream` replays its unit at (only the
    snapshot rows' values are used): units stay in file order, so a snapshot stamped after
    the diffs buffered for it (Binance) takes their time, and the times are made
    non-decreasing."""
    u_ts, u_a, u_b, u_snap, _ = _delta_units(c)
    rev = np.minimum.accumulate(u_ts[::-1])[::-1]
    u_ts = np.where(u_snap, rev, u_ts)
    np.maximum.accumulate(u_ts, out=u_ts)
    return np.repeat(u_ts, u_b - u_a)


def _delta_units(c):
    """Replay units of a deltas chunk: (end ts, start row, end row, is_snapshot). A unit is one
    exchange message (rows up to a FLAG_BATCH_END), a snapshot, or the rows left at the end of
    the chunk (a message continued in the next chunk: BookOFI keeps the batch pending)."""
    from ofi_fast.feeds import FLAG_BATCH_END, FLAG_SNAPSHOT
    snap = (c.flags & FLAG_SNAPSHOT) != 0
    be = (c.flags & FLAG_BATCH_END) != 0
    brk = be.copy()
    brk[:-1] |= snap[1:] != snap[:-1]
    brk[-1] = True
    ends = np.flatnonzero(brk)
    starts = np.r_[0, ends[:-1] + 1]
    return c.ts[ends], starts, ends + 1, snap[starts], be


def stream(inputs=None, *, every: float = 10.0, window: float = 1.0, format: str = "auto",
           classify: str | None = "tick", symbol: str | None = None, clock: str = "auto",
           tick_size: float | None = None, chunk_rows: int = 1_000_000, on_gap: str = "resync",
           on_error: str = "raise", columns=None, ts_unit: str = "auto",
           events: int = 100_000, seed: int = 0, levels: int = 5,
           latency: Latency | None = None) -> Iterator[StreamBar]:
    """Replay ``inputs`` (as :func:`analyze` takes them) event by event in time order through
    the streaming objects (:class:`ofi_fast.OFI` per quote update, or
    :class:`ofi_fast.BookOFI` per exchange message of L2 deltas, and
    :class:`ofi_fast.TradeFlow` per trade, both over a rolling ``window`` in seconds) and yield
    a :class:`StreamBar` for each ``every``-second bar that holds an event or a trade, as it
    closes. Bars with nothing in them are not yielded (their starts are the missing multiples
    of ``every``; nothing changes in them). ``latency``: a :class:`Latency` to fill.
    """
    every_ns = _every_ns(every)
    window_ns = _every_ns(window, "window")
    source = _source(inputs, format, dict(
        symbol=symbol, clock=clock, tick_size=tick_size, chunk_rows=chunk_rows, on_gap=on_gap,
        on_error=on_error, columns=columns, ts_unit=ts_unit, events=events, seed=seed,
        levels=levels))
    return _stream(source, every_ns, window_ns, classify, latency)


def _stream(source, every, window, classify, latency):
    import ofi_fast
    from ofi_fast.feeds import FLAG_CLEAR
    flow = ofi_fast.TradeFlow(window_time=window, grow=True, classify=classify)
    deltas = source.kind == "deltas"
    ofi = None if deltas else ofi_fast.OFI(window_time=window, grow=True)
    book = None
    tick = source.tick_size
    clock = time.perf_counter_ns
    st = {"k": None, "ofi": 0.0, "n": 0, "nt": 0, "prev": math.nan, "last": math.nan}
    snap_rows = None
    gaps_seen = 0
    pending: list[StreamBar] = []

    def close(k):
        dm = st["last"] - st["prev"] if not math.isnan(st["prev"]) else math.nan
        if tick and not math.isnan(dm):
            dm = float(_on_grid(np.array([dm]), tick)[0])
        ow = ofi.value if ofi is not None else 0.0
        tfi = flow.imbalance if not flow.empty else math.nan
        start = k * every
        bar_valid = True
        for g in source.quality.gaps if gaps_seen else ():
            end = g.resync_ts if g.resync_ts is not None else np.iinfo(np.int64).max
            if start + every > g.ts and start <= end:
                bar_valid = False
        pending.append(StreamBar(int(start), st["n"], st["nt"], st["ofi"], float(ow),
                                 float(tfi), st["last"], dm, bar_valid))
        st["prev"] = st["last"]

    def enter(k):
        if k == st["k"]:
            return
        if st["k"] is not None:
            if k < st["k"]:
                from ofi_fast.errors import TimeOrderError
                raise TimeOrderError(f"{source.name}: time goes backwards (bar {k * every} ns "
                                     f"after bar {st['k'] * every} ns)", field="ts")
            close(st["k"])
            st["ofi"], st["n"], st["nt"] = 0.0, 0, 0
        st["k"] = k

    def set_mid(m):
        if m == m:
            if math.isnan(st["prev"]) and math.isnan(st["last"]):
                st["prev"] = m
            st["last"] = m

    for c in source.chunks():
        gaps_seen = len(source.quality.gaps) if source.format in ("binance", "kraken") else 0
        if deltas and len(c):
            if ofi is None:
                tick = tick or infer_tick_size(c.price)
                ofi = ofi_fast.BookOFI(tick, levels=1, window_time=window, grow=True,
                                       crossed=CROSSED_POLICY)
                book = ofi.book
            u_ts, u_a, u_b, u_snap, be = _delta_units(c)
        elif len(c):
            u_ts = c.ts
            if tick is None:
                tick = infer_tick_size(c.bid_px[np.isfinite(c.bid_px)][:100_000])
        else:
            u_ts = np.zeros(0, np.int64)
        if latency is not None and latency.first_chunk is None and len(c):
            latency.first_chunk = c
        nu, nt = u_ts.shape[0], c.trade_ts.shape[0]
        if deltas and nu:
            u_ts = _snapshot_times(c)[u_b - 1]        # (see there: file order kept)
        order = np.argsort(np.concatenate([u_ts, c.trade_ts]), kind="stable").tolist()
        lat_e = np.empty(nu, np.int64)
        lat_t = np.empty(nt, np.int64)
        ie = it = 0
        if not deltas and nu:
            q = list(zip(c.ts.tolist(), c.bid_px.tolist(), c.bid_sz.tolist(),
                         c.ask_px.tolist(), c.ask_sz.tolist()))
            upd = ofi.update
        if nt:
            tr = list(zip(c.trade_ts.tolist(), c.trade_price.tolist(), c.trade_size.tolist(),
                          c.trade_side.tolist()))
            tupd = flow.update
        for j in order:
            if j < nu:                                  # an event (or a message of deltas)
                ts = int(u_ts[j])
                enter(ts // every)
                if deltas:
                    a, b = int(u_a[j]), int(u_b[j])
                    if u_snap[j]:
                        if snap_rows is None or (c.flags[a] & FLAG_CLEAR):
                            snap_rows = []
                        snap_rows.append((c.side[a:b], c.price[a:b], c.size[a:b]))
                        if be[b - 1]:
                            sd, px, sz = (np.concatenate(x) for x in zip(*snap_rows))
                            ofi.load_snapshot(px[sd > 0], sz[sd > 0], px[sd < 0], sz[sd < 0])
                            snap_rows = None
                            set_mid(book.mid)
                        lat_e[ie] = -1
                    else:
                        t = clock()
                        e = ofi.update_many(c.ts[a:b], c.side[a:b], c.price[a:b],
                                            c.size[a:b], batch_end=be[a:b])
                        lat_e[ie] = clock() - t
                        st["ofi"] += float(e[-1])
                        st["n"] += 1
                        if be[b - 1]:
                            set_mid(book.mid)
                else:
                    r = q[j]
                    t = clock()
                    e = upd(*r)
                    lat_e[ie] = clock() - t
                    st["ofi"] += e
                    st["n"] += 1
                    set_mid(0.5 * (r[1] + r[3]))
                ie += 1
            else:                                       # a trade
                r = tr[j - nu]
                enter(r[0] // every)
                t = clock()
                tupd(*r)
                lat_t[it] = clock() - t
                st["nt"] += 1
                it += 1
            if pending:
                yield from pending
                pending.clear()
        if latency is not None:
            latency.events.append(lat_e[lat_e >= 0])
            latency.trades.append(lat_t)
            latency.rows += len(c)
            latency.units += int((lat_e >= 0).sum())
            latency.n_trades += nt
    if st["k"] is None:
        raise InputError(f"{source.name}: the input holds no events")
    gaps_seen = len(source.quality.gaps)
    close(st["k"])
    yield from pending
