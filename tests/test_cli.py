"""The ``ofi-fast`` command, run in a subprocess as a user would, checked against the library.

Every printed number is recomputed here from the public API (``ofi_fast.l1_ofi``,
``ofi_fast.bars``, the simulator) and a plain least-squares fit (``np.polyfit``), and the real
LOBSTER files are parsed independently with ``np.loadtxt``; every error path must print one
line and exit 2.
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
from ofi_fast import cli
from ofi_fast.simulate import simulate

from conftest import REPO, data_file

LOB = "lobster"
MSG10 = "AAPL_2012-06-21_34200000_57600000_message_10.csv"
BOOK10 = "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
NS = 1_000_000_000
SIM_EVENTS = 200_000


def run(*args, pre=""):
    """Run ``python -m ofi_fast ARGS`` (or, with ``pre``, main() after some setup code)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="120")
    if pre:
        cmd = [sys.executable, "-c", f"{pre}\nimport sys\nfrom ofi_fast.cli import main\n"
               f"sys.exit(main({list(args)!r}))"]
    else:
        cmd = [sys.executable, "-m", "ofi_fast", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def table_of(stdout):
    """The summary table's rows as {label: value}."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"  (\S.*?)\s{2,}(\S.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def number(s):
    return float(s.replace(",", "").split()[0])


def ols(x, y):
    beta, alpha = np.polyfit(x, y, 1)
    res = y - alpha - beta * x
    return beta, alpha, 1 - res @ res / ((y - y.mean()) @ (y - y.mean()))


def library_bars(ts, bid_px, bid_sz, ask_px, ask_sz, every):
    """OFI and dmid per clock bar from the public API alone."""
    e = ofi_fast.l1_ofi(bid_px, bid_sz, ask_px, ask_sz)
    b = ofi_fast.bars(ts, e, every=every)
    mid = 0.5 * (bid_px + ask_px)
    ok = np.isfinite(mid)
    m = ofi_fast.bars(ts[ok], mid[ok], every=every)
    assert np.array_equal(m.start, b.start)       # no bar without a valid mid at the edges
    close = m.last.copy()
    for i in range(1, close.shape[0]):            # carry the mid over empty bars
        if np.isnan(close[i]):
            close[i] = close[i - 1]
    dmid = np.diff(np.concatenate([[mid[ok][0]], close]))
    return b, close, dmid


def check_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ofi-fast: error: ") and "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


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


def _has(mod):
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def test_analyze_default_prints_library_numbers(sim_run):
    r, d, sim, b, close, dmid, _ = sim_run
    t = table_of(r.stdout)
    assert number(t["events"]) == SIM_EVENTS
    assert number(t["trades"]) == sim.trade_ts.shape[0]
    assert t["bars (10 s)"] == f"{len(b):,} ({int((b.count == 0).sum()):,} empty)"
    beta, alpha, r2 = ols(b.sum, dmid)
    assert number(t["beta (dmid per share of OFI)"]) == pytest.approx(beta, rel=1e-5)
    assert number(t["alpha"]) == pytest.approx(alpha, rel=1e-4, abs=1e-9)
    assert number(t["R^2 (in sample)"]) == pytest.approx(r2, abs=6e-5)
    assert r2 > 0.3
    oos = number(t[next(k for k in t if k.startswith("OOS R^2"))])
    assert 0.3 < oos <= 1.0
    assert 0.5 < number(t["hit rate (sign of dmid)"]) <= 1.0
    lo, med, hi = (float(v) for v in t["trade imbalance min / median / max"].split(" / "))
    assert -1 <= lo <= med <= hi <= 1


def test_analyze_csv_holds_the_bars(sim_run):
    r, d, sim, b, close, dmid, _ = sim_run
    a = np.genfromtxt(d / "bars.csv", delimiter=",", names=True)
    assert a.dtype.names == ("start_ns", "events", "ofi", "mid_open", "mid_close", "dmid",
                             "n_trades", "buy_volume", "sell_volume", "trade_imbalance")
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
    assert f"{s['beta']:.6g}" == t["beta (dmid per share of OFI)"]


def test_python_m_and_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("ofi-fast ")
    r = run("--help")
    assert r.returncode == 0 and "analyze" in r.stdout and "stream" in r.stdout


# ---------------------------------------------------------------- analyze on real LOBSTER data

def _lobster_arrays(msg_path, book_path):
    msg = np.loadtxt(msg_path, delimiter=",")
    book = np.loadtxt(book_path, delimiter=",")
    ts = np.rint(msg[:, 0] * NS).astype(np.int64)
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
    assert number(t["beta (dmid per share of OFI)"]) == pytest.approx(beta, rel=1e-5)
    assert number(t["R^2 (in sample)"]) == pytest.approx(r2, abs=6e-5)
    a = np.genfromtxt(out, delimiter=",", names=True)
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
    ts = np.rint(msg[:, 0] * NS).astype(np.int64)
    ap, az, bp, bs = (book[:, j].copy() for j in range(4))
    ea, eb = ap >= 9999999999, bp <= -9999999999
    ap, bp = ap / 1e4, bp / 1e4
    ap[ea], az[ea], bp[eb], bs[eb] = np.nan, 0, np.nan, 0
    b, close, dmid = library_bars(ts, bp, bs, ap, az, 10 * NS)
    beta, alpha, r2 = ols(b.sum, dmid)
    assert s["beta"] == pytest.approx(beta, rel=1e-9)
    assert s["r2"] == pytest.approx(r2, rel=1e-9)
    assert s["r2"] > 0.1 and s["beta"] > 0      # OFI explains GOOG's mid moves too


# ---------------------------------------------------------------- stream and bench

def _stream_rows(stdout):
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"\s*(\d\d:\d\d:\d\d\.\d{3})\s+(\d+)\s+([+-]\d+)\s+([+-]\d+)", line)
        if m:
            rows.append((int(m.group(2)), float(m.group(3))))
    return rows


def test_stream_simulator_matches_bars():
    r = run("stream", "--events", "20000")
    assert r.returncode == 0, r.stderr
    sim = simulate(20_000, seed=0, levels=5)
    e = ofi_fast.l1_ofi(*sim.best())
    b = ofi_fast.bars(sim.ts, e, every=10 * NS)
    rows = _stream_rows(r.stdout)
    assert [n for n, _ in rows] == b.count.tolist()
    assert [o for _, o in rows] == b.sum.tolist()
    lat = re.search(r"OFI\.update\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
    floor = re.search(r"empty call \(floor\)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout)
    assert lat and floor
    p50, p99, p999 = (int(lat.group(i)) for i in (1, 2, 3))
    assert 0 < p50 <= p99 <= p999
    assert "20,000 events" in r.stdout


def test_stream_lobster():
    m = data_file(LOB, MSG10)
    r = run("stream", str(m), "--every", "5")
    assert r.returncode == 0, r.stderr
    rows = _stream_rows(r.stdout)
    assert sum(n for n, _ in rows) == 999 and len(rows) == 10


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
    (["bench", "--events", "0"], "--events"),
    (["frobnicate"], "invalid choice"),
    ([], "choose a command"),
    (["analyze", "--events", "1000", "--out", "/no/such/dir/bars.csv"], "does not exist"),
    (["analyze", "--events", "1000", "--out", "bars.xlsx"], "unknown output format"),
])
def test_usage_errors(args, fragment):
    check_one_line_error(run(*args), fragment)


def test_file_errors(tmp_path, lobster_copy):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello, world\n")
    check_one_line_error(run("analyze", str(txt)), "unknown format")
    bad_zip = tmp_path / "x.zip"
    bad_zip.write_bytes(b"not a zip")
    check_one_line_error(run("analyze", str(bad_zip)), "not a zip")
    other_zip = tmp_path / "y.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "x")
    check_one_line_error(run("analyze", str(other_zip)), "no LOBSTER")
    # a message file without its orderbook file
    check_one_line_error(run("analyze", str(lobster_copy / MSG10)), "does not exist")
    # an orderbook that does not match the messages
    book = np.loadtxt(data_file(LOB, BOOK10), delimiter=",")
    np.savetxt(lobster_copy / BOOK10, book[:500], delimiter=",", fmt="%d")
    check_one_line_error(run("analyze", str(lobster_copy / MSG10)), "not the LOBSTER orderbook")
    # malformed and empty CSV
    bad = tmp_path / "bad_message_1.csv"
    bad.write_text("34200.1,1,1,100,5853300,1\n34200.2,1,oops,100,5853300,1\n")
    (tmp_path / "bad_orderbook_1.csv").write_text("1,2,3,4\n1,2,3,4\n")
    check_one_line_error(run("analyze", str(bad)), "bad_message_1.csv:2:", "not a numeric CSV")
    empty = tmp_path / "e_message_1.csv"
    empty.write_text("")
    (tmp_path / "e_orderbook_1.csv").write_text("")
    check_one_line_error(run("analyze", str(empty)), "empty")
    # time going backwards in the messages
    msg = np.loadtxt(data_file(LOB, MSG10), delimiter=",")
    msg[[10, 20]] = msg[[20, 10]]
    np.savetxt(tmp_path / "t_message_1.csv", msg, delimiter=",", fmt="%.9f")
    np.savetxt(tmp_path / "t_orderbook_1.csv", book, delimiter=",", fmt="%d")
    check_one_line_error(run("analyze", str(tmp_path / "t_message_1.csv")), "ts[")


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
    f = cli.fit_model(x, y)
    ok = np.isfinite(y)
    beta, alpha, r2 = ols(x[ok], y[ok])
    assert f["n"] == 299
    assert f["beta"] == pytest.approx(beta, rel=1e-10)
    assert f["alpha"] == pytest.approx(alpha, rel=1e-8, abs=1e-14)
    assert f["r2"] == pytest.approx(r2, rel=1e-10)
    assert np.isnan(cli.fit_model([1, 1, 1, 1], [1, 2, 3, 4])["beta"])
    assert np.isnan(cli.fit_model([1, 2], [1, 2])["r2"])


def test_walk_forward_matches_refit_loop(rng):
    n, k = 120, 20
    x = rng.normal(size=n) * 500
    y = 3e-5 * x + rng.normal(size=n) * 0.02
    w = cli.walk_forward(x, y, min_train=k)
    pred, bench = [], []
    for t in range(k, n):
        beta, alpha = np.polyfit(x[:t], y[:t], 1)
        pred.append(alpha + beta * x[t])
        bench.append(y[:t].mean())
    pred, bench, yt = np.array(pred), np.array(bench), y[k:]
    oos = 1 - ((yt - pred) ** 2).sum() / ((yt - bench) ** 2).sum()
    assert w["n_oos"] == n - k
    assert w["oos_r2"] == pytest.approx(oos, rel=1e-9)
    assert w["hit_rate"] == pytest.approx((np.sign(pred) == np.sign(yt)).mean())
    assert np.isnan(cli.walk_forward(x[:10], y[:10], min_train=20)["oos_r2"])


def test_bar_builder_chunk_invariant():
    sim = simulate(30_000, seed=5, levels=2)
    tables = []
    for chunk in (30_000, 1_000, 333):
        src = cli.open_source([], events=30_000, seed=5, levels=2, chunk_size=chunk)
        bb = cli.BarBuilder(NS)
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
    src = cli.open_source([], events=1000, chunk_size=300)
    it = cli._progress(src, True)          # stderr is not a TTY under pytest's capture
    assert sum(len(c) for c in it) == 1000
