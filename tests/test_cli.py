"""The ``ofi-fast`` command, run in a subprocess as a user would, checked against the library.

Every printed number is recomputed here from the public API by an independent path:
best-quote feeds through ``ofi_fast.l1_ofi`` + ``ofi_fast.bars`` (LOBSTER parsed with
``np.loadtxt``, not the package's reader), L2 feeds by replaying the reader's deltas into a
plain ``ofi_fast.Book`` message by message and taking ``l1_ofi`` of the best quotes between
messages (the CLI uses ``BookOFI`` with ``batch_end``), the fit by ``ofi_fast.fit_impact`` and
``np.polyfit``, the out-of-sample numbers by refitting ``np.polyfit`` in a loop, VPIN by
``ofi_fast.vpin``; every error path must print one line and exit 2.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import ofi_fast
from ofi_fast import cli, feeds, pipeline
from ofi_fast.feeds import FLAG_BATCH_END, FLAG_SNAPSHOT
from ofi_fast.feeds.lobster import midnight_ns
from ofi_fast.simulate import simulate

from conftest import REPO, data_file

LOB = "lobster"
MSG10 = "AAPL_2012-06-21_34200000_57600000_message_10.csv"
BOOK10 = "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
NS = 1_000_000_000
SIM_EVENTS = 200_000
DAY = midnight_ns("2012-06-21")          # LOBSTER times: New York trading day, epoch ns


def run(*args, pre="", cwd=REPO):
    """Run ``python -m ofi_fast ARGS`` (or, with ``pre``, main() after some setup code)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="120")
    if pre:
        cmd = [sys.executable, "-c", f"{pre}\nimport sys\nfrom ofi_fast.cli import main\n"
               f"sys.exit(main({list(args)!r}))"]
    else:
        cmd = [sys.executable, "-m", "ofi_fast", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def run_in(*args):
    """``main(args)`` in this process (no interpreter start-up: for the many error paths);
    an exception escaping main fails the test, as a traceback would."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def table_of(stdout):
    """The summary table's rows as {label: value}; bar counts dropped from the labels
    ("R^2 (in sample, 266 bars)" -> "R^2 (in sample)")."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r" {2,4}(\S.*?)\s{2,}(\S.*)$", line)
        if m:
            rows[re.sub(r", [\d,]+ bars\)", ")", m.group(1))] = m.group(2)
    return rows


def number(s):
    return float(s.replace(",", "").split()[0])


def ols(x, y):
    beta, alpha = np.polyfit(x, y, 1)
    res = y - alpha - beta * x
    return beta, alpha, 1 - res @ res / ((y - y.mean()) @ (y - y.mean()))


def ffill(a):
    a = a.copy()
    for i in range(1, a.shape[0]):
        if np.isnan(a[i]):
            a[i] = a[i - 1]
    return a


def ffill_from(v, a, j):
    """``v`` with NaN replaced by the CSV's carried close of the bar before (CLI semantics)."""
    v = v.copy()
    bad = np.isnan(v)
    v[bad] = a["mid_close"][j[bad] - 1]
    return v


def library_bars(ts, bid_px, bid_sz, ask_px, ask_sz, every):
    """OFI and dmid per clock bar from the public API alone."""
    e = ofi_fast.l1_ofi(bid_px, bid_sz, ask_px, ask_sz)
    b = ofi_fast.bars(ts, e, every=every)
    mid = 0.5 * (bid_px + ask_px)
    ok = np.isfinite(mid)
    m = ofi_fast.bars(ts[ok], mid[ok], every=every)
    assert np.array_equal(m.start, b.start)       # no bar without a valid mid at the edges
    close = ffill(m.last)
    dmid = np.diff(np.concatenate([[mid[ok][0]], close]))
    return b, close, dmid


def refit_oos(x, y, k):
    """Walk-forward by brute force: polyfit on bars < t, predict bar t (same-bar OFI)."""
    pred, bench = [], []
    for t in range(k, x.shape[0]):
        beta, alpha = np.polyfit(x[:t], y[:t], 1)
        pred.append(alpha + beta * x[t])
        bench.append(y[:t].mean())
    pred, bench, yt = np.array(pred), np.array(bench), y[k:]
    nz = (yt != 0) & (pred != 0)
    return (1 - ((yt - pred) ** 2).sum() / ((yt - bench) ** 2).sum(),
            (np.sign(pred[nz]) == np.sign(yt[nz])).mean())


def refit_forecast(x, y, k):
    """Next-bar forecast by brute force: pair i = (ofi_i, dmid_{i+1}); trained on pairs j < i
    (their target ended when pair i's starts), forecast once k pairs are available."""
    X, Y = x[:-1], y[1:]
    pred, bench, yt = [], [], []
    for i in range(k, X.shape[0]):
        beta, alpha = np.polyfit(X[:i], Y[:i], 1)
        pred.append(alpha + beta * X[i])
        bench.append(Y[:i].mean())
        yt.append(Y[i])
    pred, bench, yt = map(np.array, (pred, bench, yt))
    nz = (yt != 0) & (pred != 0)
    return (1 - ((yt - pred) ** 2).sum() / ((yt - bench) ** 2).sum(),
            (np.sign(pred[nz]) == np.sign(yt[nz])).mean(), len(yt))


def bar_vpin_oracle(buy, sell, start, n_buckets=50):
    vol = buy + sell
    has = vol > 0
    bk = ofi_fast.vpin(start[has], vol[has], buy_fraction=buy[has] / vol[has],
                       bucket_volume=vol.sum() / (4 * n_buckets), n_buckets=n_buckets)
    v = bk.vpin[np.isfinite(bk.vpin)]
    return bk, v


def check_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ofi-fast: error: ") and "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def _has(mod):
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- analyze on the simulator

@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    have_mpl = _has("matplotlib")
    args = ["analyze", "--events", str(SIM_EVENTS), "--out", str(d / "bars.csv")]
    if have_mpl:
        args += ["--plot", str(d / "fig.png")]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    sim = simulate(SIM_EVENTS, seed=0, levels=5)
    b, close, dmid = library_bars(sim.ts, *sim.best(), 10 * NS)
    return r, d, sim, b, close, dmid, have_mpl


def test_analyze_default_prints_library_numbers(sim_run):
    r, d, sim, b, close, dmid, _ = sim_run
    t = table_of(r.stdout)
    assert number(t["events"]) == SIM_EVENTS
    assert number(t["trades"]) == sim.trade_ts.shape[0]
    assert t["bars (10 s)"] == f"{len(b):,} ({int((b.count == 0).sum()):,} empty)"
    beta, alpha, r2 = ols(b.sum, dmid)
    f = ofi_fast.fit_impact(b.sum, dmid)
    assert f.beta == pytest.approx(beta, rel=1e-9) and f.r2 == pytest.approx(r2, rel=1e-9)
    assert number(t["beta (dmid per unit of OFI)"]) == pytest.approx(beta, rel=1e-5)
    assert number(t["alpha"]) == pytest.approx(alpha, rel=1e-4, abs=1e-9)
    assert number(t["R^2 (in sample)"]) == pytest.approx(r2, abs=6e-5)
    tp, tr = (float(v) for v in t[f"t(beta) plain / Newey-West({f.lags})"].split(" / "))
    assert tp == pytest.approx(f.t_beta, abs=0.006)
    assert tr == pytest.approx(f.t_beta_robust, abs=0.006)
    assert r2 > 0.3
    oos, hit = refit_oos(b.sum, dmid, 50)
    assert number(t["OOS R^2 (same-bar OFI, past fit)"]) == pytest.approx(oos, abs=6e-5)
    assert number(t["hit rate (sign of dmid)"]) == pytest.approx(hit, abs=6e-5)
    assert 0.3 < oos <= 1.0 and 0.5 < hit <= 1.0
    fr2, fhit, nf = refit_forecast(b.sum, dmid, 50)
    assert number(t["forecast R^2 (next bar)"]) == pytest.approx(fr2, abs=6e-5)
    assert number(t["hit rate (sign of next dmid)"]) == pytest.approx(fhit, abs=6e-5)
    assert f"forecast R^2 (next bar, {nf:,} bars)" in r.stdout
    # trade flow: the simulator's true aggressor sides
    buy = sim.trade_size[sim.trade_side > 0].sum()
    sell = sim.trade_size[sim.trade_side < 0].sum()
    bs = t["buy / sell volume (imbalance)"]
    assert bs == f"{buy:,.0f} / {sell:,.0f} ({(buy - sell) / (buy + sell):+.4f})"
    lo, med, hi = (float(v) for v in t["trade imbalance min / median / max"].split(" / "))
    assert -1 <= lo <= med <= hi <= 1


def test_analyze_csv_holds_the_bars(sim_run):
    r, d, sim, b, close, dmid, _ = sim_run
    a = np.genfromtxt(d / "bars.csv", delimiter=",", names=True)
    assert a.dtype.names == ("start_ns", "events", "ofi", "mid_open", "mid_close", "dmid",
                             "n_trades", "buy_volume", "sell_volume", "trade_imbalance", "vpin",
                             "valid")
    np.testing.assert_array_equal(a["start_ns"].astype(np.int64), b.start)
    np.testing.assert_array_equal(a["events"], b.count)
    np.testing.assert_array_equal(a["ofi"], b.sum)            # integer sums: exact
    np.testing.assert_allclose(a["mid_close"], close, rtol=1e-12)
    np.testing.assert_allclose(a["dmid"], dmid, atol=1e-9)
    # trade volumes per bar, from the simulator's trade arrays
    k = (sim.trade_ts // (10 * NS)) - b.start[0] // (10 * NS)
    buy = np.bincount(k, np.where(sim.trade_side > 0, sim.trade_size, 0), minlength=len(b))
    sell = np.bincount(k, np.where(sim.trade_side < 0, sim.trade_size, 0), minlength=len(b))
    np.testing.assert_array_equal(a["buy_volume"], buy)
    np.testing.assert_array_equal(a["sell_volume"], sell)
    np.testing.assert_array_equal(a["n_trades"], np.bincount(k, minlength=len(b)))
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(a["trade_imbalance"], (buy - sell) / (buy + sell),
                                   rtol=1e-11)
    # VPIN: bars as trades of their volume and buy share, buckets of total / 200
    bk, v = bar_vpin_oracle(buy, sell, b.start)
    t = table_of(r.stdout)
    assert t["VPIN min / median / max (true sides)"] == (
        f"{v.min():.4f} / {np.median(v):.4f} / {v.max():.4f}")
    assert bk.ts.shape[0] >= 199 and 0 < v.min() <= v.max() <= 1
    idx = np.searchsorted(bk.ts, b.start, side="right") - 1
    want = np.where(idx >= 0, bk.vpin[np.maximum(idx, 0)], np.nan)
    np.testing.assert_allclose(a["vpin"], want, rtol=1e-11)
    assert "bar table written to" in r.stdout


def test_analyze_png(sim_run):
    r, d, *_, have_mpl = sim_run
    if not have_mpl:
        pytest.skip("matplotlib not installed")
    png = d / "fig.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg
    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 800
    assert img[..., :3].std() > 0.05            # not a blank canvas


def test_analyze_json_and_chunking_agree(sim_run):
    r = run("analyze", "--events", str(SIM_EVENTS), "--json", "--chunk-size", "7777")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    t = table_of(sim_run[0].stdout)
    assert s["events"] == SIM_EVENTS and s["bars"] == len(sim_run[3])
    assert f"{s['r2']:.4f}" == t["R^2 (in sample)"]
    assert f"{s['beta']:.6g}" == t["beta (dmid per unit of OFI)"]
    assert f"{s['vpin_median']:.4f}" == t["VPIN min / median / max (true sides)"].split(" / ")[1]
    assert s["vpin_method"] == "true sides" and s["vpin_n_buckets"] == 50


def test_vpin_options_and_bvc(tmp_path):
    """--vpin-bucket/--vpin-buckets are used as given; trades without sides -> BVC."""
    sim = simulate(40_000, seed=2, levels=1)
    r = run("analyze", "--events", "40000", "--seed", "2", "--levels", "1", "--every", "1",
            "--vpin-bucket", "5000", "--vpin-buckets", "10", "--json")
    s = json.loads(r.stdout)
    b = ofi_fast.bars(sim.trade_ts, sim.trade_size, every=NS)
    buy = ofi_fast.bars(sim.trade_ts, np.where(sim.trade_side > 0, sim.trade_size, 0), every=NS)
    has = b.sum > 0
    bk = ofi_fast.vpin(b.start[has], b.sum[has], buy_fraction=buy.sum[has] / b.sum[has],
                       bucket_volume=5000, n_buckets=10)
    v = bk.vpin[np.isfinite(bk.vpin)]
    assert s["vpin_bucket_volume"] == 5000 and s["vpin_buckets_closed"] == bk.ts.shape[0]
    assert s["vpin_min"] == pytest.approx(v.min(), rel=1e-12)
    assert s["vpin_max"] == pytest.approx(v.max(), rel=1e-12)
    # the same trades without their sides, in a CSV next to the quotes: BVC on bar prices
    q, tr = _sim_csvs(tmp_path, sim, sides=False)
    r = run("analyze", str(q), str(tr), "--every", "1", "--vpin-bucket", "5000",
            "--vpin-buckets", "10", "--json", "--ts-unit", "ns")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["vpin_method"] == "BVC" and s["trades_unsided"] == sim.trade_ts.shape[0]
    last = ofi_fast.bars(sim.trade_ts, sim.trade_price, every=NS).last
    bv = ofi_fast.bvc(b.start[has], last[has], b.sum[has], every=NS)
    frac = bv.buy_fraction[(b.start[has] - bv.start[0]) // NS]
    bk = ofi_fast.vpin(b.start[has], b.sum[has], buy_fraction=frac, bucket_volume=5000,
                       n_buckets=10)
    v = bk.vpin[np.isfinite(bk.vpin)]
    assert s["vpin_median"] == pytest.approx(np.median(v), rel=1e-12)


def test_json_is_strict_when_numbers_are_missing():
    r = run("analyze", "--events", "3000", "--every", "100000", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert s["bars"] == 1 and s["beta"] is None and s["oos_r2"] is None


def test_python_m_and_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("ofi-fast ")
    r = run("--help")
    assert r.returncode == 0 and "analyze" in r.stdout and "stream" in r.stdout
    r = run("analyze", "--help")
    for fmt in feeds.FORMATS:
        assert fmt in r.stdout


# ---------------------------------------------------------------- generic CSV quotes + trades

def _sim_csvs(tmp_path, sim, sides=True, iso=False):
    bp, bs, ap, az = sim.best()
    q = tmp_path / "quotes.csv"
    with open(q, "w") as fh:
        fh.write("timestamp,bid,bid_size,ask,ask_size\n")
        for row in zip(sim.ts.tolist(), bp.tolist(), bs.tolist(), ap.tolist(), az.tolist()):
            fh.write("%d,%r,%r,%r,%r\n" % row)
    tr = tmp_path / "trades.csv"
    with open(tr, "w") as fh:
        fh.write("time,price,qty" + (",side" if sides else "") + "\n")
        for t, p, z, s in zip(sim.trade_ts.tolist(), sim.trade_price.tolist(),
                              sim.trade_size.tolist(), sim.trade_side.tolist()):
            ts = f"{t // NS}.{t % NS:09d}" if iso else str(t)
            fh.write(f"{ts},{p!r},{z!r}" + (f",{'buy' if s > 0 else 'sell'}" if sides else "")
                     + "\n")
    return q, tr


def test_analyze_csv_quotes_and_trades_equal_the_simulator(tmp_path):
    """The same events as CSV files (quotes + trades, timestamps in two units) give the same
    summary as the embedded simulator, whatever the chunk size."""
    sim = simulate(20_000, seed=4, levels=1)
    q, tr = _sim_csvs(tmp_path, sim, iso=True)
    a = run("analyze", "--events", "20000", "--seed", "4", "--levels", "1", "--every", "1",
            "--json")
    b = run("analyze", str(tr), str(q), "--every", "1", "--json", "--chunk-size", "3000",
            "--ts-unit", "ns")
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    sa, sb = json.loads(a.stdout), json.loads(b.stdout)
    for k in ("events", "trades", "bars", "beta", "r2", "oos_r2", "forecast_r2", "vpin_median",
              "buy_volume", "sell_volume", "trade_imbalance_median"):
        assert sa[k] == sb[k], k
    # column names given explicitly
    c = run("analyze", str(q), "--every", "1", "--json", "--columns",
            "ts=timestamp,bid_px=bid,bid_sz=bid_size,ask_px=ask,ask_sz=ask_size", "--ts-unit", "ns")
    assert json.loads(c.stdout)["beta"] == sa["beta"]


def test_analyze_parquet_quotes_and_trades(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    sim = simulate(20_000, seed=4, levels=1)
    bp, bs, ap, az = sim.best()
    pq.write_table(pa.table({"ts": sim.ts, "bid": bp, "bid_size": bs, "ask": ap,
                             "ask_size": az}), tmp_path / "q.parquet")
    pq.write_table(pa.table({"ts": sim.trade_ts, "price": sim.trade_price,
                             "size": sim.trade_size, "side": sim.trade_side}),
                   tmp_path / "t.parquet")
    a = run("analyze", "--events", "20000", "--seed", "4", "--levels", "1", "--every", "1",
            "--json")
    b = run("analyze", str(tmp_path / "q.parquet"), str(tmp_path / "t.parquet"), "--every", "1",
            "--ts-unit", "ns", "--json")
    assert b.returncode == 0, b.stderr
    sa, sb = json.loads(a.stdout), json.loads(b.stdout)
    for k in ("events", "trades", "bars", "beta", "r2", "vpin_median", "buy_volume"):
        assert sa[k] == sb[k], k


# ---------------------------------------------------------------- analyze on real LOBSTER data

def _lobster_arrays(msg_path, book_path):
    msg = np.loadtxt(msg_path, delimiter=",")
    book = np.loadtxt(book_path, delimiter=",")
    ts = DAY + np.rint(msg[:, 0] * NS).astype(np.int64)
    ask_px, ask_sz, bid_px, bid_sz = book[:, 0] / 1e4, book[:, 1], book[:, 2] / 1e4, book[:, 3]
    return msg, ts, bid_px, bid_sz, ask_px, ask_sz


def test_analyze_lobster_pair(tmp_path):
    m, bk = data_file(LOB, MSG10), data_file(LOB, BOOK10)
    msg, ts, bp, bs, ap, az = _lobster_arrays(m, bk)
    assert np.all(np.abs(bp) < 1e5) and np.all(np.abs(ap) < 1e5)   # no empty level here
    out = tmp_path / "a.csv"
    r = run("analyze", str(m), str(bk), "--every", "1", "--min-train", "10", "--out", str(out))
    assert r.returncode == 0, r.stderr
    t = table_of(r.stdout)
    assert number(t["events"]) == 999
    assert number(t["trades"]) == np.isin(msg[:, 1], (4, 5)).sum() == 159
    b, close, dmid = library_bars(ts, bp, bs, ap, az, NS)
    beta, alpha, r2 = ols(b.sum, dmid)
    assert number(t["beta (dmid per unit of OFI)"]) == pytest.approx(beta, rel=1e-5)
    assert number(t["R^2 (in sample)"]) == pytest.approx(r2, abs=6e-5)
    oos, hit = refit_oos(b.sum, dmid, 10)
    assert number(t["OOS R^2 (same-bar OFI, past fit)"]) == pytest.approx(oos, abs=6e-5)
    a = np.genfromtxt(out, delimiter=",", names=True)
    np.testing.assert_array_equal(a["start_ns"].astype(np.int64), b.start)
    np.testing.assert_array_equal(a["ofi"], b.sum)
    np.testing.assert_array_equal(a["events"], b.count)
    # aggressor side: an execution of a sell (-1) limit order is a buy
    ex = np.isin(msg[:, 1], (4, 5))
    k = ts[ex] // NS - ts[0] // NS
    buy = np.bincount(k, np.where(msg[ex, 5] == -1, msg[ex, 3], 0), minlength=len(b))
    np.testing.assert_array_equal(a["buy_volume"], buy)
    # one file finds its pair; the order of the pair does not matter
    r1 = run("analyze", str(m), "--every", "1", "--min-train", "10")
    r2_ = run("analyze", str(bk), str(m), "--every", "1", "--min-train", "10")

    def strip(s):
        return [ln for ln in s.splitlines()
                if not any(w in ln for w in ("elapsed", "input", "written"))]
    assert strip(r1.stdout) == strip(r.stdout) == strip(r2_.stdout)


def test_analyze_lobster_unnamed_pair(tmp_path):
    """A pair whose names carry no date: times are read as ns after midnight."""
    shutil.copy(data_file(LOB, MSG10), tmp_path / "m.csv")
    shutil.copy(data_file(LOB, BOOK10), tmp_path / "b.csv")
    r = run("analyze", str(tmp_path / "m.csv"), str(tmp_path / "b.csv"), "--format", "lobster",
            "--every", "1", "--json")
    assert r.returncode == 0, r.stderr
    msg, ts, *q = _lobster_arrays(data_file(LOB, MSG10), data_file(LOB, BOOK10))
    b, close, dmid = library_bars(ts - DAY, *q, NS)
    s = json.loads(r.stdout)
    assert s["events"] == 999 and s["beta"] == pytest.approx(ofi_fast.fit_impact(
        b.sum, dmid).beta, rel=1e-12)


def test_analyze_lobster_zip():
    z = data_file(LOB, "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip")
    r = run("analyze", str(z), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # counts from the data README: 49,482 messages, 7,765 + 3,913 executions
    assert s["events"] == 49_482 and s["trades"] == 7_765 + 3_913
    with zipfile.ZipFile(z) as zf:
        name = "GOOG_2012-06-21_34200000_57600000_"
        msg = np.loadtxt(zf.open(name + "message_1.csv"), delimiter=",")
        book = np.loadtxt(zf.open(name + "orderbook_1.csv"), delimiter=",")
    ts = DAY + np.rint(msg[:, 0] * NS).astype(np.int64)
    ap, az, bp, bs = (book[:, j].copy() for j in range(4))
    ea, eb = ap >= 9999999999, bp <= -9999999999
    ap, bp = ap / 1e4, bp / 1e4
    ap[ea], az[ea], bp[eb], bs[eb] = np.nan, 0, np.nan, 0
    b, close, dmid = library_bars(ts, bp, bs, ap, az, 10 * NS)
    f = ofi_fast.fit_impact(b.sum, dmid)
    beta, alpha, r2 = ols(b.sum, dmid)
    assert s["beta"] == pytest.approx(beta, rel=1e-9) == f.beta
    assert s["r2"] == pytest.approx(r2, rel=1e-9)
    assert s["t_beta_robust"] == pytest.approx(f.t_beta_robust, rel=1e-12)
    assert s["r2"] > 0.1 and s["beta"] > 0      # OFI explains GOOG's mid moves too
    ex = np.isin(msg[:, 1], (4, 5))
    side = -msg[ex, 5]
    assert s["buy_volume"] == msg[ex, 3][side > 0].sum()
    assert s["sell_volume"] == msg[ex, 3][side < 0].sum()


# ---------------------------------------------------------------- analyze on real L2 feeds

CB = ("cryptofeed_sample_data", "COINBASE.ws.28.0")
L2_CASES = {
    # name: (files, reader of (depth, trades), clock, --format or None)
    "binance_spot": ([("binance_hftbacktest", "spot", "btcusdt_20240808.gz")],
                     lambda f: feeds.read_binance(f[0])[:2], "local"),
    "binance_cryptofeed": ([("cryptofeed_sample_data", "BINANCE.http.0.0"),
                            ("cryptofeed_sample_data", "BINANCE.ws.1.0")],
                           lambda f: feeds.read_binance(f[1], snapshots=f[0])[:2], "local"),
    "coinbase": ([CB], lambda f: tuple(feeds.read_coinbase(f[0])), "local"),
    "kraken": ([("cryptofeed_sample_data", "KRAKEN.ws.50.0")],
               lambda f: (feeds.read_kraken_book(f[0]), None), "local"),
    "tardis": ([("tardis", "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050"
                 ".csv"), ("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")],
               lambda f: (feeds.read_tardis(f[0]), feeds.read_tardis(f[1])), "local"),
    "bitstamp": ([("bitstamp_ob_analytics", "orders.csv.gz"),
                  ("bitstamp_ob_analytics", "trades.csv")],
                 lambda f: (feeds.read_bitstamp_l3(f[0]), feeds.read_bitstamp_trades(f[1])),
                 "exchange"),
}


def l2_oracle(depth, tick, clock):
    """Replay deltas into a plain Book one message at a time; best quotes after the snapshot
    and after every complete message; e_n = l1_ofi between consecutive states."""
    snap = (depth.flags & FLAG_SNAPSHOT) != 0
    be = (depth.flags & FLAG_BATCH_END) != 0
    ts = depth.ts_local if clock == "local" else depth.ts_exchange
    n_snap = int(np.argmin(snap)) if snap.any() else 0
    assert not snap[n_snap:].any()                    # one snapshot, at the start
    book = ofi_fast.Book(tick, crossed="keep")
    states, mts = [], []
    if n_snap:
        s, p, z = depth.side[:n_snap], depth.price[:n_snap], depth.size[:n_snap]
        book.load_snapshot(p[s > 0], z[s > 0], p[s < 0], z[s < 0])
        states.append((book.best_bid, book.best_bid_size, book.best_ask, book.best_ask_size))
    apply = book.apply
    side, price, size = depth.side.tolist(), depth.price.tolist(), depth.size.tolist()
    for i in range(n_snap, len(depth)):
        apply(side[i], price[i], size[i])
        if be[i]:
            states.append((book.best_bid, book.best_bid_size, book.best_ask,
                           book.best_ask_size))
            mts.append(ts[i])
    q = np.array(states).T.copy()
    e = ofi_fast.l1_ofi(*q)
    mid = 0.5 * (q[0] + q[2])
    if n_snap:
        return np.array(mts), e[1:], mid[1:], mid[0], len(depth) - n_snap
    return np.array(mts), e, mid, np.nan, len(depth)


@pytest.mark.parametrize("name", list(L2_CASES))
def test_analyze_l2_feed(name, tmp_path):
    files, read, clock = L2_CASES[name]
    paths = [data_file(*f) for f in files]
    out = tmp_path / "bars.csv"
    every = 10 * NS if name.startswith("binance_") and name != "binance_cryptofeed" else NS
    r = run("analyze", *map(str, paths), "--every", str(every / NS), "--min-train", "10",
            "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    depth, trades = read([str(p) for p in paths])
    tick = s["tick_size"]
    mts, e, mid, first_mid, n_rows = l2_oracle(depth, tick, clock)
    assert s["events"] == n_rows and s["messages"] == len(mts)
    a = np.genfromtxt(out, delimiter=",", names=True)
    start = a["start_ns"].astype(np.int64)
    b = ofi_fast.bars(mts, e, every=every)
    j = (b.start - start[0]) // every
    np.testing.assert_allclose(a["ofi"][j], b.sum, rtol=1e-9, atol=1e-9)
    others = np.setdiff1d(np.arange(len(start)), j)
    assert not a["ofi"][others].any()
    # mid_close: the mid after each bar's last message (NaN if a side is empty then)
    k = mts // every
    last = np.r_[k[1:] != k[:-1], True]
    np.testing.assert_allclose(a["mid_close"][k[last] - start[0] // every],
                               ffill_from(mid[last], a, k[last] - start[0] // every),
                               rtol=2e-16, atol=0)
    ok = np.isfinite(mid)
    # dmid: the close carried over empty bars, minus the previous close (the snapshot's mid
    # before the first bar)
    close = a["mid_close"]
    fm = first_mid if np.isfinite(first_mid) else mid[ok][0]
    np.testing.assert_allclose(a["dmid"], np.diff(np.r_[fm, close]), atol=1e-9)
    f = ofi_fast.fit_impact(a["ofi"], a["dmid"])
    for k in ("beta", "alpha", "r2", "t_beta", "t_beta_robust"):
        want = getattr(f, k)
        if np.isnan(want):
            assert s[k] is None
        else:
            assert s[k] == pytest.approx(want, rel=1e-9, abs=1e-15), k
    if trades is not None and len(trades):
        tts = trades.ts_local if clock == "local" else trades.ts_exchange
        assert s["trades"] == len(trades) and s["vpin_method"] == "true sides"
        tk = (tts // every - start[0] // every)
        buy = np.bincount(tk, np.where(trades.side > 0, trades.size, 0), minlength=len(start))
        sell = np.bincount(tk, np.where(trades.side < 0, trades.size, 0), minlength=len(start))
        np.testing.assert_allclose(a["buy_volume"], buy, rtol=1e-12)
        np.testing.assert_allclose(a["sell_volume"], sell, rtol=1e-12)
        assert s["buy_volume"] == pytest.approx(trades.size[trades.side > 0].sum(), rel=1e-12)
        bk, v = bar_vpin_oracle(buy, sell, start)
        if v.size:
            assert s["vpin_median"] == pytest.approx(np.median(v), rel=1e-12)
    else:
        assert s["trades"] == 0 and s["vpin_min"] is None


def test_l2_chunking_does_not_change_the_bars(tmp_path):
    f = data_file("binance_hftbacktest", "spot", "btcusdt_20240808.gz")
    outs = []
    for chunk in ("1000000", "997"):
        out = tmp_path / f"b{chunk}.csv"
        r = run("analyze", str(f), "--chunk-size", chunk, "--every", "1", "--out", str(out))
        assert r.returncode == 0, r.stderr
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_detect_format():
    cases = {"lobster": [(LOB, MSG10), (LOB, "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip")],
             "binance": [("binance_hftbacktest", "spot", "btcusdt_20240808.gz"),
                         ("cryptofeed_sample_data", "BINANCE.ws.1.0")],
             "coinbase": [CB], "kraken": [("cryptofeed_sample_data", "KRAKEN.ws.50.0")],
             "tardis": [L2_CASES["tardis"][0][1]],
             "bitstamp": [("bitstamp_ob_analytics", "trades.csv"),
                          ("bitstamp_ob_analytics", "orders.csv.gz")]}
    for fmt, fs in cases.items():
        for f in fs:
            assert feeds.detect_format([data_file(*f)]) == fmt, f


def test_infer_tick_size():
    assert feeds.infer_tick_size([61828.02, 61828.5, 61830.0]) == pytest.approx(1e-4)
    assert feeds.infer_tick_size([100.0, 101.0]) == pytest.approx(1e-2)
    assert feeds.infer_tick_size([0.00001234]) == pytest.approx(1e-10)
    for p in (61828.02, 61828.5):   # every sample price lies on the grid
        x = p / feeds.infer_tick_size([61828.02, 61828.5])
        assert abs(x - round(x)) < 1e-6


# ---------------------------------------------------------------- stream and bench

def _stream_rows(stdout):
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"\s*(\d\d:\d\d:\d\d\.\d{3})\s+(\d+)\s+(\d+)\s+([+-][\d.e+-]+)\s+"
                     r"([+-][\d.e+-]+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(3)), float(m.group(4))))
    return rows


def test_stream_simulator_matches_bars():
    r = run("stream", "--events", "20000")
    assert r.returncode == 0, r.stderr
    sim = simulate(20_000, seed=0, levels=5)
    e = ofi_fast.l1_ofi(*sim.best())
    b = ofi_fast.bars(sim.ts, e, every=10 * NS)
    tb = ofi_fast.bars(sim.trade_ts, sim.trade_size, every=10 * NS)
    rows = _stream_rows(r.stdout)
    assert [n for n, _, _ in rows] == b.count.tolist()
    assert [o for _, _, o in rows] == b.sum.tolist()
    assert [t for _, t, _ in rows] == tb.count.tolist()
    lat = re.search(r"OFI\.update\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
    tfl = re.search(r"TradeFlow\.update\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
    floor = re.search(r"empty call \(floor\)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
    assert lat and floor and tfl
    p50, p99, p999 = (int(lat.group(i)) for i in (1, 2, 3))
    assert 0 < p50 <= p99 <= p999
    assert f"{len(sim):,} events, {len(sim.trade_ts):,} trades" in r.stdout
    # the last line's rolling windows are those of the library objects fed everything
    last = r.stdout.splitlines()[[i for i, ln in enumerate(r.stdout.splitlines())
                                  if _stream_rows(ln)][-1]]
    o = ofi_fast.OFI(window_time=NS, grow=True)
    o.update_many(sim.ts, *sim.best())
    tf = ofi_fast.TradeFlow(window_time=NS, grow=True, classify="tick")
    tf.update_many(sim.trade_ts, sim.trade_price, sim.trade_size, sim.trade_side)
    f = last.split()
    assert float(f[4]) == pytest.approx(o.value, rel=1e-5, abs=1e-9)
    assert float(f[5]) == pytest.approx(tf.imbalance, abs=6e-5)


def test_stream_lobster():
    m = data_file(LOB, MSG10)
    r = run("stream", str(m), "--every", "5")
    assert r.returncode == 0, r.stderr
    rows = _stream_rows(r.stdout)
    assert sum(n for n, _, _ in rows) == 999 and len(rows) == 10
    assert sum(t for _, t, _ in rows) == 159


def test_stream_l2_binance():
    f = data_file("binance_hftbacktest", "spot", "btcusdt_20240808.gz")
    r = run("stream", str(f), "--every", "30")
    assert r.returncode == 0, r.stderr
    depth, trades = feeds.read_binance(str(f))[:2]
    tick = feeds.infer_tick_size(depth.price[:65536])
    mts, e, *_ = l2_oracle(depth, tick, "local")
    b = ofi_fast.bars(mts, e, every=30 * NS)
    rows = _stream_rows(r.stdout)
    assert [n for n, _, _ in rows] == b.count.tolist()
    np.testing.assert_allclose([o for _, _, o in rows], b.sum, rtol=1e-5, atol=1e-5)
    assert sum(t for _, t, _ in rows) == len(trades)
    assert re.search(r"BookOFI\.update_many \(message\)\s+\d+", r.stdout)
    assert f"in {len(mts):,} messages, {len(trades):,} trades" in r.stdout


def test_bench():
    r = run("bench", "--events", "5000")
    assert r.returncode == 0, r.stderr
    for name in ("empty call (floor)", "OFI()", "OFI(window_time=1s)", "l1_ofi (batch)"):
        assert name in r.stdout
    p50 = int(re.search(r"OFI\(\)\s+(\d+)", r.stdout).group(1))
    floor = int(re.search(r"empty call \(floor\)\s+(\d+)", r.stdout).group(1))
    assert 0 < floor and 0 < p50 < 100_000


# ---------------------------------------------------------------- error paths: one line, exit 2

@pytest.fixture
def lobster_copy(tmp_path):
    m = data_file(LOB, MSG10)
    shutil.copy(m, tmp_path / MSG10)
    return tmp_path


@pytest.mark.parametrize("args, fragment", [
    (["analyze", "/no/such/file.csv"], "no such file"),
    (["stream", "/no/such/file.csv"], "no such file"),
    (["analyze", "/"], "is a directory"),
    (["analyze", "--bogus"], "unrecognized arguments: --bogus"),
    (["analyze", "--every", "0"], "--every"),
    (["analyze", "--every", "abc"], "--every"),
    (["analyze", "--events", "-5"], "--events"),
    (["analyze", "--format", "xyz"], "--format"),
    (["analyze", "--clock", "xyz"], "--clock"),
    (["analyze", "--vpin-bucket", "0"], "--vpin-bucket"),
    (["analyze", "--tick-size", "-1"], "--tick-size"),
    (["analyze", "--columns", "foo=bar", "x.csv"], "--columns"),
    (["bench", "--events", "0"], "--events"),
    (["frobnicate"], "invalid choice"),
    ([], "choose a command"),
    (["analyze", "--events", "1000", "--out", "/no/such/dir/bars.csv"], "does not exist"),
    (["analyze", "--events", "1000", "--out", "bars.xlsx"], "unknown output format"),
])
def test_usage_errors(args, fragment):
    check_one_line_error(run_in(*args), fragment)


def test_file_errors(tmp_path, lobster_copy):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello, world\n")
    check_one_line_error(run_in("analyze", str(txt)), "unknown format")
    bad_zip = tmp_path / "x.zip"
    bad_zip.write_bytes(b"not a zip")
    check_one_line_error(run_in("analyze", str(bad_zip)), "not a zip")
    other_zip = tmp_path / "y.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "x")
    check_one_line_error(run_in("analyze", str(other_zip)), "no LOBSTER")
    check_one_line_error(run_in("analyze", str(bad_zip), str(other_zip)), "one LOBSTER zip")
    check_one_line_error(run_in("analyze", str(lobster_copy / MSG10), str(txt), str(txt)),
                         "LOBSTER input is one zip")
    # a message file without its orderbook file
    check_one_line_error(run_in("analyze", str(lobster_copy / MSG10)), "does not exist")
    # an orderbook that does not match the messages
    book = np.loadtxt(data_file(LOB, BOOK10), delimiter=",")
    np.savetxt(lobster_copy / BOOK10, book[:500], delimiter=",", fmt="%d")
    check_one_line_error(run_in("analyze", str(lobster_copy / MSG10)),
                         "order-book file has 500 rows")
    np.savetxt(lobster_copy / BOOK10, book[:, :3], delimiter=",", fmt="%d")
    check_one_line_error(run_in("analyze", str(lobster_copy / MSG10)), "not the LOBSTER orderbook")
    # malformed and empty CSV
    bad = tmp_path / "bad_message_1.csv"
    bad.write_text("34200.1,1,1,100,5853300,1\n34200.2,1,oops,100,5853300,1\n")
    (tmp_path / "bad_orderbook_1.csv").write_text("1,2,3,4\n1,2,3,4\n")
    check_one_line_error(run_in("analyze", str(bad)), "bad_message_1.csv:2:", "oops")
    empty = tmp_path / "e_message_1.csv"
    empty.write_text("")
    (tmp_path / "e_orderbook_1.csv").write_text("")
    check_one_line_error(run_in("analyze", str(empty)), "empty")
    # time going backwards in the messages
    msg = np.loadtxt(data_file(LOB, MSG10), delimiter=",")
    msg[[10, 20]] = msg[[20, 10]]
    np.savetxt(tmp_path / "t_message_1.csv", msg, delimiter=",",
               fmt=["%.9f"] + ["%d"] * 5)
    np.savetxt(tmp_path / "t_orderbook_1.csv", book, delimiter=",", fmt="%d")
    check_one_line_error(run_in("analyze", str(tmp_path / "t_message_1.csv")),
                         "time goes backwards")
    # CSV without recognisable columns; a trades file alone
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,c\n1,2,3\n")
    check_one_line_error(run_in("analyze", str(csv), "--format", "csv"), "needs columns")
    tr = tmp_path / "t.csv"
    tr.write_text("ts,price,size\n1,2,3\n")
    check_one_line_error(run_in("analyze", str(tr)), "needs a quotes CSV")


def test_errors_from_the_real_entry_point():
    """The same one-line errors through ``python -m ofi_fast``."""
    check_one_line_error(run("analyze", "/no/such/file.csv"), "no such file")
    check_one_line_error(run("stream", "--every", "0"), "--every")


def test_feed_errors():
    tardis_tr = data_file("tardis", "tardis_binance_BTCUSDT_trades_2019-12-01_rows_1_100.csv")
    check_one_line_error(run_in("analyze", str(tardis_tr)), "needs its incremental_book_L2")
    check_one_line_error(run_in("analyze", str(tardis_tr), "--format", "binance"), "malformed")
    spot = data_file("binance_hftbacktest", "spot", "btcusdt_20240808.gz")
    check_one_line_error(run_in("analyze", str(spot), "--tick-size", "1"), "--tick-size")
    check_one_line_error(run_in("analyze", str(data_file(*CB)), "--format", "kraken"),
                         "no events")


def test_parquet_output(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "bars.parquet"
    r = run("analyze", "--events", "20000", "--every", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    import pyarrow as pa
    tab = pq.read_table(out)
    assert tab.schema.field("start").type == pa.timestamp("ns", tz="UTC")
    t = tab.to_pydict()
    t["start_ns"] = tab.column("start").cast(pa.int64()).to_pylist()
    sim = simulate(20_000, seed=0, levels=5)
    b, close, dmid = library_bars(sim.ts, *sim.best(), NS)
    assert t["ofi"] == b.sum.tolist() and t["events"] == b.count.tolist()
    assert t["start_ns"] == b.start.tolist()


def test_missing_optional_packages(tmp_path):
    block = "import sys\nsys.modules['matplotlib'] = None\nsys.modules['pyarrow'] = None"
    check_one_line_error(run("analyze", "--events", "1000", "--plot", str(tmp_path / "a.png"),
                             pre=block), "matplotlib")
    check_one_line_error(run("analyze", "--events", "1000", "--out",
                             str(tmp_path / "a.parquet"), pre=block), "pyarrow")
    assert not (tmp_path / "a.png").exists()


# ---------------------------------------------------------------- the model functions, in-process

def test_fit_model_matches_polyfit(rng):
    x = rng.normal(size=300) * 1000
    y = 2e-5 * x + rng.normal(size=300) * 0.01
    y[5] = np.nan
    f = pipeline.fit_model(x, y)
    ok = np.isfinite(y)
    beta, alpha, r2 = ols(x[ok], y[ok])
    assert f.n == 299
    assert f.beta == pytest.approx(beta, rel=1e-10)
    assert f.alpha == pytest.approx(alpha, rel=1e-8, abs=1e-14)
    assert f.r2 == pytest.approx(r2, rel=1e-10)
    res = y[ok] - alpha - beta * x[ok]
    se = np.sqrt(res @ res / (299 - 2) / ((x[ok] - x[ok].mean()) ** 2).sum())
    assert f.t_beta == pytest.approx(beta / se, rel=1e-8)
    assert np.isfinite(f.t_beta_robust)
    assert np.isnan(pipeline.fit_model([1, 1, 1, 1], [1, 2, 3, 4]).beta)
    assert np.isnan(pipeline.fit_model([1, 2], [1, 2]).t_beta)      # n < 3: no t-statistic


def test_walk_forward_matches_refit_loop(rng):
    n, k = 120, 20
    x = rng.normal(size=n) * 500
    y = 3e-5 * x + rng.normal(size=n) * 0.02
    w = pipeline.impact_oos(x, y, min_train=k)
    oos, hit = refit_oos(x, y, k)
    assert w["n_oos"] == n - k
    assert w["oos_r2"] == pytest.approx(oos, rel=1e-9)
    assert w["hit_rate"] == pytest.approx(hit)
    assert np.isnan(pipeline.impact_oos(x[:10], y[:10], min_train=20)["oos_r2"])


def test_forecast_has_no_look_ahead(rng):
    """The next-bar forecast cannot see its target: a y that OFI of the *same* bar explains
    perfectly gives no forecast skill, a y that the *previous* bar's OFI explains does."""
    n = 400
    x = rng.normal(size=n)
    start = np.arange(n, dtype=np.int64) * NS
    same = {"start_ns": start, "ofi": x, "dmid": 2 * x}
    lagged = {"start_ns": start, "ofi": x, "dmid": np.r_[0.0, 2 * x[:-1]]}
    f0 = pipeline.forecast(same, NS, 50)
    f1 = pipeline.forecast(lagged, NS, 50)
    assert f0["forecast_r2"] < 0.05 and f1["forecast_r2"] > 0.999
    fr2, fhit, nf = refit_forecast(x, 2 * x, 50)
    assert f0["n_forecast"] == nf and f0["forecast_r2"] == pytest.approx(fr2, rel=1e-9)


def test_bar_builder_chunk_invariant():
    sim = simulate(30_000, seed=5, levels=2)
    tables = []
    for chunk in (30_000, 1_000, 333):
        src = feeds.open(None, events=30_000, seed=5, levels=2, chunk_rows=chunk)
        bb = pipeline.BarBuilder(NS)
        for c in src.chunks():
            bb.add(c)
        tables.append(bb.table())
    for t in tables[1:]:
        for k in tables[0]:
            np.testing.assert_array_equal(t[k], tables[0][k])
    b, close, dmid = library_bars(sim.ts, *sim.best(), NS)
    np.testing.assert_array_equal(tables[0]["ofi"], b.sum)
    np.testing.assert_allclose(tables[0]["dmid"], dmid, atol=1e-12)


def test_stream_into_closed_pipe():
    """`ofi-fast stream | head -3` stops quietly with status 0."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "ofi_fast", "stream", "--events", "50000",
                          "--every", "0.01"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0
    assert first.startswith(b"ofi-fast stream") and b"Traceback" not in err and not err


def test_progress_is_silent_without_tty():
    assert cli._common._progress(True) is None     # stderr is not a TTY under pytest's capture


def test_stream_collapses_long_gaps():
    r = run("stream", "--events", "2000", "--every", "1e-6")
    assert r.returncode == 0, r.stderr
    gaps = re.findall(r"\(([\d,]+) empty bars up to", r.stdout)
    rows = _stream_rows(r.stdout)
    assert gaps and sum(n for n, _, _ in rows) == 2000
    # every bar is accounted for: printed bars + collapsed empty bars = the bar grid
    sim = simulate(2000, seed=0, levels=5)
    nbars = sim.ts[-1] // 1000 - sim.ts[0] // 1000 + 1
    assert len(rows) + sum(int(g.replace(",", "")) for g in gaps) == nbars
