"""Event-time and clock-time forecasts of the mid from the state of the book, walk-forward.

:func:`forecast` (also ``ofi_fast.analysis.forecast`` and ``ofi-fast forecast FILE``) asks
where short-term prediction can work (Gould & Bonart 2016; Stoikov 2018): at each quote update
i, predict the mid change after it from what was known at i.

Targets (in ticks; :func:`targets`):

- ``"move"``: the next mid move (the change at the first later event whose mid differs);
- ``k`` (int): the change over the next k quote updates, ``mid[i + k] - mid[i]``;
- a time ``h`` (seconds, float): ``mid(t_i + h) - mid[i]``, the mid after the last event at or
  before ``t_i + h``.
Rows whose target runs past the end of the data, or whose mid is undefined, are not used.

Features at event i (:func:`feature_table`):

- ``qi1``: queue imbalance at the touch (q_b - q_a) / (q_b + q_a) (Gould & Bonart 2016);
- ``qi_depth``: the same over ``levels`` levels with weights ``decay**m``, on inputs with depth
  (LOBSTER files of L > 1 levels and the simulator through :attr:`ofi_fast.feeds.Chunk.depth`,
  L2 deltas through a Book replay; absent for one-level inputs);
- ``micro``: Stoikov's micro-price minus the mid (ticks), the :class:`ofi_fast.Microprice`
  table refitted at each walk-forward segment on the events before it (NaN in the first);
- ``ofi_e{k}``: best-level OFI (CKS 2014) summed over the last k events; ``ofi_{w}s``: over
  the events with ts in (t - w, t];
- ``tfi_{w}s``: trade flow imbalance (B - S) / (B + S) of the trades with ts in [t - w, t)
  (strictly before t: a trade stamped t may follow event i);
- ``last_move``: the sign of the last mid move up to i.
Each alone, and ``combined`` (all of them), through :class:`ofi_fast.RollingOLS` (``ols``,
``ridge`` option) and a logistic regression for the direction (``logit``: P(up) on the rows
with a non-zero move, Newton/IRLS in numpy with step halving, standardised inputs, a small
ridge, trained on at most ``logit_rows`` evenly thinned training rows).

Walk-forward (no look-ahead): the rows are cut into ``segments`` equal consecutive parts. The
micro-price table used in segment k is fitted on the events of segments < k; the models that
predict segment k >= 2 are fitted on the rows whose target had *ended* before segment k's first
row starts (``target_end[j] <= target_start[first row of k]``, in event numbers for event
horizons and ns for clock horizons); :func:`ofi_fast.analysis.check_no_lookahead` checks every
row's feature end against its target start first (:class:`~ofi_fast.analysis.LookAheadError`),
and the training cut is checked again when it is taken. Refitting once per segment rather than
per row uses slightly less data than allowed, never more.

Reported per horizon, feature set and model, on the out-of-sample rows (the same rows for every
model of a horizon): ``r2_oos`` = 1 - SSE / sum (y - ybar_train)^2 against the historical
(training) mean; ``hit_rate`` of sign(prediction) on the rows with a non-zero move and a
non-zero prediction; ``ic``, the Spearman rank correlation of prediction and move; each with a
95 % moving-block bootstrap interval (``n_boot`` resamples of ``n_blocks`` contiguous blocks;
the logit forecasts a direction, so it has a hit rate and an IC but no R^2;
the IC's interval resamples the full-sample ranks, not re-ranked per resample). Baselines:
``zero`` (forecast 0), ``last_sign`` (the last move's sign) and ``wmid`` (the size-weighted mid
minus the mid, in ticks), unfitted, and ``mean`` (the training mean of y: its hit rate is
what a constant sign earns from the drift of the period, the bar every fitted model's hit rate
must clear, since a fitted intercept alone reaches it).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ofi_fast.errors import OFIError

NS = 1_000_000_000

DEFAULT_HORIZONS: tuple = ("move", 10, 100, 0.1, 1.0, 10.0)
DEFAULT_OFI_EVENTS = (10, 100)
DEFAULT_OFI_TIMES = (1.0, 10.0)
DEFAULT_TFI_TIMES = (1.0,)


class Events:
    """Best quotes (``(n, L)`` arrays, best first) after each event and the trades, in ns."""

    def __init__(self, ts, bid_px, bid_sz, ask_px, ask_sz, tick_size, trade_ts=None,
                 trade_size=None, trade_side=None, name="arrays", quality=None):
        self.ts = np.ascontiguousarray(ts, dtype=np.int64)
        n = self.ts.shape[0]

        def lv(a, f):
            a = np.asarray(a, dtype=np.float64)
            a = a.reshape(n, -1) if a.ndim == 1 else a
            if a.ndim != 2 or a.shape[0] != n:
                raise OFIError(f"{f} must have one row per ts ({n}), got shape {a.shape}",
                               field=f)
            return a
        self.bid_px, self.bid_sz = lv(bid_px, "bid_px"), lv(bid_sz, "bid_sz")
        self.ask_px, self.ask_sz = lv(ask_px, "ask_px"), lv(ask_sz, "ask_sz")
        self.tick_size = float(tick_size)
        e = np.zeros(0)
        self.trade_ts = np.zeros(0, np.int64) if trade_ts is None else np.asarray(trade_ts,
                                                                                  np.int64)
        self.trade_size = e if trade_size is None else np.asarray(trade_size, np.float64)
        self.trade_side = np.zeros(0, np.int8) if trade_side is None else np.asarray(trade_side)
        self.name = name
        self.quality = quality

    def __len__(self):
        return int(self.ts.shape[0])

    @property
    def mid(self):
        return 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0])


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------
def load(inputs=None, *, levels: int = 5, **open_kw) -> Events:
    """Read ``inputs`` through :func:`ofi_fast.feeds.open` into :class:`Events`. Quote inputs
    give the top ``levels`` levels where the input has them (LOBSTER's order-book file, the
    simulator: :attr:`ofi_fast.feeds.Chunk.depth`), else the best level; L2 deltas are replayed
    through a :class:`ofi_fast.Book` and the top ``levels`` levels read after each complete
    exchange message (snapshots are not events)."""
    from ofi_fast import feeds
    open_kw.pop("classify", None)      # trades keep the feed's sides (unknown: 0)
    src = feeds.open(inputs, levels=levels, **open_kw)
    chunks = list(src.chunks())
    tr = [np.concatenate([getattr(c, f) for c in chunks]) if chunks else np.zeros(0)
          for f in ("trade_ts", "trade_size", "trade_side")]
    if src.kind == "deltas":
        ts, bp, bs, ap, asz, tick = _replay(chunks, levels, src.tick_size)
    else:
        cs = [c for c in chunks if len(c)]
        if not cs:
            raise OFIError(f"{src.name}: no quote updates", field="inputs")
        ts = np.concatenate([c.ts for c in cs])
        if int(levels) > 1 and all(c.depth is not None for c in cs):
            bp, bs, ap, asz = (np.concatenate([c.depth[k][:, :int(levels)] for c in cs])
                               for k in range(4))
        else:
            bp, bs, ap, asz = (np.concatenate([getattr(c, f) for c in cs])
                               for f in ("bid_px", "bid_sz", "ask_px", "ask_sz"))
        tick = open_kw.get("tick_size") or src.tick_size or market_tick(bp)
    return Events(ts, bp, bs, ap, asz, tick, tr[0].astype(np.int64), tr[1],
                  tr[2].astype(np.int8), name=src.name, quality=src.quality)


def market_tick(price):
    """The market's tick guessed from prices: ``10**-d`` with d the most decimals a price of
    the sample needs (LOBSTER cents: 0.01; Binance BTCUSDT futures 0.1, spot 0.01). Pass
    ``tick_size`` when the grid is coarser than the decimals (e.g. a 0.05 tick)."""
    p = np.unique(np.asarray(price, np.float64))
    p = p[np.isfinite(p) & (p > 0)][:100_000]
    for d in range(0, 11):
        x = p * 10.0 ** d
        if np.all(np.abs(x - np.rint(x)) <= 1e-6 * np.maximum(1.0, x * 1e-9)):
            return 10.0 ** -d
    return 1e-10


def _replay(chunks, levels, tick):
    import ofi_fast
    from ofi_fast.feeds import FLAG_BATCH_END, FLAG_CLEAR, FLAG_SNAPSHOT
    book = None
    out_ts, tops = [], []
    snap_rows = None
    for c in chunks:
        if not len(c):
            continue
        if book is None:
            tick = tick or market_tick(c.price)
            book = ofi_fast.Book(tick, crossed="keep")
        snap = (c.flags & FLAG_SNAPSHOT) != 0
        be = (c.flags & FLAG_BATCH_END) != 0
        brk = be.copy()
        brk[:-1] |= snap[1:] != snap[:-1]
        brk[-1] = True
        ends = np.flatnonzero(brk) + 1
        starts = np.r_[0, ends[:-1]]
        for a, b in zip(starts.tolist(), ends.tolist()):
            if snap[a]:
                if snap_rows is None or (c.flags[a] & FLAG_CLEAR):
                    snap_rows = []
                snap_rows.append((c.side[a:b], c.price[a:b], c.size[a:b]))
                if be[b - 1]:
                    sd, px, sz = (np.concatenate(x) for x in zip(*snap_rows))
                    book.load_snapshot(px[sd > 0], sz[sd > 0], px[sd < 0], sz[sd < 0])
                    snap_rows = None
                continue
            book.apply_many(c.side[a:b], c.price[a:b], c.size[a:b], batch_end=be[a:b])
            if be[b - 1]:
                out_ts.append(int(c.ts[b - 1]))
                tops.append(book.top(levels))
    if not tops:
        raise OFIError("no complete book message in the input", field="inputs")
    t = np.array(out_ts, dtype=np.int64)
    np.maximum.accumulate(t, out=t)
    top = np.stack(tops)                       # (n, 4, L)
    return (t, top[:, 0], top[:, 1], top[:, 2], top[:, 3], tick)


# ---------------------------------------------------------------------------------------------
# targets and features
# ---------------------------------------------------------------------------------------------
def horizon_name(h) -> str:
    if h == "move":
        return "move"
    if isinstance(h, (int, np.integer)) and not isinstance(h, bool):
        return f"{int(h)}ev"
    return f"{float(h):g}s"


def parse_horizon(s):
    """"move", "10" / "10ev" (events), "0.1s" / "1.5" with a dot (seconds)."""
    if not isinstance(s, str):
        return s
    t = s.strip().lower()
    try:
        if t == "move":
            return "move"
        if t.endswith("ev"):
            return int(t[:-2])
        if t.endswith("ms"):
            return float(t[:-2]) / 1000
        if t.endswith("s"):
            return float(t[:-1])
        return float(t) if "." in t else int(t)
    except ValueError:
        raise OFIError(f"horizon {s!r} is not 'move', a number of events (10, 10ev) or a time "
                       "(0.1s, 100ms)", field="horizons") from None


def targets(ts, mid_ticks, horizon):
    """``(y, feature_end, target_start, target_end)`` for every event row (NaN y where no
    target). Event horizons are stamped in event numbers, clock horizons in ns."""
    ts = np.asarray(ts, np.int64)
    m = np.asarray(mid_ticks, float)
    n = len(m)
    idx = np.arange(n, dtype=np.int64)
    y = np.full(n, np.nan)
    if horizon == "move":
        # next index whose mid differs from the mid at i (a changed, finite value)
        chg = np.flatnonzero(np.isfinite(m[1:]) & (m[1:] != m[:-1])) + 1
        pos = np.searchsorted(chg, idx, side="right")
        ok = pos < len(chg)
        te = np.full(n, n, dtype=np.int64)
        te[ok] = chg[pos[ok]]
        y[ok] = m[te[ok]] - m[ok]
        # a NaN mid between i and the move: the move is measured from i's mid anyway
        return y, idx, idx, te
    if isinstance(horizon, (int, np.integer)) and not isinstance(horizon, bool):
        k = int(horizon)
        if k < 1:
            raise OFIError(f"event horizon must be >= 1, got {k}", field="horizons")
        te = idx + k
        ok = te < n
        y[ok] = m[te[ok]] - m[ok]
        return y, idx, idx, te
    h = float(horizon)
    if not (h > 0 and math.isfinite(h)):
        raise OFIError(f"time horizon must be > 0 s, got {horizon!r}", field="horizons")
    hn = int(round(h * NS))
    end = ts + hn
    j = np.searchsorted(ts, end, side="right") - 1
    ok = end <= ts[-1]                      # the data must reach the end of the horizon
    y[ok] = m[j[ok]] - m[ok]
    return y, ts, ts, end


def _trailing_sum_events(x, k):
    cs = np.r_[0.0, np.cumsum(x)]
    i = np.arange(1, len(x) + 1)
    return cs[i] - cs[np.maximum(i - k, 0)]


def _trailing_sum_time(ts, x, w_ns):
    cs = np.r_[0.0, np.cumsum(x)]
    lo = np.searchsorted(ts, ts - w_ns, side="right")
    return cs[np.arange(1, len(x) + 1)] - cs[lo]


def feature_table(ev: Events, *, levels=5, decay=0.5, ofi_events=DEFAULT_OFI_EVENTS,
                  ofi_times=DEFAULT_OFI_TIMES, tfi_times=DEFAULT_TFI_TIMES) -> dict:
    """The features of the module docstring except ``micro`` (walk-forward), and the
    baselines' forecasts ``wmid`` and ``last_sign``, one row per event."""
    from ofi_fast import l1_ofi
    qb, qa = ev.bid_sz[:, 0], ev.ask_sz[:, 0]
    tot = qb + qa
    f = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        f["qi1"] = np.where(tot > 0, (qb - qa) / tot, 0.0)
        L = min(int(levels), ev.bid_sz.shape[1])
        if L > 1:
            w = float(decay) ** np.arange(L)
            b, a = ev.bid_sz[:, :L] @ w, ev.ask_sz[:, :L] @ w
            f["qi_depth"] = np.where(b + a > 0, (b - a) / (b + a), 0.0)
    e = l1_ofi(ev.bid_px[:, 0], qb, ev.ask_px[:, 0], qa)
    for k in ofi_events:
        f[f"ofi_e{int(k)}"] = _trailing_sum_events(e, int(k))
    for w in ofi_times:
        f[f"ofi_{w:g}s"] = _trailing_sum_time(ev.ts, e, int(round(w * NS)))
    if len(ev.trade_ts):
        order = np.argsort(ev.trade_ts, kind="stable")
        tt = ev.trade_ts[order]
        sv = ev.trade_size[order] * np.sign(ev.trade_side[order])
        av = np.abs(ev.trade_size[order]) * (ev.trade_side[order] != 0)
        cs_s, cs_a = np.r_[0.0, np.cumsum(sv)], np.r_[0.0, np.cumsum(av)]
        hi = np.searchsorted(tt, ev.ts, side="left")          # trades strictly before t
        for w in tfi_times:
            lo = np.searchsorted(tt, ev.ts - int(round(w * NS)), side="left")
            num, den = cs_s[hi] - cs_s[lo], cs_a[hi] - cs_a[lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                f[f"tfi_{w:g}s"] = np.where(den > 0, num / den, 0.0)
    mid = ev.mid / ev.tick_size
    d = np.diff(mid, prepend=np.nan)
    last = np.where(np.isfinite(d) & (d != 0), np.sign(d), np.nan)
    last = _ffill(last)
    f["last_move"] = np.nan_to_num(last, nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        wm = (ev.ask_px[:, 0] * qb + ev.bid_px[:, 0] * qa) / tot
    base = {"wmid": (wm - ev.mid) / ev.tick_size, "last_sign": f["last_move"].copy()}
    return f, base


def _ffill(a):
    ok = ~np.isnan(a)
    i = np.where(ok, np.arange(len(a)), 0)
    np.maximum.accumulate(i, out=i)
    out = a[i]
    out[(~ok) & (i == 0) & ~ok[0]] = np.nan
    return out


def micro_feature(ev: Events, seg_starts, *, n_imbalance=10, max_spread=None, n_iter=6):
    """Micro-price minus mid (ticks) per event, the table of segment k fitted on the events
    before it (NaN in segment 0; 0 where the state is outside the fitted table). Default
    ``max_spread``: the spread (ticks) of 99 % of segment 0's events, in [2, 10]; mid moves up
    to ``max_spread`` ticks are kept. Returns the column, the fits and max_spread."""
    from ofi_fast import Microprice
    n = len(ev)
    bp, bs, ap, asz = ev.bid_px[:, 0], ev.bid_sz[:, 0], ev.ask_px[:, 0], ev.ask_sz[:, 0]
    if max_spread is None:
        s0 = np.rint((ap[:seg_starts[1]] - bp[:seg_starts[1]]) / ev.tick_size)
        s0 = s0[np.isfinite(s0) & (s0 >= 1)]
        # the spreads of 99 % of the first segment's events, at least 2 (a one-tick market's
        # mid moves mostly through a one-to-two-tick spread), at most 10
        max_spread = int(np.clip(np.quantile(s0, 0.99), 2, 10)) if s0.size else 2
    out = np.full(n, np.nan)
    fits = []
    bounds = list(seg_starts) + [n]
    for k in range(1, len(seg_starts)):
        a, b = bounds[k], bounds[k + 1]
        try:
            mp = Microprice.fit(ev.ts[:a], bp[:a], bs[:a], ap[:a], asz[:a], ev.tick_size,
                                n_imbalance=n_imbalance, max_spread=max_spread,
                                n_iter=n_iter, max_move=float(max_spread))
        except OFIError:
            out[a:b] = 0.0
            fits.append(None)
            continue
        v = mp.update_many(ev.ts[a:b], bp[a:b], bs[a:b], ap[a:b], asz[a:b])
        out[a:b] = np.nan_to_num((v - 0.5 * (bp[a:b] + ap[a:b])) / ev.tick_size, nan=0.0)
        fits.append(mp)
    return out, fits, max_spread


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def _logit_fit(X, yb, iters=25, lam=1e-3):
    """Logistic regression by Newton's method with step halving (the penalised likelihood never
    decreases, so near-separable data cannot make it diverge) and an L2 penalty lam * n on the
    slopes (standardised inputs); X holds a leading column of ones. Returns the coefficients."""
    n, p = X.shape
    w = np.zeros(p)
    pen = np.full(p, lam * n)
    pen[0] = 0.0

    def objective(w):
        z = X @ w
        return float(np.sum(yb * z - np.logaddexp(0.0, z)) - 0.5 * np.sum(pen * w * w))
    f = objective(w)
    for _ in range(iters):
        z = X @ w
        mu = 0.5 * (1.0 + np.tanh(0.5 * z))             # logistic, without overflow
        g = X.T @ (yb - mu) - pen * w
        H = (X * (mu * (1 - mu))[:, None]).T @ X + np.diag(pen) + 1e-9 * np.eye(p)
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while t > 1e-4:
            f_new = objective(w + t * step)
            if f_new >= f:
                break
            t *= 0.5
        else:
            break
        w = w + t * step
        done = f_new - f < 1e-10 * max(1.0, abs(f))
        f = f_new
        if done:
            break
    return w


def walk(X, y, fe, ts_, te, seg_starts, *, model="ols", ridge=0.0, min_train=30,
         logit_rows=5_000):
    """Segment-wise walk-forward forecasts (module docstring): returns ``yhat`` (for ``logit``
    the probability of an up move minus 1/2), ``ybar`` (training mean of y) and the largest
    training ``target_end`` used for each segment (``train_end``)."""
    from ofi_fast import RollingOLS
    from ofi_fast.analysis import LookAheadError, check_no_lookahead
    check_no_lookahead(fe, ts_)
    if np.any(np.diff(te) < 0) or np.any(np.diff(ts_) < 0):
        raise OFIError("rows must be in time order (target_start and target_end "
                       "non-decreasing)", field="target_end")
    n, p = X.shape
    yhat = np.full(n, np.nan)
    ybar = np.full(n, np.nan)
    bounds = list(seg_starts) + [n]
    # several regressors: a lambda of at least 1e-9 on the centred cross products, so a column
    # that is constant in the training rows (e.g. the micro-price while no fitted state is
    # visited) gets a zero slope instead of making the whole fit singular
    ols = RollingOLS(n_features=p, ridge=max(ridge, 1e-9) if p > 1 else ridge) \
        if model == "ols" else None
    done = 0
    train_end = []
    for k in range(2, len(seg_starts)):
        a, b = bounds[k], bounds[k + 1]
        if a >= b:
            continue
        m = int(np.searchsorted(te, ts_[a], side="right"))   # rows whose target had ended
        if m > 0 and te[m - 1] > ts_[a]:
            raise LookAheadError(f"training row {m - 1} ends at {te[m - 1]}, after the "
                                 f"forecast at row {a} starts ({ts_[a]})", field="target_end",
                                 index=m - 1)
        train_end.append(int(te[m - 1]) if m else None)
        if m < min_train:
            continue
        if model == "ols":
            if m > done:
                ols.update_many(X[done:m], y[done:m])
                done = m
            beta = np.atleast_1d(np.asarray(ols.beta, dtype=float))
            if np.all(np.isfinite(beta)):
                yhat[a:b] = ols.alpha + X[a:b] @ beta
            else:                       # a constant feature (singular fit): the mean
                yhat[a:b] = ols.mean_y
            ybar[a:b] = ols.mean_y
        else:
            # the training rows with a move, thinned evenly to at most logit_rows (consecutive
            # rows' targets overlap, so the thinned set carries nearly the same information)
            tr = np.flatnonzero(y[:m] != 0)
            if tr.size < min_train:
                continue
            if tr.size > logit_rows:
                tr = tr[np.linspace(0, tr.size - 1, logit_rows).astype(np.int64)]
            Xt = X[tr]
            mu, sd = Xt.mean(axis=0), Xt.std(axis=0)
            sd[sd == 0] = 1.0
            A = np.column_stack([np.ones(len(Xt)), (Xt - mu) / sd])
            w = _logit_fit(A, (y[tr] > 0).astype(float))
            z = w[0] + ((X[a:b] - mu) / sd) @ w[1:]
            yhat[a:b] = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))) - 0.5
            ybar[a:b] = float(np.mean(y[:m]))
    return yhat, ybar, train_end


# ---------------------------------------------------------------------------------------------
# metrics with block-bootstrap intervals
# ---------------------------------------------------------------------------------------------
def _ranks(a):
    order = np.argsort(a)
    s = a[order]
    r = np.empty(len(a))
    # average ranks of ties: first/last position of each run of equal values
    starts = np.r_[True, s[1:] != s[:-1]]
    grp = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(s)] - 1
    r[order] = 0.5 * (first + last)[grp] + 1
    return r


def _block_sums(vs, nb):
    """Sums of each vector of ``vs`` over nb contiguous blocks: (len(vs), nb)."""
    n = len(vs[0])
    edges = np.linspace(0, n, nb + 1).astype(np.int64)[:-1]
    return np.stack([np.add.reduceat(np.asarray(v, float), edges) for v in vs])


def metrics(y, yhat, ybar, *, ry=None, n_boot=200, n_blocks=50, rng=None, r2=True, ic=True):
    """r2_oos, hit_rate and ic with their bootstrap 95 % intervals (module docstring); ``ic``
    False skips the ranking (a constant forecast has no IC)."""
    y, yhat, ybar = (np.asarray(a, float) for a in (y, yhat, ybar))
    n = len(y)
    out = {"n": n}
    if n < 2:
        return out | {k: math.nan for k in ("r2_oos", "r2_lo", "r2_hi", "hit_rate", "hit_lo",
                                            "hit_hi", "ic", "ic_lo", "ic_hi")} | {"n_hit": 0}
    nz = (y != 0) & (yhat != 0)
    hit = (np.sign(y) == np.sign(yhat)) & nz
    ry = _ranks(y) if ry is None else ry
    rh = _ranks(yhat) if ic else np.zeros(n)
    nb = int(min(n_blocks, n))
    S = _block_sums([(y - yhat) ** 2, (y - ybar) ** 2, hit, nz, ry, rh, ry * ry, rh * rh,
                     ry * rh], nb)
    rng = np.random.default_rng(0) if rng is None else rng
    pick = rng.integers(0, nb, size=(n_boot, nb))
    cnt = np.diff(np.linspace(0, n, nb + 1).astype(np.int64)).astype(float)
    full = S.sum(axis=1)
    boot = S[:, pick].sum(axis=2)              # (9, n_boot)
    nn = np.r_[float(n), cnt[pick].sum(axis=1)]
    allv = np.concatenate([full[:, None], boot], axis=1)   # column 0: the sample itself
    with np.errstate(invalid="ignore", divide="ignore"):
        r2v = 1.0 - allv[0] / allv[1]
        hv = allv[2] / allv[3]
        cov = allv[8] - allv[4] * allv[5] / nn
        va = allv[6] - allv[4] ** 2 / nn
        vb = allv[7] - allv[5] ** 2 / nn
        icv = cov / np.sqrt(va * vb)

    def ci(x):
        b = x[1:][np.isfinite(x[1:])]
        if not b.size:
            return math.nan, math.nan
        lo, hi = np.quantile(b, [0.025, 0.975])
        return float(lo), float(hi)
    out["r2_oos"] = float(r2v[0]) if r2 else math.nan
    out["r2_lo"], out["r2_hi"] = ci(r2v) if r2 else (math.nan, math.nan)
    out["hit_rate"] = float(hv[0]) if full[3] > 0 else math.nan
    out["hit_lo"], out["hit_hi"] = ci(hv)
    out["n_hit"] = int(full[3])
    out["ic"] = float(icv[0]) if ic else math.nan
    out["ic_lo"], out["ic_hi"] = ci(icv) if ic else (math.nan, math.nan)
    return out


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
COLUMNS = ("horizon", "feature", "model", "n", "r2_oos", "r2_lo", "r2_hi", "hit_rate",
           "hit_lo", "hit_hi", "n_hit", "ic", "ic_lo", "ic_hi")


class ForecastResult:
    """What :func:`forecast` returns: ``rows`` (list of dicts, :data:`COLUMNS`), ``info``
    (input, events, segments, micro-price fit, timing), ``table()`` (dict of columns),
    ``to_pandas()``, ``write(path)`` (.parquet / .csv, atomic), ``plot(path)``,
    ``summary`` (JSON-ready dict)."""

    def __init__(self, rows, info):
        self.rows = rows
        self.info = info

    def table(self) -> dict[str, np.ndarray]:
        return {c: np.array([r[c] for r in self.rows]) for c in COLUMNS}

    def to_pandas(self):
        import pandas as pd
        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    @property
    def summary(self) -> dict[str, Any]:
        from ofi_fast.pipeline import json_ready
        return json_ready({"info": self.info, "rows": self.rows})

    def best(self, horizon, by="hit_rate", model=None):
        rs = [r for r in self.rows if r["horizon"] == horizon and (model is None or
                                                                    r["model"] == model)]
        rs = [r for r in rs if r[by] == r[by]]
        return max(rs, key=lambda r: r[by]) if rs else None

    def get(self, horizon, feature, model):
        for r in self.rows:
            if (r["horizon"], r["feature"], r["model"]) == (horizon, feature, model):
                return r
        raise KeyError((horizon, feature, model))

    def write(self, path) -> None:
        from ofi_fast.pipeline import atomic_path
        from ofi_fast.feeds.sources import InputError
        suffix = Path(path).suffix.lower()
        t = self.table()
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            tab = pa.table({k: v.tolist() if v.dtype.kind == "U" else v for k, v in t.items()})
            with atomic_path(path) as tmp:
                pq.write_table(tab, str(tmp))
        elif suffix in (".csv", ".txt"):
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                fh.write(",".join(COLUMNS) + "\n")
                for r in self.rows:
                    fh.write(",".join(v if isinstance(v, str) else f"{v:.12g}"
                                      for v in (r[c] for c in COLUMNS)) + "\n")
        else:
            raise InputError(f"{path}: unknown output format {suffix or '(none)'} "
                             "(use .csv or .parquet)")

    def format(self, models=("ols", "logit", "baseline")) -> str:
        lines = []
        hdr = (f"{'horizon':>8} {'feature':<11} {'model':<8} {'n':>8} {'R2_oos %':>8} "
               f"{'[95% CI]':>17} {'hit %':>6} {'[95% CI]':>13} {'IC':>6} {'[95% CI]':>13}")
        lines.append(hdr)
        for r in self.rows:
            if r["model"] not in models:
                continue

            def pct(v):
                return "    -" if v != v else f"{100 * v:5.1f}"
            r2 = ("       -" if r["r2_oos"] != r["r2_oos"] else f"{100 * r['r2_oos']:8.2f}")
            r2ci = ("" if r["r2_lo"] != r["r2_lo"] else
                    f"[{100 * r['r2_lo']:6.2f},{100 * r['r2_hi']:6.2f}]")
            hci = ("" if r["hit_lo"] != r["hit_lo"] else
                   f"[{100 * r['hit_lo']:4.1f},{100 * r['hit_hi']:4.1f}]")
            ic = "     -" if r["ic"] != r["ic"] else f"{r['ic']:6.3f}"
            icci = ("" if r["ic_lo"] != r["ic_lo"] else
                    f"[{r['ic_lo']:5.2f},{r['ic_hi']:5.2f}]")
            lines.append(f"{r['horizon']:>8} {r['feature']:<11} {r['model']:<8} {r['n']:>8} "
                         f"{r2} {r2ci:>17} {pct(r['hit_rate']):>6} {hci:>13} {ic} {icci:>13}")
        return "\n".join(lines)

    def plot(self, path) -> None:
        """Hit rate and OOS R^2 against horizon, one line per feature (ols) (matplotlib)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from ofi_fast.pipeline import atomic_path
        hs = list(dict.fromkeys(r["horizon"] for r in self.rows))
        feats = list(dict.fromkeys(r["feature"] for r in self.rows if r["model"] == "ols"))
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for f in feats:
            rs = [self.get(h, f, "ols") for h in hs]
            ax[0].plot(range(len(hs)), [100 * r["hit_rate"] for r in rs], marker="o", label=f)
            ax[1].plot(range(len(hs)), [100 * r["r2_oos"] for r in rs], marker="o", label=f)
        for a, t in zip(ax, ("hit rate on non-zero moves (%)", "out-of-sample R^2 (%)")):
            a.set_xticks(range(len(hs)))
            a.set_xticklabels(hs)
            a.set_xlabel("horizon")
            a.set_title(t)
            a.grid(alpha=0.3)
        ax[0].axhline(50, color="k", lw=0.8)
        ax[1].axhline(0, color="k", lw=0.8)
        ax[1].legend(fontsize=7)
        fig.suptitle(f"ofi-fast forecast: {self.info.get('input', '')}", fontsize=9)
        fig.tight_layout()
        suffix = Path(path).suffix or ".png"
        with atomic_path(path) as tmp:
            fig.savefig(str(tmp), format=suffix.lstrip("."), dpi=110)
        plt.close(fig)


def _segments(n, segments):
    k = int(segments)
    if k < 3:
        raise OFIError(f"segments must be >= 3 (one to fit the micro-price, one to start "
                       f"training, then forecasts), got {segments}", field="segments")
    return np.linspace(0, n, k + 1).astype(np.int64)[:-1]


def forecast_events(ev: Events, *, horizons=DEFAULT_HORIZONS, features=None, models=("ols",
                    "logit"), levels=5, decay=0.5, ofi_events=DEFAULT_OFI_EVENTS,
                    ofi_times=DEFAULT_OFI_TIMES, tfi_times=DEFAULT_TFI_TIMES, segments=12,
                    ridge=0.0, n_boot=200, n_blocks=50, min_train=100, seed=0,
                    extra_features=None, micro=True) -> ForecastResult:
    """:func:`forecast` on :class:`Events` already in memory (see the module docstring).
    ``extra_features``: more columns (name -> per-event array known at each event), e.g. the
    lead market's signals in :func:`lead_lag`."""
    t0 = time.perf_counter()
    n = len(ev)
    if n < 10 * int(segments):
        raise OFIError(f"{ev.name}: {n} events are too few for {segments} walk-forward "
                       "segments", field="inputs")
    seg = _segments(n, segments)
    feats, base = feature_table(ev, levels=levels, decay=decay, ofi_events=ofi_events,
                                ofi_times=ofi_times, tfi_times=tfi_times)
    info: dict[str, Any] = {"input": ev.name, "events": n, "trades": int(len(ev.trade_ts)),
                            "tick_size": ev.tick_size, "segments": int(segments),
                            "oos_from_event": int(seg[2])}
    if micro:
        feats["micro"], fits, ms = micro_feature(ev, seg)
        good = [f for f in fits if f is not None]
        info["micro"] = {"max_spread": ms, "n_imbalance": 10, "n_iter": 6,
                         "fits": len(good),
                         "table_last_ticks": (good[-1].table / ev.tick_size).round(4).tolist()
                         if good else None}
    if extra_features:
        for k, v in extra_features.items():
            feats[k] = np.asarray(v, float)
    if features is not None:
        missing = [f for f in features if f not in feats]
        if missing:
            raise OFIError(f"unknown feature(s) {missing} (have {sorted(feats)})",
                           field="features")
        feats = {k: feats[k] for k in features}
    names = list(feats)
    F = np.column_stack([feats[k] for k in names])
    mid_t = ev.mid / ev.tick_size
    rng = np.random.default_rng(seed)
    rows = []
    skipped: dict[str, str] = {}
    info["skipped"] = skipped
    for h in horizons:
        hn = horizon_name(h)
        y, fe, ts_, te = targets(ev.ts, mid_t, h)
        ok = np.isfinite(y)
        ok[seg[1]:] &= np.all(np.isfinite(F[seg[1]:]), axis=1)
        ok[:seg[1]] = False                                 # segment 0: micro-price fit only
        idx = np.flatnonzero(ok)
        if idx.size < 3 * min_train:
            skipped[hn] = f"{idx.size} rows with a target (need {3 * min_train})"
            continue
        yy, fe_, ts2, te2 = y[idx], fe[idx], ts_[idx], te[idx]
        sg = np.searchsorted(idx, seg)                      # segment starts in row numbers
        oos = np.zeros(len(idx), bool)
        oos[sg[2]:] = True
        # models: the same rows for all (where every model made a forecast)
        preds = {}
        sets = [(k, [names.index(k)]) for k in names] + [("combined", list(range(len(names))))]
        Fi = F[idx]
        for fname, cols in sets:
            X = Fi if len(cols) == Fi.shape[1] else Fi[:, cols]
            for mdl in models:
                yh, yb, _ = walk(X, yy, fe_, ts2, te2, sg, model=mdl, ridge=ridge,
                                 min_train=min_train)
                preds[(fname, mdl)] = (yh, yb)
        have = oos.copy()
        for yh, _ in preds.values():
            have &= np.isfinite(yh)
        if have.sum() < 2:
            skipped[hn] = ("no out-of-sample row where every model has a forecast (a logit "
                           f"needs {min_train} training rows with a move)")
            continue
        ybar_ref = preds[(names[0], models[0])][1]
        for fname, b in (("zero", np.zeros(n)), ("last_sign", base["last_sign"]),
                         ("wmid", np.nan_to_num(base["wmid"], nan=0.0))):
            preds[(fname, "baseline")] = (b[idx], ybar_ref)
        # the historical mean as the forecast: the hit rate a constant sign gets from drift
        preds[("mean", "baseline")] = (ybar_ref, ybar_ref)
        ys = yy[have]
        ry = _ranks(ys)
        for (fname, mdl), (yh, yb) in preds.items():
            r = metrics(ys, yh[have], yb[have], ry=ry, n_boot=n_boot, n_blocks=n_blocks,
                        rng=rng, r2=(mdl != "logit" and fname != "last_sign"),
                        ic=fname not in ("zero", "mean"))
            rows.append({"horizon": hn, "feature": fname, "model": mdl} | r)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return ForecastResult(rows, info)


def forecast(inputs=None, *, horizons=DEFAULT_HORIZONS, features=None, models=("ols", "logit"),
             levels=5, decay=0.5, segments=12, ridge=0.0, n_boot=200, n_blocks=50,
             min_train=100, seed=0, **open_kw) -> ForecastResult:
    """Walk-forward forecasts of the mid from the book (module docstring) on ``inputs``
    (anything :func:`ofi_fast.feeds.open` reads; None: the simulator). ``open_kw`` go to
    :func:`ofi_fast.feeds.open` (``format``, ``symbol``, ``clock``, ``tick_size``, ...)."""
    t0 = time.perf_counter()
    ev = load(inputs, levels=levels, **open_kw)
    t1 = time.perf_counter()
    res = forecast_events(ev, horizons=horizons, features=features, models=models,
                          levels=levels, decay=decay, segments=segments, ridge=ridge,
                          n_boot=n_boot, n_blocks=n_blocks, min_train=min_train, seed=seed)
    res.info["read_seconds"] = round(t1 - t0, 3)
    if ev.quality is not None:
        try:
            res.info["quality"] = ev.quality.as_dict()
        except AttributeError:
            pass
    return res


# ---------------------------------------------------------------------------------------------
# cross-market lead-lag
# ---------------------------------------------------------------------------------------------
def _as_of(ts_src, values, ts_at):
    """values at the last source event with ts <= ts_at (NaN before the first)."""
    j = np.searchsorted(ts_src, ts_at, side="right") - 1
    out = np.full(len(ts_at), np.nan)
    ok = j >= 0
    out[ok] = values[j[ok]]
    return out


def cross_correlation(ts_a, mid_a, ts_b, mid_b, *, step=0.05, max_lag=1.0):
    """Correlation of the two mid-change series on a common clock grid of ``step`` s:
    corr(dA_t, dB_{t + lag}) for lags -max_lag .. +max_lag (positive lag: A moves first)."""
    st = int(round(step * NS))
    lo, hi = max(ts_a[0], ts_b[0]), min(ts_a[-1], ts_b[-1])
    grid = np.arange(lo - lo % st + st, hi, st, dtype=np.int64)
    a = np.diff(_as_of(ts_a, mid_a, grid))
    b = np.diff(_as_of(ts_b, mid_b, grid))
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
    K = int(round(max_lag / step))
    lags, cc = [], []
    for k in range(-K, K + 1):
        if k >= 0:
            x, y = a[:len(a) - k], b[k:]
        else:
            x, y = a[-k:], b[:len(b) + k]
        sx, sy = x.std(), y.std()
        lags.append(k * step)
        cc.append(float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))
                  if sx > 0 and sy > 0 else math.nan)
    return np.array(lags), np.array(cc)


def lead_lag(lead, lag, *, horizons=("move", 0.1, 1.0, 10.0), windows=(0.1, 1.0),
             models=("ols", "logit"),
             segments=12, n_boot=200, n_blocks=50, min_train=100, seed=0, step=0.05,
             max_lag=1.0, clock="exchange", **open_kw) -> ForecastResult:
    """Does market ``lead``'s order flow and mid predict market ``lag``'s mid, out of sample?

    At each event of ``lag``: ``lead_ofi_{w}s`` (the lead's best-level OFI over (t - w, t]) and
    ``lead_ret_{w}s`` (the lead's mid change over (t - w, t], in the lag's ticks), from the
    lead's events with ts <= t by the ``clock`` given (default the exchange's), beside the lag's
    own ``qi1`` and ``last_move``; walk-forward as :func:`forecast`. ``info["xcorr"]``: the
    cross-correlation of the two mid-change series (:func:`cross_correlation`)."""
    from ofi_fast import l1_ofi
    open_kw["clock"] = clock
    A = load(lead, **open_kw)
    B = load(lag, **open_kw)
    ea = l1_ofi(A.bid_px[:, 0], A.bid_sz[:, 0], A.ask_px[:, 0], A.ask_sz[:, 0])
    cs = np.r_[0.0, np.cumsum(ea)]
    ma = A.mid
    extra = {}
    for w in windows:
        wn = int(round(w * NS))
        hi = np.searchsorted(A.ts, B.ts, side="right")
        lo = np.searchsorted(A.ts, B.ts - wn, side="right")
        extra[f"lead_ofi_{w:g}s"] = cs[hi] - cs[lo]
        extra[f"lead_ret_{w:g}s"] = np.nan_to_num(
            (_as_of(A.ts, ma, B.ts) - _as_of(A.ts, ma, B.ts - wn)) / B.tick_size, nan=0.0)
    feats = ["qi1", "last_move"] + list(extra)
    res = forecast_events(B, horizons=horizons, features=feats, models=models,
                          segments=segments, n_boot=n_boot, n_blocks=n_blocks,
                          min_train=min_train, seed=seed, extra_features=extra, micro=False)
    lags, cc = cross_correlation(A.ts, ma, B.ts, B.mid, step=step, max_lag=max_lag)
    k = int(np.nanargmax(np.abs(cc))) if np.isfinite(cc).any() else 0
    res.info.update({"lead": A.name, "lag": B.name, "lead_events": len(A),
                     "overlap_s": round((min(A.ts[-1], B.ts[-1]) - max(A.ts[0], B.ts[0]))
                                        / NS, 1),
                     "xcorr": {"step_s": step, "lags_s": lags.round(6).tolist(),
                               "corr": cc.round(5).tolist(), "peak_lag_s": float(lags[k]),
                               "peak_corr": float(cc[k])}})
    return res


def to_json(res: ForecastResult) -> str:
    return json.dumps(res.summary, indent=1)
