"""analysis.py: features, per-window CKS fits, walk-forward evaluation and its look-ahead guard,
and the CKS reproduction on the LOBSTER level-1 days."""

import time

import numpy as np
import pytest

from conftest import data_file, random_quotes
from ofi_fast import reference as ref
from ofi_fast.analysis import (
    LookAheadError, autocorr, check_no_lookahead, cks_day, features, impact_fits, main,
    oos_metrics, predictive_pairs, read_lobster_zip, report, spearman, summarize_fits,
    walk_forward,
)


def test_oos_vector_9_3():
    # THEORY-DETAIL 9.3: y = (1, -1, 2), yhat = (0.5, -0.5, 1), ybar_train = 0 -> 0.75, hit 3/3
    m = oos_metrics([1.0, -1.0, 2.0], [0.5, -0.5, 1.0], [0.0, 0.0, 0.0])
    assert m["r2_oos"] == pytest.approx(0.75)
    assert m["r2_oos_zero"] == pytest.approx(0.75)
    assert m["hit_rate"] == 1.0 and m["n_hit"] == 3 and m["n"] == 3
    m = oos_metrics([1.0, 0.0, -2.0, 3.0], [1.0, 1.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5])
    assert m["n_hit"] == 2 and m["hit_rate"] == 0.5        # zeros excluded and counted
    assert m["n_y_zero"] == 1 and m["n_yhat_zero"] == 1


def test_spearman_and_autocorr(rng):
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    b[:20] = 0.0                                           # ties
    try:
        from scipy.stats import spearmanr
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, rel=1e-12)
    except ImportError:
        pass
    assert spearman(a, a) == pytest.approx(1.0)
    x = rng.normal(size=500)
    m = x.mean()
    ac = autocorr(x, 3)
    assert ac[1] == pytest.approx(np.sum((x[2:] - m) * (x[:-2] - m)) / np.sum((x - m) ** 2))


# ---------------------------------------------------------------------------------------------
# look-ahead guard
# ---------------------------------------------------------------------------------------------
def _table(rng, n=400):
    ofi = rng.normal(size=n) * 10
    end = (np.arange(n) + 1) * 10
    # dmid of bar k+1 depends on ofi of bar k (a real predictive signal) plus noise
    dmid = np.r_[0.0, 0.05 * ofi[:-1]] + rng.normal(size=n)
    return {"start": end - 10, "end": end, "ofi": ofi, "dmid": dmid}


def test_guard_accepts_honest_pairs_and_finds_signal(rng):
    t = _table(rng)
    X, y, fe, ts_, te = predictive_pairs(t, ["ofi"])
    assert np.all(fe <= ts_)
    wf = walk_forward(X, y, feature_end=fe, target_start=ts_, target_end=te, min_train=20)
    assert wf["beta"] == pytest.approx(0.05, abs=0.02)
    assert wf["metrics"]["r2_oos"] > 0 and wf["metrics"]["ic"] > 0


def test_guard_rejects_future_feature(rng):
    t = _table(rng)
    X, y, fe, ts_, te = predictive_pairs(t, ["ofi"])
    # a feature built from the next bar (the target's own period): values and end times shift
    Xf = np.r_[X[1:, 0], 0.0]
    fef = np.r_[fe[1:], fe[-1] + 10]
    with pytest.raises(LookAheadError) as ei:
        walk_forward(Xf, y, feature_end=fef, target_start=ts_, target_end=te)
    assert ei.value.index == 0 and ei.value.field == "feature_end"
    # the contemporaneous CKS pairing (OFI_k with dmid_k) is not a forecast either
    with pytest.raises(LookAheadError):
        check_no_lookahead(t["end"], t["start"])
    # one leaking row is enough
    fe2 = fe.copy()
    fe2[57] += 1
    with pytest.raises(LookAheadError) as ei:
        walk_forward(X, y, feature_end=fe2, target_start=ts_, target_end=te)
    assert ei.value.index == 57


def test_walk_forward_trains_only_on_ended_targets(rng):
    # horizon 2: the forecast for row i may use rows j <= i - 2 only
    t = _table(rng, 120)
    X, y, fe, ts_, te = predictive_pairs(t, ["ofi"], horizon=2)
    assert np.allclose(y[:-1], t["dmid"][1:-2] + t["dmid"][2:-1])
    wf = walk_forward(X, y, feature_end=fe, target_start=ts_, target_end=te, train=50,
                      min_train=5)
    for i in (10, 60, 117):
        lo = max(0, i - 1 - 50)
        a = np.column_stack([np.ones(i - 1 - lo), X[lo:i - 1, 0]])
        c, *_ = np.linalg.lstsq(a, y[lo:i - 1], rcond=None)
        assert wf["yhat"][i] == pytest.approx(c[0] + c[1] * X[i, 0], rel=1e-9, abs=1e-12)
        assert wf["ybar_train"][i] == pytest.approx(y[lo:i - 1].mean(), rel=1e-9, abs=1e-12)
    assert np.all(np.isnan(wf["yhat"][:6]))


# ---------------------------------------------------------------------------------------------
# features and per-window fits
# ---------------------------------------------------------------------------------------------
def test_features_vs_reference(rng):
    ts, bp, bs, ap, az = random_quotes(rng, 3000, p_empty=0.02)
    every = 5000
    tbl = features(ts, bp, bs, ap, az, every=every, tick_size=0.5, lot_size=10.0, frame=False)
    e = ref.l1_ofi(list(bp), list(bs), list(ap), list(az))
    rb = ref.bars(list(map(int, ts)), e, every=every)
    np.testing.assert_array_equal(tbl["start"], rb["start"])
    np.testing.assert_array_equal(tbl["n_events"], rb["count"])
    np.testing.assert_allclose(tbl["ofi"], np.array(rb["sum"]) / 10.0, rtol=0, atol=1e-9)
    # mid: carried through one-sided events, bar-to-bar change
    mid = 0.5 * (bp + ap)
    for i in range(len(mid)):
        if not np.isfinite(mid[i]):
            mid[i] = mid[i - 1] if i else np.nan
    first = np.flatnonzero(np.isfinite(mid))[0]
    mid[:first] = mid[first]
    rm = ref.bar_mid(list(map(int, ts)), list(mid), every=every)
    np.testing.assert_allclose(tbl["mid"], rm["mid"])
    np.testing.assert_allclose(tbl["dmid_ticks"], np.array(rm["dmid"]) / 0.5)
    assert np.all(tbl["end"] - tbl["start"] == every)


def test_features_trades_extras_and_frame(rng):
    ts = np.array([0, 5, 12, 25, 31], dtype=np.int64)
    bp = np.array([10.0, 10.0, 11.0, 11.0, 10.0])
    ap = bp + 1
    sz = np.array([5.0, 6.0, 4.0, 4.0, 3.0])
    trades = (np.array([1, 3, 12, 35]), np.array([2.0, 3.0, 4.0, 1.0]),
              np.array([1, -1, 1, 0]))
    tbl = features(ts, bp, sz, ap, sz, every=10, trades=trades,
                   extra_sum={"x": np.ones(5)}, extra_last={"imb": [0.1, 0.2, 0.3, 0.4, 0.5]},
                   frame=False)
    np.testing.assert_array_equal(tbl["buy_volume"], [2.0, 4.0, 0.0, 0.0])
    np.testing.assert_array_equal(tbl["sell_volume"], [3.0, 0.0, 0.0, 0.0])
    assert tbl["trade_imbalance"][0] == pytest.approx(-0.2)
    assert np.isnan(tbl["trade_imbalance"][2])
    np.testing.assert_array_equal(tbl["x"], [2.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(tbl["imb"], [0.2, 0.3, 0.4, 0.5])
    pd = pytest.importorskip("pandas")
    df = features(ts, bp, sz, ap, sz, every=10, frame=True)
    assert isinstance(df, pd.DataFrame) and list(df["n_events"]) == [2, 1, 1, 1]


def test_impact_fits_per_window(rng):
    n = 360
    start = np.arange(n) * 10
    ofi = rng.normal(size=n)
    dmid = 0.3 * ofi + 0.1 * rng.normal(size=n)
    fits = impact_fits(start, ofi, dmid, window=1800, frame=False)
    assert list(fits["window_start"]) == [0, 1800]
    for k, lo in enumerate((0, 180)):
        r = ref.fit_impact(list(ofi[lo:lo + 180]), list(dmid[lo:lo + 180]))
        for key in ("beta", "alpha", "r2", "t_beta", "t_beta_robust"):
            assert fits[key][k] == pytest.approx(r[key], rel=1e-9, abs=1e-12)
    s = summarize_fits(fits)
    assert s["windows"] == 2 and s["share_significant"] == 1.0
    assert s["r2_min"] <= s["r2_mean"] <= s["r2_max"]


# ---------------------------------------------------------------------------------------------
# real data: the CKS set-up on LOBSTER level-1 days
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stock", ["AAPL", "AMZN", "GOOG"])
def test_cks_reproduction_real(stock):
    path = data_file("lobster", f"LOBSTER_SampleFile_{stock}_2012-06-21_1.zip")
    t0 = time.perf_counter()
    s, fits, table, fc = cks_day(path)
    elapsed = time.perf_counter() - t0
    assert len(table["start"]) == 2340 and s["windows"] == 13
    # CKS: contemporaneous R^2 of tens of percent, positive beta, strongly significant
    assert 0.2 < s["r2_mean"] < 0.9
    assert s["beta_median"] > 0 and s["t_median"] > 2
    assert s["share_significant"] >= 0.75
    # CKS eq. 16a: trade imbalance explains less than OFI
    assert 0.05 < s["r2_ti_mean"] < s["r2_mean"]
    # CKS eq. 8/17: beta falls with depth (lambda > 0); depth of about a round lot or more
    assert s["lambda"] > 0 and s["depth_median"] > 0.5
    # prediction is much weaker than explanation (THEORY-DETAIL 8.3)
    assert fc["r2_oos"] < s["r2_mean"] / 5
    assert elapsed < 5.0
    # the bar table adds up: OFI sums to the day's total, dmid to the day's mid change
    q = read_lobster_zip(path)
    assert table["n_events"].sum() == len(q["ts"])
    assert table["dmid"].sum() == pytest.approx(table["mid"][-1] - 0.5 * (q["bid_px"][0]
                                                                          + q["ask_px"][0]))


def test_cli_prints_table(capsys):
    path = data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip")
    assert main(["cks", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GOOG" in out and "R2 mean" in out
    assert main([]) == 2


def test_report_one_call(rng):
    t = _table(rng, 400)
    r = report(t, window=2000, target="dmid", min_train=20)
    assert r["summary"]["windows"] == 2
    assert set(r["forecast"]) >= {"r2_oos", "hit_rate", "ic", "n"}
    assert r["autocorr"].shape == (5,)


def test_multilevel_real_goog5():
    from ofi_fast.analysis import multilevel_day
    p5 = data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_5.zip")
    p1 = data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip")
    r = multilevel_day(p5, 5)
    s1, *_ = cks_day(p1)
    # level 1 of the 5-level file gives the same best-level fits as the level-1 file
    assert r["r2_l1"] == pytest.approx(s1["r2_mean"], rel=1e-9)
    # nested models: more levels cannot lower the in-sample R^2 (XGH, CCZ direction)
    assert r["r2_ml"] >= r["r2_l1"] and r["r2_int"] > r["r2_l1"]
    assert 0.5 < r["evr"] <= 1.0 and r["windows"] == 13
    # the integrated-OFI forecast starts after the first window (weights from past bars only)
    assert r["forecast_int"]["n"] <= r["forecast_l1"]["n"] - 180 + 1


def test_cks_depth_hand_computed():
    from ofi_fast.analysis import cks_depth, depth_regression
    # window 0: bid 100x10 -> 101x4 (up: q_{n-1} = 10) -> 100x6 (down: q_n = 6); ask
    # 102x8 -> 102x8 -> 103x2 (up: q_n = 2). D = 1/2 ((10 + 6)/2 + 2/1) = 5, in lots of 1
    ts = [0, 1, 2]
    D = cks_depth(ts, [100.0, 101.0, 100.0], [10.0, 4.0, 6.0], [102.0, 102.0, 103.0],
                  [8.0, 8.0, 2.0], window=10)[1]
    assert D.tolist() == [5.0]
    # eq. 17 recovers c and lambda from beta = c / D^lambda exactly
    d = np.array([1.0, 2.0, 4.0, 8.0])
    c, lam, r2, n = depth_regression(0.5 / d ** 1.2, d)
    assert c == pytest.approx(0.5) and lam == pytest.approx(1.2) and n == 4


def test_mlofi_equals_l1_ofi_per_level_real():
    # the Book module's mlofi and the best-level kernel applied level by level agree exactly
    import ofi_fast
    q = read_lobster_zip(data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_5.zip"), 5)
    e = ofi_fast.mlofi(q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"])
    for m in range(5):
        np.testing.assert_array_equal(
            e[:, m], ofi_fast.l1_ofi(q["bid_px"][:, m], q["bid_sz"][:, m], q["ask_px"][:, m],
                                     q["ask_sz"][:, m]))


def test_features_multilevel_book_columns(rng):
    import ofi_fast
    from ofi_fast.analysis import integrated_ofi
    n, L = 800, 3
    ts, bp, bs, ap, az = random_quotes(rng, n)
    # levels by rank: one tick apart below the best bid / above the best ask
    BP = np.column_stack([bp - k for k in range(L)])
    AP = np.column_stack([ap + k for k in range(L)])
    BS = np.column_stack([bs] + [rng.integers(0, 20, n).astype(float) for _ in range(L - 1)])
    AS = np.column_stack([az] + [rng.integers(0, 20, n).astype(float) for _ in range(L - 1)])
    t = features(ts, BP, BS, AP, AS, every=4000, lot_size=2.0, frame=False)
    one = features(ts, bp, bs, ap, az, every=4000, lot_size=2.0, frame=False)
    for k in ("start", "ofi", "mid", "dmid", "imbalance", "n_events"):
        np.testing.assert_array_equal(t[k], one[k])
    e = ofi_fast.mlofi(BP, BS, AP, AS)
    np.testing.assert_array_equal(t["ofi_1"], t["ofi"])
    for m in range(L):
        ref_sum = np.array(ref.bars(list(map(int, ts)), list(e[:, m]), every=4000)["sum"]) / 2.0
        np.testing.assert_allclose(t[f"ofi_{m + 1}"], ref_sum, atol=1e-9)
    # CCZ eq. 3 by hand on the first bar
    k0 = ts < t["end"][0]
    q0 = (BS[k0] + AS[k0]).sum() / (2 * L * k0.sum()) / 2.0
    assert t["depth_scale"][0] == pytest.approx(q0)
    assert t["ofi_norm_2"][0] == pytest.approx(t["ofi_2"][0] / q0)
    w = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(integrated_ofi(t, w),
                               0.5 * t["ofi_norm_1"] + 0.3 * t["ofi_norm_2"]
                               + 0.2 * t["ofi_norm_3"], rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(t["depth_imbalance"]) <= 1)


def test_imbalance_vector_6_1():
    # THEORY-DETAIL 6.1: qb = 30, qa = 10 -> 0.5; both sides empty -> 0; carried through bars
    t = features([0, 25], [100.0, 100.0], [30.0, 0.0], [101.0, 101.0], [10.0, 0.0], every=10,
                 frame=False)
    assert t["imbalance"].tolist() == [0.5, 0.5, 0.0]
