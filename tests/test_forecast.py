"""Walk-forward forecasts: targets, look-ahead guards, a planted signal found out of sample,
no signal -> hit rate indistinguishable from 50 %, metrics, the CLI."""

import json
import math

import numpy as np
import pytest

from conftest import data_file
from ofi_fast import feeds
from ofi_fast import forecast as fc
from ofi_fast.analysis import LookAheadError
from ofi_fast.cli import main
from ofi_fast.simulate import simulate

TICK = 0.01


def test_targets_by_hand():
    ts = np.array([0, 10, 20, 30, 40, 50], dtype=np.int64) * 10**7     # 0.1 s apart
    m = np.array([5.0, 5.0, 6.0, 6.0, 5.5, 5.5])                       # mid in ticks
    y, fe, st, te = fc.targets(ts, m, "move")
    np.testing.assert_array_equal(y[:4], [1.0, 1.0, -0.5, -0.5])
    assert np.isnan(y[4]) and np.isnan(y[5])
    np.testing.assert_array_equal(te[:4], [2, 2, 4, 4])
    y, fe, st, te = fc.targets(ts, m, 2)
    np.testing.assert_array_equal(y[:4], [1.0, 1.0, -0.5, -0.5])
    assert np.isnan(y[4:]).all()
    y, fe, st, te = fc.targets(ts, m, 0.25)            # 2.5 events ahead: the mid at i + 2
    np.testing.assert_array_equal(y[:3], [1.0, 1.0, -0.5])
    assert np.isnan(y[3:]).all()                       # the data end before t + 0.25 s
    np.testing.assert_array_equal(te, ts + 25 * 10**7)
    assert fc.parse_horizon("100ms") == 0.1 and fc.parse_horizon("10") == 10
    assert fc.parse_horizon("move") == "move" and fc.parse_horizon("2s") == 2.0


def planted(n=40_000, strength=1.5, seed=1):
    """Quotes whose next mid move follows a signal x published one event earlier: at each
    event the mid moves (prob 0.3) one tick, up with probability 1 / (1 + exp(-strength x)),
    x ~ N(0, 1) drawn fresh per event and known at the event before. Queue sizes are noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    move = rng.random(n) < 0.3
    up = rng.random(n) < 1.0 / (1.0 + np.exp(-strength * np.r_[0.0, x[:-1]]))
    d = np.where(move, np.where(up, 1, -1), 0)
    d[0] = 0
    mid = 1000 + np.cumsum(d)                          # ticks
    bid = (mid - 0.5) * TICK
    ask = (mid + 0.5) * TICK
    q = rng.integers(1, 20, size=(2, n)).astype(float)
    ts = np.arange(n, dtype=np.int64) * 10_000_000     # 10 ms apart
    ev = fc.Events(ts, bid, q[0], ask, q[1], TICK, name="planted")
    return ev, x


@pytest.mark.parametrize("h", ["move", 1, 0.05])
def test_planted_signal_is_found_out_of_sample(h):
    ev, x = planted()
    res = fc.forecast_events(ev, horizons=[h], features=["planted", "qi1"],
                             extra_features={"planted": x}, micro=False, n_boot=100)
    hn = fc.horizon_name(h)
    for model in ("ols", "logit"):
        r = res.get(hn, "planted", model)
        # x predicts the move at i + 1 only (it happens with prob 0.3), right with prob
        # E[1 / (1 + exp(-1.5 |x|))] = 0.73: the next-move and 5-event targets dilute it
        assert r["hit_lo"] > (0.65 if h == 1 else 0.53), r
        assert r["ic_lo"] > 0.05, r
        q = res.get(hn, "qi1", model)                  # noise: no edge
        assert q["hit_lo"] < 0.5 < q["hit_hi"], q
    assert res.get(hn, "planted", "ols")["r2_lo"] > 0


def test_no_signal_on_the_simulator_gives_fifty_percent():
    r = simulate(60_000, seed=11, levels=1)
    ev = fc.Events(r.ts, r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.tick_size, name="sim")
    noise = np.random.default_rng(5).standard_normal(len(ev))
    res = fc.forecast_events(ev, horizons=["move", 10, 1.0], features=["noise"],
                             extra_features={"noise": noise}, micro=False, n_boot=200)
    for hn in ("move", "10ev", "1s"):
        for model in ("ols", "logit"):
            row = res.get(hn, "noise", model)
            # a fitted model's sign is the noise's sign, or the drift's when the slope is ~0:
            # either way its hit rate must not beat 50 % beyond the interval
            assert row["hit_lo"] <= 0.5 <= row["hit_hi"] or \
                abs(row["hit_rate"] - res.get(hn, "mean", "baseline")["hit_rate"]) < 0.02, row


@pytest.mark.parametrize("h", ["move", 10, 1.0])
def test_lookahead_guard_on_every_horizon_kind(h):
    ev, x = planted(5_000)
    y, fe, st, te = fc.targets(ev.ts, ev.mid / TICK, h)
    ok = np.isfinite(y)
    y, fe, st, te = y[ok], fe[ok], st[ok], te[ok]
    X = x[ok][:, None]
    seg = fc._segments(len(y), 12)
    yh, yb, train_end = fc.walk(X, y, fe, st, te, seg)
    # each segment's training rows had all ended before its first forecast row started
    for k, e in zip(range(2, 12), train_end):
        assert e is None or e <= st[seg[k]]
    bad = fe.copy()
    bad[777] = te[777]                                 # a feature that reaches into its target
    with pytest.raises(LookAheadError) as e:
        fc.walk(X, y, bad, st, te, seg)
    assert e.value.index == 777


def test_future_feature_is_refused_by_forecast_events_rows():
    # walk() refuses rows out of time order (a reordered table could leak)
    y = np.arange(100.0)
    t = np.arange(100)
    te = t + 1
    te[50] = 0
    with pytest.raises(fc.OFIError):
        fc.walk(y[:, None], y, t, t, te, fc._segments(100, 4))


def test_metrics_extremes_and_intervals():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(5_000)
    perfect = fc.metrics(y, y, np.zeros_like(y))
    assert perfect["r2_oos"] == 1.0 and perfect["hit_rate"] == 1.0
    assert perfect["ic"] == pytest.approx(1.0)
    flipped = fc.metrics(y, -y, np.zeros_like(y))
    assert flipped["hit_rate"] == 0.0 and flipped["ic"] == pytest.approx(-1.0)
    noise = fc.metrics(y, rng.standard_normal(5_000), np.zeros_like(y))
    assert noise["hit_lo"] < 0.5 < noise["hit_hi"]
    assert noise["ic_lo"] < 0 < noise["ic_hi"]
    assert noise["r2_oos"] < 0                         # a noise forecast adds squared error


def test_micro_feature_is_fitted_on_the_past_only():
    r = simulate(24_000, seed=2, levels=1)
    ev = fc.Events(r.ts, r.bid_px, r.bid_sz, r.ask_px, r.ask_sz, r.tick_size)
    seg = fc._segments(len(ev), 12)
    col, fits, ms = fc.micro_feature(ev, seg)
    assert np.isnan(col[:seg[1]]).all() and np.isfinite(col[seg[1]:]).all()
    from ofi_fast import Microprice
    k = 5                                              # segment 5 uses the events before it
    a, b = seg[k], seg[k + 1]
    mp = Microprice.fit(ev.ts[:a], ev.bid_px[:a, 0], ev.bid_sz[:a, 0], ev.ask_px[:a, 0],
                        ev.ask_sz[:a, 0], ev.tick_size, max_spread=ms, max_move=float(ms))
    assert ms >= 2 and np.any(mp.table != 0)          # a one-tick book moves via spread 2
    np.testing.assert_array_equal(fits[k - 1].table, mp.table)
    v = mp.update_many(ev.ts[a:b], ev.bid_px[a:b, 0], ev.bid_sz[a:b, 0], ev.ask_px[a:b, 0],
                       ev.ask_sz[a:b, 0])
    np.testing.assert_array_equal(col[a:b], np.nan_to_num((v - ev.mid[a:b]) / ev.tick_size))


def test_cli_forecast_simulator(tmp_path, capsys):
    out = tmp_path / "f.csv"
    assert main(["forecast", "--events", "30000", "--horizons", "move,1s", "--boot", "50",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "micro-price" in text and " combined " in text and " last_sign " in text
    lines = out.read_text().splitlines()
    assert lines[0].startswith("horizon,feature,model,n,r2_oos")
    assert any(line.startswith("move,micro,ols,") for line in lines)
    assert main(["forecast", "--events", "30000", "--horizons", "10", "--models", "ols",
                 "--boot", "20", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {r["horizon"] for r in d["rows"]} == {"10ev"}
    assert all(r["model"] in ("ols", "baseline") for r in d["rows"])


def test_cli_forecast_errors(capsys):
    assert main(["forecast", "--events", "30000", "--horizons", "soon"]) == 2
    assert "horizon 'soon'" in capsys.readouterr().err
    assert main(["forecast", "--lead", "a.gz"]) == 2
    assert "--lead and --lag go together" in capsys.readouterr().err
    assert main(["forecast", "--events", "30000", "--models", "svm"]) == 2
    assert main(["forecast", "--events", "30000", "--features", "nope"]) == 2
    assert "unknown feature" in capsys.readouterr().err


def test_logit_does_not_diverge_on_separable_data():
    # a perfectly separating feature: plain Newton runs off to infinity; step halving and the
    # ridge keep the coefficients finite, with the right sign
    x = np.linspace(-1, 1, 400)
    A = np.column_stack([np.ones_like(x), x])
    w = fc._logit_fit(A, (x > 0).astype(float))
    assert np.all(np.isfinite(w)) and w[1] > 1 and abs(w[0]) < 1e-6
    # and walk() with it predicts the right sign in every segment
    y = np.where(x > 0, 1.0, -1.0)
    rng = np.random.default_rng(0)
    order = rng.permutation(400)
    t = np.arange(400)
    yh, _, _ = fc.walk(x[order][:, None], y[order], t, t, t + 1, fc._segments(400, 8),
                       model="logit", min_train=20)
    ok = np.isfinite(yh)
    # (a few rows with x next to 0 may fall on the wrong side of a fitted threshold)
    assert ok.sum() > 250 and np.mean(np.sign(yh[ok]) == y[order][ok]) > 0.97


def test_cli_forecast_plot_and_parquet(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pq = pytest.importorskip("pyarrow.parquet")
    png, out = tmp_path / "f.png", tmp_path / "f.parquet"
    assert main(["forecast", "--events", "20000", "--horizons", "move,1s", "--boot", "20",
                 "--features", "qi1,micro", "--plot", str(png), "--out", str(out)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t = pq.read_table(out).to_pydict()
    # 2 horizons x (3 feature sets x 2 models + 4 baselines)
    assert len(t["horizon"]) == 2 * (3 * 2 + 4)
    assert set(t["model"]) == {"ols", "logit", "baseline"}
    assert not list(tmp_path.glob(".*.tmp"))           # atomic writes leave no temporary


@pytest.mark.parametrize("name,levels", [("LOBSTER_SampleFile_AMZN_2012-06-21_5.zip", 5),
                                         ("LOBSTER_SampleFile_GOOG_2012-06-21_10.zip", 3)])
def test_lobster_depth_reaches_the_depth_feature(name, levels):
    """A LOBSTER file with L levels gives ``load`` the top ``min(levels, L)`` levels of its
    order-book file (not only the best), so ``qi_depth`` is computed on them: by hand here,
    sum_m 0.5**m (q_b,m - q_a,m) / sum_m 0.5**m (q_b,m + q_a,m) over the file's own columns."""
    path = data_file("lobster", name)
    ev = fc.load(str(path), levels=levels)
    m = feeds.read_lobster(path)
    assert ev.bid_sz.shape == (len(m), levels)
    for f in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        np.testing.assert_array_equal(getattr(ev, f), getattr(m, f)[:, :levels], err_msg=f)
    f, _ = fc.feature_table(ev, levels=levels)
    w = 0.5 ** np.arange(levels)
    i = np.flatnonzero(m.bid_sz[:, 1] != m.ask_sz[:, 1])[:1000]   # rows where level 2 matters
    b, a = m.bid_sz[i, :levels] @ w, m.ask_sz[i, :levels] @ w
    np.testing.assert_allclose(f["qi_depth"][i], (b - a) / (b + a), rtol=0, atol=1e-15)
    assert not np.array_equal(f["qi_depth"], f["qi1"])
    res = fc.forecast(str(path), horizons=("move",), models=("logit",),
                      features=("qi1", "qi_depth"), n_boot=20, levels=levels)
    r = res.get("move", "qi_depth", "logit")
    assert r["n"] > 10_000 and r["hit_lo"] > 0.5      # above chance on these stocks


def test_level_one_inputs_have_no_depth_feature():
    """One level (a level-1 LOBSTER zip, the one-level simulator): no ``qi_depth`` column."""
    ev = fc.load(str(data_file("lobster", "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip")))
    assert ev.bid_sz.shape[1] == 1
    assert "qi_depth" not in fc.feature_table(ev)[0]
    ev = fc.load(None, events=5_000, levels=1)
    assert ev.bid_sz.shape[1] == 1 and "qi_depth" not in fc.feature_table(ev)[0]
    ev = fc.load(None, events=5_000, levels=5)                   # the simulator's own depth
    assert ev.bid_sz.shape[1] == 5 and "qi_depth" in fc.feature_table(ev)[0]
