"""Bar features, contemporaneous impact fits and look-ahead-free forecast evaluation.

Pure Python/numpy composition of the compiled kernels (``l1_ofi``, ``bars``, ``bar_mid``,
``fit_impact``, ``RollingOLS``). Tables are dicts of equal-length numpy arrays; pass
``frame=True`` (or leave ``frame="auto"`` with pandas installed) to get a pandas DataFrame.

Timing conventions (THEORY-DETAIL 8):

- clock bars ``[start, end)`` aligned to multiples of ``every`` (``closed="right"`` for CKS's
  ``(t_{k-1}, t_k]``); empty bars are kept (OFI 0, mid carried forward, dmid 0);
- ``dmid`` of bar k is the mid at the last event at or before the bar's end minus the same at the
  previous bar's end (CKS eq. 11), in price units, and in ticks as ``dmid_ticks``;
- a *predictive* pair uses the features of bar k (information up to ``end_k``) and the mid
  change over ``(end_k, end_{k+h}]``. :func:`walk_forward` refuses any row whose feature ends
  after its target starts (:class:`LookAheadError`), and trains only on rows whose target had
  ended by the time the forecast is made.

Run ``python -m ofi_fast.analysis cks PATH...`` to print the Cont-Kukanov-Stoikov table for
LOBSTER level-1 zips.
"""

from __future__ import annotations

import math
import sys
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from ofi_fast._impact import RollingOLS, bar_mid, bars, fit_impact
from ofi_fast._ofi import integrated_weights, l1_ofi
from ofi_fast.errors import OFIError

NS = 1_000_000_000


class LookAheadError(OFIError):
    """A forecast row whose feature uses information from after its target's start."""


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _frame(table: dict, frame):
    if frame is False or frame is None:
        return table
    try:
        import pandas as pd
    except ImportError:
        if frame is True:
            raise
        return table
    return pd.DataFrame(table)


def _col(table, name):
    return np.asarray(table[name])


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------
def _fill_mid(bid_px, ask_px):
    """Mid per event; events with an empty side carry the last two-sided mid forward (leading
    one-sided events take the first two-sided mid). All-one-sided input raises."""
    mid = 0.5 * (np.asarray(bid_px, dtype=np.float64) + np.asarray(ask_px, dtype=np.float64))
    ok = np.isfinite(mid)
    if ok.all():
        return mid
    if not ok.any():
        raise OFIError("no event has both a bid and an ask: the mid is undefined",
                       field="bid_px")
    idx = np.where(ok, np.arange(mid.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(ok))
    idx[:first] = first
    return mid[idx]


def features(ts: ArrayLike, bid_px: ArrayLike, bid_sz: ArrayLike, ask_px: ArrayLike,
             ask_sz: ArrayLike, *, every: int, closed: str = "left",
             tick_size: float | None = None, lot_size: float = 1.0, trades: Any = None,
             extra_sum: Any = None, extra_last: Any = None, frame: Any = "auto") -> Any:
    """Turn quotes (best level, or (n, L) top-L books) and optionally trades into a bar table.

    ``ts`` int64 (any unit; ``every`` in the same unit), quotes as for :func:`ofi_fast.l1_ofi`
    (empty side = size 0, NaN price), or (n, L) arrays of the top L levels by rank (best
    first) as for :func:`ofi_fast.mlofi`. Columns, one row per clock bar (empty bars kept):

    - ``start``, ``end``: the bar's edges (``[start, end)``; ``(start, end]`` with
      ``closed="right"``);
    - ``n_events``: quote events in the bar;
    - ``ofi``: best-level OFI, the sum of CKS e_n over the bar's events (e_n is taken against
      the previous event even across bars), divided by ``lot_size`` (CKS: 100-share lots);
    - ``mid``: mid at the bar's end, carried through empty bars and one-sided quotes;
      ``dmid``: its change from the previous bar's end (CKS eq. 11; the first bar's reference
      is the first event's mid); ``dmid_ticks`` when ``tick_size`` is given;
    - with ``trades=(ts, size, sign)`` (sign +1 buyer-, -1 seller-initiated, 0 unknown):
      ``buy_volume``, ``sell_volume``, ``trade_imbalance`` = (B - S) / (B + S) (NaN when no
      signed trade) and ``trade_net`` = (B - S) / ``lot_size`` (CKS's TI);
    - ``imbalance``: queue imbalance at the touch (qb - qa)/(qb + qa) (Gould & Bonart 2016)
      after the bar's last event, carried through empty bars (0 when both sides are empty);
    - with (n, L) books: ``ofi_1 .. ofi_L`` (multi-level OFI, Xu, Gould & Howison; ``ofi`` is
      ``ofi_1``), ``depth_scale`` (CCZ eq. 3: mean of qb + qa over the bar's events and the L
      levels, in lots; NaN for an empty bar), ``ofi_norm_1 .. ofi_norm_L`` (= ofi_m /
      depth_scale, 0 for an empty bar; feed them to :func:`integrated_ofi` with weights
      fitted on past bars) and ``depth_imbalance`` (cumulative depth over L levels, last value);
    - extension point: ``extra_sum={name: per-event array}`` adds the per-bar sum of a flow
      series (multi-level or integrated OFI per event from the Book module), and
      ``extra_last={name: per-event array}`` the last value in the bar carried forward (state
      signals: book imbalance, weighted mid). Both must be aligned with the quote events.

    Returns a dict of numpy arrays, or a pandas DataFrame (``frame=True``, or ``"auto"`` with
    pandas installed).
    """
    t = np.ascontiguousarray(ts, dtype=np.int64)
    bid_px, bid_sz, ask_px, ask_sz = (np.asarray(a, dtype=np.float64)
                                      for a in (bid_px, bid_sz, ask_px, ask_sz))
    multi = bid_px.ndim == 2
    if multi:
        # e_{m,n} level by level with the best-level kernel: the same numbers as
        # mlofi(bid_px, ...) (tests check they are equal), about twice as fast here
        e_levels = [l1_ofi(bid_px[:, k], bid_sz[:, k], ask_px[:, k], ask_sz[:, k])
                    for k in range(bid_px.shape[1])]
        e = e_levels[0]
        top = [np.ascontiguousarray(a[:, 0]) for a in (bid_px, bid_sz, ask_px, ask_sz)]
    else:
        e = l1_ofi(bid_px, bid_sz, ask_px, ask_sz)
        top = [bid_px, bid_sz, ask_px, ask_sz]
    if e.shape[0] != t.shape[0]:
        raise OFIError(f"ts has {t.shape[0]} elements, quotes {e.shape[0]}", field="ts")
    b = bars(t, e, every=every, closed=closed)
    m = bar_mid(t, _fill_mid(top[0], top[2]), every=every, closed=closed, tick_size=tick_size)
    every = int(every)
    lot = float(lot_size)
    out = {"start": b.start, "end": b.start + every, "n_events": b.count,
           "ofi": b.sum / lot, "mid": m["mid"], "dmid": m["dmid"]}
    if tick_size is not None:
        out["dmid_ticks"] = m["dmid_ticks"]
    out["imbalance"] = _ffill(bars(t, _imbalance(top[1], top[3]), every=every,
                                        closed=closed).last)
    if multi:
        L = len(e_levels)
        cnt = b.count.astype(float)
        depth = bars(t, (bid_sz + ask_sz).sum(axis=1), every=every, closed=closed).sum
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(cnt > 0, depth / (2.0 * L * cnt) / lot, np.nan)
        out["depth_scale"] = q
        for k in range(L):
            s_k = bars(t, e_levels[k], every=every, closed=closed).sum
            out[f"ofi_{k + 1}"] = s_k / lot
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"ofi_norm_{k + 1}"] = np.where((cnt > 0) & (q > 0), s_k / lot / q, 0.0)
        out["depth_imbalance"] = _ffill(bars(
            t, _imbalance(bid_sz.sum(axis=1), ask_sz.sum(axis=1)), every=every,
            closed=closed).last)
    k0 = b.start[0] // every if len(b) else 0
    nb = len(b)

    def on_grid(tt, vals):
        """Per-bar sums of an event series with its own timestamps, on the quote bar grid."""
        tt = np.ascontiguousarray(tt, dtype=np.int64)
        shift = 1 if closed == "right" else 0
        k = (tt - shift) // every - k0
        inside = (k >= 0) & (k < nb)
        return np.bincount(k[inside], weights=np.asarray(vals, dtype=np.float64)[inside],
                           minlength=nb)[:nb]

    if trades is not None:
        tts, tsz, tsg = trades
        tsz = np.asarray(tsz, dtype=np.float64)
        tsg = np.asarray(tsg)
        buy = on_grid(tts, np.where(tsg > 0, tsz, 0.0))
        sell = on_grid(tts, np.where(tsg < 0, tsz, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["trade_imbalance"] = np.where(buy + sell > 0, (buy - sell) / (buy + sell),
                                              np.nan)
        out["buy_volume"], out["sell_volume"] = buy, sell
        out["trade_net"] = (buy - sell) / float(lot_size)
    for name, vals in (extra_sum or {}).items():
        out[name] = bars(t, vals, every=every, closed=closed).sum
    for name, vals in (extra_last or {}).items():
        last = bars(t, vals, every=every, closed=closed).last
        out[name] = _ffill(last)
    return _frame(out, frame)


def _imbalance(qb, qa):
    """(qb - qa) / (qb + qa) per event (Gould & Bonart 2016); 0 when both are 0."""
    tot = qb + qa
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (qb - qa) / np.where(tot > 0, tot, 1.0), 0.0)


def integrated_ofi(table, weights):
    """Integrated OFI per bar (CCZ eq. 4): sum_m w_m ofi_norm_m, with ``weights`` from
    :func:`ofi_fast.integrated_weights` fitted on *past* bars when the result feeds a
    prediction (fitting on the evaluation period is look-ahead, THEORY-DETAIL 8.3)."""
    w = np.asarray(weights, dtype=float)
    Z = np.column_stack([_col(table, f"ofi_norm_{m + 1}") for m in range(len(w))])
    return Z @ w


def _ffill(a):
    a = np.array(a, dtype=np.float64)
    ok = ~np.isnan(a)
    idx = np.where(ok, np.arange(a.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    res = a[idx]
    res[: int(np.argmax(ok)) if ok.any() else a.shape[0]] = np.nan
    return res


# ---------------------------------------------------------------------------------------------
# contemporaneous impact per window (CKS)
# ---------------------------------------------------------------------------------------------
def impact_fits(start: ArrayLike, ofi: ArrayLike, dmid: ArrayLike, *, window: int,
                lags: int | None = None, min_bars: int = 10, frame: Any = "auto") -> Any:
    """Fit ``dmid = alpha + beta ofi`` (CKS eq. 14) separately in each window of bars.

    ``start`` are the bar starts (ts units); window i holds the bars with
    ``floor(start / window) == i`` (CKS: 10-second bars inside 30-minute windows, 180 bars).
    Windows with fewer than ``min_bars`` bars are skipped. Returns a table with
    ``window_start, n, beta, alpha, r2, t_beta, t_alpha, t_beta_hc, t_beta_robust, lags``
    (t_beta_robust: Newey-West, see :func:`ofi_fast.fit_impact`).
    """
    start = np.asarray(start, dtype=np.int64)
    ofi = np.asarray(ofi, dtype=np.float64)
    dmid = np.asarray(dmid, dtype=np.float64)
    w = start // int(window)
    cuts = np.flatnonzero(np.diff(w)) + 1
    keys = ("n", "beta", "alpha", "r2", "t_beta", "t_alpha", "t_beta_hc", "t_beta_robust",
            "lags")
    rows = {k: [] for k in ("window_start",) + keys}
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(w)]):
        if hi - lo < min_bars:
            continue
        f = fit_impact(ofi[lo:hi], dmid[lo:hi], lags=lags)
        rows["window_start"].append(int(w[lo]) * int(window))
        for k in keys:
            rows[k].append(getattr(f, k))
    out = {k: np.asarray(v, dtype=np.int64 if k in ("window_start", "n", "lags") else float)
           for k, v in rows.items()}
    return _frame(out, frame)


def summarize_fits(fits, *, z=1.96):
    """Cross-window summary as in CKS Sec. 3.3: mean/min/max R^2, median and mean beta and
    t (Newey-West), and the share of windows where beta is significant at 5 % (|t| > z; a
    perfect fit has t = +-inf and counts as significant; NaN t, e.g. constant OFI, is left
    out)."""
    r2 = _col(fits, "r2")
    beta = _col(fits, "beta")
    t = _col(fits, "t_beta_robust")
    ok = np.isfinite(r2)
    return {"windows": int(len(r2)), "r2_mean": float(np.nanmean(r2)) if ok.any() else math.nan,
            "r2_min": float(np.nanmin(r2)) if ok.any() else math.nan,
            "r2_max": float(np.nanmax(r2)) if ok.any() else math.nan,
            "beta_median": float(np.nanmedian(beta)), "beta_mean": float(np.nanmean(beta)),
            "t_median": float(np.nanmedian(t)), "t_mean": float(np.nanmean(t)),
            "share_significant": float(np.mean(np.abs(t[~np.isnan(t)]) > z))
            if (~np.isnan(t)).any() else math.nan}


# ---------------------------------------------------------------------------------------------
# forecast evaluation
# ---------------------------------------------------------------------------------------------
def _rank(a):
    """Ranks with ties averaged (1-based)."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    # average the ranks of ties
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=np.arange(1, len(a) + 1))
    r[order] = (sums / counts)[inv]
    return r


def spearman(a, b):
    """Spearman rank correlation (ties averaged); NaN when either side is constant."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) < 2:
        return math.nan
    ra, rb = _rank(a), _rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    d = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / d if d > 0 else math.nan


def oos_metrics(y, yhat, ybar_train):
    """Out-of-sample metrics (THEORY-DETAIL 9.3) over the rows where ``yhat`` is finite.

    - ``r2_oos`` = 1 - sum (y - yhat)^2 / sum (y - ybar_train)^2, with ``ybar_train`` the
      training mean that went with each forecast (can be negative; reported as is);
    - ``r2_oos_zero``: the same against a zero forecast (denominator sum y^2);
    - ``hit_rate``: share of sign(yhat) == sign(y) among rows with y != 0 and yhat != 0;
      ``n_hit`` those rows, ``n_y_zero`` / ``n_yhat_zero`` the rows excluded for a zero;
    - ``ic``: Spearman rank correlation of yhat and y; ``n``: rows evaluated.
    """
    y = np.asarray(y, dtype=float)
    yhat = np.asarray(yhat, dtype=float)
    ybar = np.broadcast_to(np.asarray(ybar_train, dtype=float), y.shape)
    ok = np.isfinite(yhat) & np.isfinite(y)
    y, yhat, ybar = y[ok], yhat[ok], ybar[ok]
    sse = float(np.sum((y - yhat) ** 2))
    sst = float(np.sum((y - ybar) ** 2))
    ss0 = float(np.sum(y * y))
    nz = (y != 0) & (yhat != 0)
    return {"n": int(y.shape[0]),
            "r2_oos": 1.0 - sse / sst if sst > 0 else math.nan,
            "r2_oos_zero": 1.0 - sse / ss0 if ss0 > 0 else math.nan,
            "hit_rate": float(np.mean(np.sign(y[nz]) == np.sign(yhat[nz]))) if nz.any()
            else math.nan,
            "n_hit": int(nz.sum()), "n_y_zero": int((y == 0).sum()),
            "n_yhat_zero": int(((yhat == 0) & (y != 0)).sum()),
            "ic": spearman(yhat, y)}


def check_no_lookahead(feature_end, target_start):
    """Raise :class:`LookAheadError` at the first row whose feature ends after its target
    starts (the feature would use information from the target period)."""
    fe = np.asarray(feature_end)
    tgt = np.asarray(target_start)
    if fe.shape != tgt.shape:
        raise OFIError(f"feature_end has shape {fe.shape}, target_start {tgt.shape}",
                       field="feature_end")
    bad = np.flatnonzero(fe > tgt)
    if bad.size:
        i = int(bad[0])
        raise LookAheadError(
            f"feature_end[{i}] = {fe[i]} is after target_start[{i}] = {tgt[i]}: the feature "
            "uses information from the period it is meant to predict", field="feature_end",
            index=i)


def predictive_pairs(table: Any, columns: Sequence[str], *, horizon: int = 1,
                     target: str = "dmid") -> tuple[Any, Any, Any, Any, Any]:
    """Align bar features with the next ``horizon`` bars' mid change, without look-ahead.

    Row k: X = ``table[columns][k]`` (information up to ``end_k``), y = sum of
    ``table[target][k+1 .. k+horizon]`` (the change over ``(end_k, end_{k+horizon}]``).
    Returns ``(X (n, p), y, feature_end, target_start, target_end)`` for :func:`walk_forward`.
    """
    end = _col(table, "end").astype(np.int64)
    d = _col(table, target).astype(float)
    n = len(d) - horizon
    if n <= 0:
        raise OFIError(f"need more than horizon={horizon} bars", field="horizon")
    X = np.column_stack([_col(table, c).astype(float)[:n] for c in columns])
    cs = np.r_[0.0, np.cumsum(d)]
    y = cs[1 + horizon: 1 + horizon + n] - cs[1:1 + n]
    return X, y, end[:n], end[:n], end[horizon:horizon + n]


def walk_forward(X: ArrayLike, y: ArrayLike, *, feature_end: ArrayLike,
                 target_start: ArrayLike, target_end: ArrayLike, train: int | None = None,
                 min_train: int = 30, ridge: float = 0.0) -> dict[str, Any]:
    """Walk-forward out-of-sample forecasts of ``y`` from ``X`` with a rolling OLS.

    The guard (:func:`check_no_lookahead`) first requires ``feature_end <= target_start`` on
    every row. The forecast of row i then uses only rows j whose target had ended,
    ``target_end[j] <= target_start[i]`` (so overlapping horizons cannot leak), the last
    ``train`` of them (all when None), and needs ``min_train`` of them. Returns a dict with
    ``yhat`` and ``ybar_train`` per row (NaN without a forecast), the final ``beta``/``alpha``,
    and ``metrics`` (:func:`oos_metrics`).
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    y = np.asarray(y, dtype=float)
    fe = np.asarray(feature_end)
    ts_ = np.asarray(target_start)
    te = np.asarray(target_end)
    n, p = X.shape
    if not (len(y) == len(fe) == len(ts_) == len(te) == n):
        raise OFIError("X, y, feature_end, target_start and target_end must have one row each",
                       field="y")
    check_no_lookahead(fe, ts_)
    if np.any(te < ts_):
        i = int(np.flatnonzero(te < ts_)[0])
        raise OFIError(f"target_end[{i}] < target_start[{i}]", field="target_end", index=i)
    if np.any(np.diff(te) < 0) or np.any(np.diff(ts_) < 0):
        raise OFIError("rows must be in time order (target_start and target_end "
                       "non-decreasing)", field="target_end")
    ols = RollingOLS(window=train, n_features=p, ridge=ridge)
    yhat = np.full(n, np.nan)
    ybar = np.full(n, np.nan)
    j = 0
    for i in range(n):
        while j < n and te[j] <= ts_[i]:
            ols.update(X[j] if p > 1 else float(X[j, 0]), y[j])
            j += 1
        if ols.n >= min_train:
            yhat[i] = ols.predict(X[i] if p > 1 else float(X[i, 0]))
            ybar[i] = ols.mean_y
    return {"yhat": yhat, "ybar_train": ybar, "beta": ols.beta, "alpha": ols.alpha,
            "metrics": oos_metrics(y, yhat, ybar)}


def autocorr(x, max_lag=10):
    """Sample autocorrelation of a bar series at lags 1..max_lag (the persistence of OFI):
    ``sum (x_t - m)(x_{t-k} - m) / sum (x_t - m)^2``. Returns an array of max_lag values."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)] - np.nanmean(x)
    d = float(x @ x)
    if d == 0:
        return np.full(max_lag, np.nan)
    return np.array([float(x[k:] @ x[:-k]) / d if k < len(x) else np.nan
                     for k in range(1, max_lag + 1)])


def report(table: Any, *, window: int, columns: Sequence[str] = ("ofi",),
           target: str = "dmid_ticks", lags: int | None = None, train: int | None = None,
           min_train: int = 30, max_lag: int = 5) -> dict[str, Any]:
    """One call: per-window contemporaneous fits (summary), walk-forward one-bar-ahead
    forecast metrics for ``columns`` and the autocorrelation of the first column."""
    if target not in (table.columns if hasattr(table, "columns") else table):
        target = "dmid"
    fits = impact_fits(_col(table, "start"), _col(table, columns[0]), _col(table, target),
                       window=window, lags=lags, frame=False)
    X, y, fe, ts_, te = predictive_pairs(table, list(columns), target=target)
    wf = walk_forward(X, y, feature_end=fe, target_start=ts_, target_end=te, train=train,
                      min_train=min_train)
    return {"fits": fits, "summary": summarize_fits(fits), "forecast": wf["metrics"],
            "autocorr": autocorr(_col(table, columns[0]), max_lag)}


# ---------------------------------------------------------------------------------------------
# LOBSTER and the CKS reproduction
# ---------------------------------------------------------------------------------------------
def _csv(zf, name, ncol):
    raw = zf.read(name)
    a = np.array(raw.replace(b"\n", b",").split(b",")[:-1] if raw.endswith(b"\n")
                 else raw.replace(b"\n", b",").split(b","), dtype=np.float64)
    return a.reshape(-1, ncol)


def read_lobster_zip(path, level=1):
    """Best quotes and trades from a LOBSTER zip (message + order-book CSV read in memory).

    Returns a dict: ``ts`` (int64 ns after midnight), ``bid_px``, ``bid_sz``, ``ask_px``,
    ``ask_sz`` (best level; price units of USD 1e-4; empty side = NaN price, size 0) and
    ``trade_ts``, ``trade_size``, ``trade_sign`` (executions, types 4 and 5; sign =
    -direction, since an execution of a sell limit order is buyer-initiated). With
    ``level > 1`` the ``*_px``/``*_sz`` entries are (n, level) arrays, levels by rank.
    """
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        msg = next(n for n in names if "_message_" in n)
        book = next(n for n in names if "_orderbook_" in n)
        m = _csv(zf, msg, 6)
        ob = _csv(zf, book, 4 * level)
    ts = np.rint(m[:, 0] * NS).astype(np.int64)
    # column-major, so that each level ([:, m]) is a contiguous column
    ask_px, ask_sz, bid_px, bid_sz = (np.asfortranarray(ob[:, i::4]) for i in range(4))
    bid_px[(bid_px <= -9999999999) | (bid_sz == 0)] = np.nan
    ask_px[(ask_px >= 9999999999) | (ask_sz == 0)] = np.nan
    bid_sz[np.isnan(bid_px)] = 0.0
    ask_sz[np.isnan(ask_px)] = 0.0
    if level == 1:
        ask_px, ask_sz, bid_px, bid_sz = (a[:, 0].copy() for a in (ask_px, ask_sz, bid_px, bid_sz))
    ex = (m[:, 1] == 4) | (m[:, 1] == 5)
    return {"ts": ts, "bid_px": bid_px, "bid_sz": bid_sz, "ask_px": ask_px, "ask_sz": ask_sz,
            "trade_ts": ts[ex], "trade_size": m[ex, 3], "trade_sign": -m[ex, 5]}


def cks_depth(ts, bid_px, bid_sz, ask_px, ask_sz, *, window, lot_size=1.0):
    """Depth D_i per window (CKS, published version, Sec. 1.4 of THEORY-DETAIL): the average
    queue size right before / after a price change,

        D_i = 1/2 [ sum(qb_n 1{Pb_n < Pb_{n-1}} + qb_{n-1} 1{Pb_n > Pb_{n-1}}) / #{Pb changes}
                  + sum(qa_n 1{Pa_n > Pa_{n-1}} + qa_{n-1} 1{Pa_n < Pa_{n-1}}) / #{Pa changes} ]

    over the events of window i (ts in ``floor(ts / window)``), in units of ``lot_size``.
    Returns ``(window_start, D)``; NaN for a window without a price change on a side. Events
    where a side is empty (NaN price) are not counted as price changes on that side.
    """
    ts = np.asarray(ts, dtype=np.int64)
    bp, bs, ap, az = (np.asarray(a, dtype=float) for a in (bid_px, bid_sz, ask_px, ask_sz))
    w = ts[1:] // int(window)
    k = w - w[0]
    nb = int(k[-1]) + 1 if len(k) else 0
    with np.errstate(invalid="ignore"):
        bdown, bup = bp[1:] < bp[:-1], bp[1:] > bp[:-1]
        adown, aup = ap[1:] < ap[:-1], ap[1:] > ap[:-1]
    qb = np.where(bdown, bs[1:], 0.0) + np.where(bup, bs[:-1], 0.0)
    qa = np.where(aup, az[1:], 0.0) + np.where(adown, az[:-1], 0.0)
    nbid = np.bincount(k, weights=(bdown | bup).astype(float), minlength=nb)
    nask = np.bincount(k, weights=(adown | aup).astype(float), minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        D = 0.5 * (np.bincount(k, weights=qb, minlength=nb) / nbid
                   + np.bincount(k, weights=qa, minlength=nb) / nask) / float(lot_size)
    return (np.arange(nb) + (w[0] if len(w) else 0)) * int(window), D


def depth_regression(beta, depth):
    """CKS eq. 17: ``log beta_i = log c - lambda log D_i`` by OLS over windows with beta > 0 and
    a finite depth. Returns ``(c, lambda, r2, n)``; the stylised model has c = 1/2, lambda = 1."""
    beta = np.asarray(beta, dtype=float)
    depth = np.asarray(depth, dtype=float)
    ok = (beta > 0) & (depth > 0) & np.isfinite(depth)
    f = fit_impact(np.log(depth[ok]), np.log(beta[ok]))
    return math.exp(f.alpha), -f.beta, f.r2, f.n


def cks_day(path, *, bar_seconds=10, window_minutes=30, tick_size=100.0, lot_size=100.0,
            lags=None):
    """CKS on one LOBSTER level-1 day: 10 s bars, OFI in 100-share lots, dmid in ticks,
    one OLS per 30-minute window. Returns ``(summary, fits, table, forecast_metrics)``."""
    q = read_lobster_zip(path)
    table = features(q["ts"], q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"],
                     every=bar_seconds * NS, closed="right", tick_size=tick_size,
                     lot_size=lot_size, trades=(q["trade_ts"], q["trade_size"], q["trade_sign"]),
                     frame=False)
    fits = impact_fits(table["start"], table["ofi"], table["dmid_ticks"],
                       window=window_minutes * 60 * NS, lags=lags, frame=False)
    X, y, fe, ts_, te = predictive_pairs(table, ["ofi"], target="dmid_ticks")
    wf = walk_forward(X, y, feature_end=fe, target_start=ts_, target_end=te,
                      train=window_minutes * 60 // bar_seconds, min_train=30)
    summary = summarize_fits(fits)
    # CKS eq. 16a: the same regression on trade imbalance (buy - sell volume, round lots)
    ti = impact_fits(table["start"], table["trade_net"], table["dmid_ticks"],
                     window=window_minutes * 60 * NS, lags=lags, frame=False)
    summary["r2_ti_mean"] = summarize_fits(ti)["r2_mean"]
    wstart, D = cks_depth(q["ts"], q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"],
                          window=window_minutes * 60 * NS, lot_size=lot_size)
    D = D[np.searchsorted(wstart, fits["window_start"])]
    fits["depth"] = D
    summary["depth_median"] = float(np.nanmedian(D))
    summary["c"], summary["lambda"], summary["r2_depth"], _ = depth_regression(fits["beta"], D)
    summary["implied_depth_median"] = float(np.nanmedian(1.0 / (2.0 * fits["beta"])))
    return summary, fits, table, wf["metrics"]


def cks_table(paths, **kw):
    """The CKS table for several LOBSTER days, as printable text."""
    head = (f"{'stock':<6}{'windows':>8}{'R2 mean':>9}{'R2 min':>8}{'R2 max':>8}"
            f"{'beta med':>10}{'t med':>8}{'sig %':>7}{'R2 TI':>7}{'D med':>7}{'c':>6}"
            f"{'lambda':>7} | {'OOS R2':>8}{'hit':>6}{'IC':>7}"
            f"{'n':>6}")
    lines = [head, "-" * len(head)]
    for path in paths:
        s, _, _, f = cks_day(path, **kw)
        name = Path(path).name.replace("LOBSTER_SampleFile_", "").split("_")[0]
        lines.append(f"{name:<6}{s['windows']:>8}{s['r2_mean']:>9.3f}{s['r2_min']:>8.3f}"
                     f"{s['r2_max']:>8.3f}{s['beta_median']:>10.4f}{s['t_median']:>8.2f}"
                     f"{100 * s['share_significant']:>7.0f}{s['r2_ti_mean']:>7.3f}"
                     f"{s['depth_median']:>7.2f}{s['c']:>6.2f}{s['lambda']:>7.2f} | "
                     f"{f['r2_oos']:>8.4f}"
                     f"{f['hit_rate']:>6.3f}{f['ic']:>7.3f}{f['n']:>6}")
    return "\n".join(lines)


def _ols_r2(X, y, ridge=0.0):
    o = RollingOLS(n_features=X.shape[1], ridge=ridge)
    o.update_many(X, y)
    return o


def multilevel_day(path, levels, *, bar_seconds=10, window_minutes=30, tick_size=100.0,
                   lot_size=100.0, ridge=0.0):
    """Best-level vs multi-level (Xu, Gould & Howison) vs integrated OFI (Cont, Cucuringu &
    Zhang) on one LOBSTER day with ``levels`` levels: 10 s bars, per 30-minute window.

    Per level m, e_{m,n} is CKS eq. 10 on the level-m quotes (levels by rank; THEORY-DETAIL
    2.1), computed by :func:`features` (equal to :func:`ofi_fast.mlofi`). Integrated OFI:
    per-bar OFI of each level divided by the bar's common depth scale Q (CCZ eq. 3: mean of qb + qa over the bar's
    events and the M levels; 0 for an empty bar), projected on the first principal vector
    (:func:`ofi_fast.integrated_weights`).
    For each window: in-sample R^2 of dmid (ticks) on OFI_1, on the M-vector MLOFI (OLS with
    intercept, optional ridge) and on integrated OFI (PCA fitted in the window); and the
    *parameter-out-of-sample* R^2 of the same contemporaneous relation with every parameter
    (weights, betas, training mean) taken from the previous window. Returns a dict of means,
    plus walk-forward one-bar-ahead forecast metrics (``forecast_l1``, ``forecast_ml`` and
    ``forecast_int``, the last on integrated OFI with the previous window's weights).

    The per-level flows enter the bar table through ``features(extra_sum=...)``.
    """
    q = read_lobster_zip(path, level=levels)
    M = levels
    t = features(q["ts"], *(q[k].reshape(len(q["ts"]), -1) for k in
                            ("bid_px", "bid_sz", "ask_px", "ask_sz")),
                 every=bar_seconds * NS, closed="right", tick_size=tick_size, lot_size=lot_size,
                 frame=False)
    X = np.column_stack([t[f"ofi_{m + 1}"] for m in range(M)])
    Z = np.column_stack([t[f"ofi_norm_{m + 1}"] for m in range(M)])
    y = t["dmid_ticks"]
    win = t["start"] // (window_minutes * 60 * NS)
    res = {k: [] for k in ("r2_l1", "r2_ml", "r2_int", "evr", "oos_l1", "oos_ml", "oos_int")}
    prev = None
    # integrated OFI as a forecast feature: bar k projected on the PCA weights fitted on the
    # previous window (past bars only); the first window has no weights and stays NaN
    z_int = np.full(len(y), np.nan)
    for w in np.unique(win):
        s_ = win == w
        Xw, Zw, yw = X[s_], Z[s_], y[s_]
        if prev is not None:
            z_int[s_] = Zw @ prev[2]
        f1 = fit_impact(Xw[:, 0], yw)
        om = _ols_r2(Xw, yw, ridge)
        wts, evr = integrated_weights(Zw)
        fi = fit_impact(Zw @ wts, yw)
        res["r2_l1"].append(f1.r2)
        res["r2_ml"].append(om.r2)
        res["r2_int"].append(fi.r2)
        res["evr"].append(evr)
        if prev is not None:
            p1, pm, pw, pi = prev
            base = np.sum((yw - pm.mean_y) ** 2)
            for key, yhat in (("oos_l1", p1.alpha + p1.beta * Xw[:, 0]),
                              ("oos_ml", pm.alpha + Xw @ np.atleast_1d(pm.beta)),
                              ("oos_int", pi.alpha + pi.beta * (Zw @ pw))):
                res[key].append(1.0 - np.sum((yw - yhat) ** 2) / base if base > 0 else np.nan)
        prev = (f1, om, wts, fi)
    X1, y1, fe, ts_, te = predictive_pairs(t, [f"ofi_{m + 1}" for m in range(M)],
                                           target="dmid_ticks")
    train = window_minutes * 60 // bar_seconds
    f_l1 = walk_forward(X1[:, :1], y1, feature_end=fe, target_start=ts_, target_end=te,
                        train=train)["metrics"]
    f_ml = walk_forward(X1, y1, feature_end=fe, target_start=ts_, target_end=te, train=train,
                        ridge=ridge)["metrics"]
    ok = np.isfinite(z_int[:len(y1)])
    f_int = walk_forward(z_int[:len(y1)][ok, None], y1[ok], feature_end=fe[ok],
                         target_start=ts_[ok], target_end=te[ok], train=train)["metrics"]
    out = {k: float(np.nanmean(v)) for k, v in res.items()}
    out.update(levels=M, windows=len(res["r2_l1"]), forecast_l1=f_l1, forecast_ml=f_ml,
               forecast_int=f_int)
    return out


def multilevel_table(specs, **kw):
    """Printable table of :func:`multilevel_day` for ``[(path, levels), ...]``."""
    head = (f"{'stock':<6}{'M':>3}{'R2 OFI1':>9}{'R2 MLOFI':>10}{'R2 intOFI':>11}{'PC1 var':>9}"
            f" | {'oos OFI1':>9}{'oos ML':>8}{'oos int':>8} | {'fc R2 OFI1':>11}"
            f"{'fc R2 ML':>10}{'fc R2 int':>11}")
    lines = [head, "-" * len(head)]
    for path, levels in specs:
        r = multilevel_day(path, levels, **kw)
        name = Path(path).name.replace("LOBSTER_SampleFile_", "").split("_")[0]
        lines.append(f"{name:<6}{levels:>3}{r['r2_l1']:>9.3f}{r['r2_ml']:>10.3f}"
                     f"{r['r2_int']:>11.3f}{r['evr']:>9.3f} | {r['oos_l1']:>9.3f}"
                     f"{r['oos_ml']:>8.3f}{r['oos_int']:>8.3f} | "
                     f"{r['forecast_l1']['r2_oos']:>11.4f}{r['forecast_ml']['r2_oos']:>10.4f}"
                     f"{r['forecast_int']['r2_oos']:>11.4f}")
    return "\n".join(lines)


def main(argv=None):
    """``python -m ofi_fast.analysis cks|multilevel ...``: an alias of ``ofi-fast cks`` /
    ``ofi-fast multilevel`` (same options, same one-line errors)."""
    from ofi_fast.cli import main as cli_main
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("cks", "multilevel"):
        print("usage: python -m ofi_fast.analysis cks LOBSTER_level1.zip [...]\n"
              "       python -m ofi_fast.analysis multilevel LOBSTER_levelM.zip:M [...]\n"
              "(aliases of 'ofi-fast cks' and 'ofi-fast multilevel')", file=sys.stderr)
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())


def forecast(inputs=None, **kw):
    """Walk-forward forecasts of the mid from the book at event-time and clock-time horizons
    (queue imbalance, Stoikov's micro-price, OFI windows, trade flow, the last move; OLS and
    logistic; bootstrap intervals; naive baselines): :func:`ofi_fast.forecast.forecast`."""
    from ofi_fast.forecast import forecast as _forecast
    return _forecast(inputs, **kw)
