"""ofi_fast.batch / ``ofi-fast batch`` on a real dask.distributed LocalCluster (2 worker
processes, created once for the module).

Per input, the workers' results must equal :func:`ofi_fast.analyze` in this process bit for bit
(bar files against ``Analysis.bars``, summary rows against ``Analysis.summary``), on the shared
LOBSTER days and on a simulated dataset; a rerun submits nothing (the scheduler's task stream
is empty); a corrupt zip ends in errors.csv and the rest completes; a worker killed by pid while
it runs a task, and Ctrl-C in the client, still end in outputs identical to an undisturbed run;
the Parquet outputs read back through pandas, polars and dask; the cross-section's depth slope
on a simulated dataset is the one the simulator's parameters imply.
"""

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import ofi_fast  # noqa: E402
from ofi_fast import batch  # noqa: E402
from ofi_fast.cli import main  # noqa: E402
from ofi_fast.dataset import simulate_dataset  # noqa: E402

from conftest import DATA_DIR  # noqa: E402

LOBSTER = Path(os.path.abspath(DATA_DIR / "lobster"))


@pytest.fixture(scope="module")
def client():
    import logging
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """3 symbols x 2 days of 25,000 events (2 levels)."""
    return simulate_dataset(tmp_path_factory.mktemp("sim"), 3, 2, levels=2, events=25_000,
                            seed=11)


def _lobster(*names):
    paths = [LOBSTER / n for n in names]
    if not all(p.exists() for p in paths):
        pytest.skip(f"real data not available: {LOBSTER}")
    return paths


@pytest.fixture(scope="module")
def inputs(sim):
    """The simulated days, two LOBSTER level-1 days and GOOG's level-5 and level-10 files
    (three inputs of one symbol-day: part-0, part-1, part-2)."""
    return [*sim.paths, *_lobster("LOBSTER_SampleFile_AMZN_2012-06-21_1.zip",
                                  "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip",
                                  "LOBSTER_SampleFile_GOOG_2012-06-21_5.zip",
                                  "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip")]


@pytest.fixture(scope="module")
def reference(client, inputs, tmp_path_factory):
    """One undisturbed run: (result, out folder)."""
    out = tmp_path_factory.mktemp("ref")
    return batch.run(inputs, out, client=client), out


def _tables(out):
    """Every output table of ``out`` (summary, cross-section, each bar file) as pyarrow."""
    t = {"summary": pq.read_table(out / "summary.parquet"),
         "cross": pq.read_table(out / "cross_section.parquet")}
    for p in sorted((out / "bars").rglob("part-*.parquet")):
        t[str(p.relative_to(out))] = pq.read_table(p)
    return t


def _same(x, y):
    """Two pyarrow tables hold the same columns, types and values (NaN equal to NaN)."""
    if x.schema.remove_metadata() != y.schema.remove_metadata():
        return False
    for name in x.column_names:
        u, v = x[name].to_numpy(zero_copy_only=False), y[name].to_numpy(zero_copy_only=False)
        if not np.array_equal(u, v, equal_nan=u.dtype.kind == "f"):
            return False
    return True


def _assert_same_outputs(a, b):
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert _same(ta[k], tb[k]), k
    assert (a / "errors.csv").read_text() == (b / "errors.csv").read_text()


def _assert_same_outputs_but(a, b, *skip):
    """The bar files of ``a`` equal ``b``'s (``a`` may hold more)."""
    ta, tb = _tables(a), _tables(b)
    for k in tb:
        if k not in skip:
            assert _same(ta[k], tb[k]), k


def test_results_equal_analyze_bit_for_bit(reference, inputs):
    r, out = reference
    assert (r.submitted, r.done, r.failed, r.skipped) == (len(inputs), len(inputs), 0, 0)
    rows = {row["input"]: row for row in r.rows}
    assert sorted(rows) == sorted(str(p) for p in inputs)
    parts = []
    for p in inputs:
        a = ofi_fast.analyze(p)
        row = rows[str(p)]
        for k in ("events", "trades", "bars", "empty_bars", "beta", "alpha", "r2", "t_beta",
                  "t_beta_robust", "oos_r2", "forecast_r2", "vpin_min", "vpin_max"):
            v, w = row[k], a.summary[k]
            assert v == w or (math.isnan(v) and math.isnan(w)), (p, k, v, w)
        q = a.summary["quality"]
        assert (row["rows_read"], row["lost"], row["gaps"]) == (q["rows_read"], q["lost"],
                                                                len(q["gaps"]))
        f = out / row["bars_path"]
        assert f.parent.parent.name == f"symbol={a.symbol}"
        assert _same(pq.read_table(f), a.bars.to_arrow())
        assert pq.read_schema(f).metadata[b"ofi_fast.input"] == str(p).encode()
        parts.append(row["bars_path"])
    goog = sorted(x for x in parts if "symbol=GOOG" in x)
    assert goog == [f"bars/symbol=GOOG/date=2012-06-21/part-{k}.parquet" for k in range(3)]
    # summary.parquet holds the same rows, sorted by symbol, date, input
    s = pq.read_table(out / "summary.parquet").to_pylist()
    assert [x["input"] for x in s] == [x["input"] for x in sorted(
        r.rows, key=lambda x: (x["symbol"], x["date"], x["input"]))]
    assert all(s[i]["beta"] == rows[s[i]["input"]]["beta"] for i in range(len(s)))
    assert (out / "errors.csv").read_text().splitlines() == ["input,error"]


def test_manifest(reference, inputs):
    r, out = reference
    m = json.loads((out / "manifest.json").read_text())
    assert m["parameters"]["analyze"]["every"] == 10.0
    assert m["parameters"]["ofi_fast"] == ofi_fast.__version__
    e = m["inputs"][str(inputs[0])]
    st = os.stat(inputs[0])
    assert e["status"] == "done" and e["seconds"] > 0
    ident = e["identity"]
    assert (ident["path"], ident["size"], ident["mtime_ns"]) == (str(inputs[0]), st.st_size,
                                                                  st.st_mtime_ns)
    import hashlib
    data = Path(inputs[0]).read_bytes()
    want = hashlib.sha256(data[:1 << 20] + (data[-(1 << 20):] if len(data) > 2 << 20
                                            else data[1 << 20:])).hexdigest()
    assert ident["sha256_first_last_mib"] == want


def test_rerun_submits_nothing_force_redoes_changed_parameters_redo_all(client, inputs,
                                                                         reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    # the copied manifest names the same inputs: nothing to do
    with distributed.get_task_stream(client) as ts:
        r = batch.run(inputs, out, client=client)
    assert (r.submitted, r.skipped, r.done) == (0, len(inputs), 0)
    assert [t for t in ts.data if "ofi-fast-" in t["key"]] == []
    assert len(r.rows) == len(inputs)
    _assert_same_outputs(out, reference[1])
    # a changed file is redone, alone
    sim_copy = tmp_path / "copy" / Path(inputs[0]).name
    sim_copy.parent.mkdir()
    shutil.copy(inputs[0], sim_copy)
    r = batch.run([*inputs, sim_copy], out, client=client)
    assert (r.submitted, r.skipped) == (1, len(inputs))
    os.utime(sim_copy, ns=(1, 1))
    assert batch.run([*inputs, sim_copy], out, client=client).submitted == 1
    r = batch.run(inputs[:3], out, client=client, force=True)
    assert (r.submitted, r.done, r.skipped) == (3, 3, 0)
    assert len(r.rows) == len(inputs) + 1                 # the other inputs' results stay
    _assert_same_outputs_but(out, reference[1], "summary", "cross")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(batch.BatchError, match="unreadable manifest"):
        batch.run(inputs[:1], out, client=client)
    assert batch.run(inputs[:1], out, client=client, force=True).done == 1
    # other parameters: every input redone, the old bar files gone
    r = batch.run(inputs[:2], out, client=client, every=30.0)
    assert (r.submitted, r.done) == (2, 2)
    assert len(list((out / "bars").rglob("part-*.parquet"))) == 2
    assert len(r.rows) == 2
    assert all(x["bars"] == ofi_fast.analyze(x["input"], every=30.0).summary["bars"]
               for x in r.rows)
    assert batch.run(inputs[:2], out, client=client, every=30.0).submitted == 0


def test_corrupt_inputs_go_to_errors_csv(client, sim, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for f in sim.paths[:2]:
        shutil.copy(f, d)
    data = sim.paths[2].read_bytes()
    (d / sim.paths[2].name).write_bytes(data[: len(data) // 2])       # cut in half
    (d / "NOTAZIP_2024-01-02_34200000_57600000_2.zip").write_bytes(b"not a zip at all\n")
    (d / "notes.txt").write_text("ignored by the folder scan")
    out = tmp_path / "out"
    r = batch.run([d], out, client=client)
    assert (r.submitted, r.done, r.failed) == (4, 2, 2)
    with open(out / "errors.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["input", "error"] and len(rows) == 3
    bad = dict(rows[1:])
    assert set(bad) == {str(d / sim.paths[2].name),
                        str(d / "NOTAZIP_2024-01-02_34200000_57600000_2.zip")}
    assert all("\n" not in e and len(e) < 400 and "Traceback" not in e for e in bad.values())
    assert "not a zip" in bad[str(d / "NOTAZIP_2024-01-02_34200000_57600000_2.zip")]
    assert pq.read_table(out / "summary.parquet").num_rows == 2
    # unchanged failures are not retried; a repaired file is
    assert batch.run([d], out, client=client).submitted == 0
    shutil.copy(sim.paths[2], d)
    r = batch.run([d], out, client=client)
    assert (r.submitted, r.done, len(r.errors)) == (1, 1, 1)


def test_killed_worker_same_results(client, inputs, reference, tmp_path):
    """SIGKILL the worker process that is running a task: the scheduler reruns it elsewhere
    (the nanny restarts the killed one) and every output equals the undisturbed run's."""
    pids = client.run(os.getpid)
    out = tmp_path / "out"
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", batch.run(inputs, out,
                                                                     client=client)))
    t.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and t.is_alive():
        for addr, keys in client.processing().items():
            if any("ofi-fast-" in str(k) for k in keys) and addr in pids:
                os.kill(pids[addr], signal.SIGKILL)
                killed = addr
                break
        time.sleep(0.002)
    t.join(120)
    assert killed is not None, "no task was seen running"
    r = box["r"]
    assert (r.done, r.failed) == (len(inputs), 0)
    assert killed not in client.run(os.getpid)       # that process is gone
    _assert_same_outputs(out, reference[1])
    client.wait_for_workers(2, timeout=60)


def test_ctrl_c_leaves_complete_files_and_resumes(client, inputs, reference, tmp_path):
    out = tmp_path / "out"

    def stop(res):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        batch.run(inputs, out, client=client, _on_result=stop)
    m = json.loads((out / "manifest.json").read_text())
    assert [e["status"] for e in m["inputs"].values()] == ["done"]
    assert pq.read_table(out / "summary.parquet").num_rows == 1
    time.sleep(1.0)                   # tasks already running finish their (atomic) writes
    for f in (out / "bars").rglob("part-*.parquet"):
        pq.read_table(f)              # every visible file is complete
    r = batch.run(inputs, out, client=client)
    assert r.skipped == 1 and r.submitted == len(inputs) - 1
    assert not list(out.rglob(".*.tmp"))
    _assert_same_outputs(out, reference[1])


def test_parquet_reads_back_in_pandas_polars_dask(reference):
    r, out = reference
    pd = pytest.importorskip("pandas")
    bars = pd.read_parquet(out / "bars")
    assert len(bars) == sum(x["bars"] for x in r.rows)
    assert str(bars["start"].dtype) == "datetime64[ns, UTC]"
    assert set(bars["symbol"].astype(str)) == {x["symbol"] for x in r.rows}
    goog = bars[(bars["symbol"] == "GOOG")]
    assert len(goog) == 3 * 2340
    s = pd.read_parquet(out / "summary.parquet")
    assert list(s["input"]) == [x["input"] for x in r.rows]
    cs = pd.read_parquet(out / "cross_section.parquet")
    assert list(cs["symbol"])[-1] == "*" and int(cs["days"].iloc[-1]) == len(r.rows)
    dd = pytest.importorskip("dask.dataframe")
    assert len(dd.read_parquet(str(out / "bars")).compute()) == len(bars)
    pl = pytest.importorskip("polars")
    lazy = pl.scan_parquet(str(out / "bars" / "**" / "*.parquet"), hive_partitioning=True)
    got = lazy.group_by("symbol").agg(pl.len()).collect()
    assert dict(zip(got["symbol"], got["len"])) == bars.groupby(
        "symbol", observed=True).size().to_dict()
    assert pl.read_parquet(out / "summary.parquet")["beta"].to_list() == list(s["beta"])


def test_depth_slope_is_what_the_parameters_imply(client, tmp_path):
    """Beta in ticks scales as 1/lot (tests/test_dataset.py), the touch depth as the lot: the
    implied slope is the OLS slope of log(1/lot) on the measured log depth (about -1); the
    batch's slope of log(beta/tick) on log depth must match it."""
    ds = simulate_dataset(tmp_path / "ds", 8, 1, levels=1, events=20_000, seed=5)
    r = batch.run(ds.paths, tmp_path / "out", client=client)
    assert r.done == 8
    allrow = r.cross_section[-1]
    assert allrow["symbol"] == "*" and allrow["depth_n"] == 8
    lot = {p.symbol: p.lot for p in ds.params}
    tick = {p.symbol: p.tick_size for p in ds.params}
    x = np.log([row["depth_mean"] for row in r.rows])
    implied = np.polyfit(x, np.log([1 / lot[row["symbol"]] for row in r.rows]), 1)[0]
    assert all(math.isclose(row["tick"], tick[row["symbol"]], rel_tol=1e-9) for row in r.rows)
    depth = np.array([row["depth_mean"] for row in r.rows])
    assert depth.max() / depth.min() > 4
    assert -1.3 < implied < -0.7
    assert allrow["depth_slope"] < 0
    assert abs(allrow["depth_slope"] - implied) < 3 * allrow["depth_slope_se"] + 0.1
    assert allrow["depth_r2"] > 0.6
    written = pq.read_table(tmp_path / "out" / "cross_section.parquet").to_pylist()[-1]
    assert written["depth_slope"] == allrow["depth_slope"]


def test_depth_relation_by_hand():
    rows = [{"beta": 0.02 / d, "depth_mean": d, "tick": 0.01, "symbol": "X", "r2": 0.5,
             "t_beta": 1.0, "t_beta_robust": 1.0} for d in (100.0, 300.0, 1000.0)]
    rows.append({**rows[0], "beta": -1.0})
    rel = batch.depth_relation(rows)
    assert math.isclose(rel["depth_slope"], -1.0, abs_tol=1e-12)
    assert math.isclose(rel["depth_intercept"], math.log(2.0), abs_tol=1e-12)
    assert math.isclose(rel["depth_r2"], 1.0) and (rel["depth_n"], rel["depth_excluded"]) == (3, 1)


def test_expand_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for n in ("X_2024-01-02_34200000_57600000_message_1.csv",
              "X_2024-01-02_34200000_57600000_orderbook_1.csv", "params.json", "README.txt",
              ".hidden.zip", "Y_2024-01-02_34200000_57600000_1.zip"):
        (tmp_path / "a" / n).write_text("x")
    got = batch.expand_inputs([tmp_path / "a"])
    assert [Path(p).name for p in got] == ["X_2024-01-02_34200000_57600000_message_1.csv",
                                           "Y_2024-01-02_34200000_57600000_1.zip"]
    assert batch.expand_inputs(str(tmp_path / "a" / "*.zip")) == [got[1]]
    assert batch.expand_inputs([tmp_path / "a" / "README.txt"]) == [
        str(tmp_path / "a" / "README.txt")]
    with pytest.raises(batch.BatchError, match="no such file, folder or matching pattern"):
        batch.expand_inputs([tmp_path / "nothing*"])
    with pytest.raises(batch.BatchError, match="unknown analyze option"):
        batch.run([got[1]], tmp_path / "out", bogus=1)


def test_cli(client, sim, tmp_path, capsys):
    out = tmp_path / "out"
    bad = tmp_path / "BAD_2024-01-02_34200000_57600000_1.zip"
    bad.write_bytes(b"garbage")
    addr = client.scheduler.address
    code = main(["batch", str(sim.paths[0]), str(sim.paths[1]), str(bad), "--out", str(out),
                 "--scheduler", addr, "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1
    assert "3 inputs: 2 done, 1 failed, 0 skipped (3 tasks)" in text
    assert "depth relation (CKS eq. 17, 2 symbol-days)" in text
    assert f"failed: {bad}:" in text
    assert main(["batch", str(sim.paths[0]), "--out", str(out), "--scheduler", addr,
                 "--workers", "2"]) == 2
    assert main(["batch", str(tmp_path / "none*"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_import_ofi_fast_does_not_import_dask():
    code = ("import sys, ofi_fast, ofi_fast.batch, ofi_fast.dataset, ofi_fast.cli; "
            "ofi_fast.cli.build_parser(); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_progress_bar_counts_done_failed_skipped(capsys):
    pytest.importorskip("tqdm")
    p = batch._Progress(5, 2, True)
    p.step(True)
    p.step(False)
    p.close()
    err = capsys.readouterr().err
    assert "4/5" in err and "done 1, failed 1, skipped 2" in err
    assert (p.done, p.failed, p.skipped) == (1, 1, 2)


def test_fsspec_urls_give_the_same_results(client, sim, reference, tmp_path):
    """Inputs as fsspec URLs (``file://`` here; ``s3://`` and the like the same way): each
    worker streams its input into a temporary folder and analyses the copy."""
    pytest.importorskip("fsspec")
    urls = [Path(p).as_uri() for p in sim.paths[:2]]
    pattern = Path(sim.paths[0]).parent.as_uri() + "/SIMA_*.zip"
    assert batch.expand_inputs([pattern]) == urls
    out = tmp_path / "out"
    r = batch.run([pattern], out, client=client)
    assert (r.done, r.failed) == (2, 0)
    ref = {row["input"]: row for row in reference[0].rows}
    for row in r.rows:
        want = ref[str(sim.paths[urls.index(row["input"])])]
        assert (row["beta"], row["r2"], row["bars"]) == (want["beta"], want["r2"], want["bars"])
        assert _same(pq.read_table(out / row["bars_path"]),
                     pq.read_table(reference[1] / want["bars_path"]))
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"][urls[0]]["identity"]["size"] == os.stat(sim.paths[0]).st_size
    assert batch.run([pattern], out, client=client).submitted == 0
    with pytest.raises(batch.BatchError, match="no such file"):
        batch.expand_inputs([Path(tmp_path / "missing.zip").as_uri()])
