"""ofi_fast.dataset / ``ofi-fast simulate``: LOBSTER files of simulated symbol-days.

The read-back test holds the files against the simulator's own arrays, regenerated from the
same seed without the writer, through the package's LOBSTER reader: every column equal
(prices in LOBSTER's integer unit). The scaling test derives what the per-symbol parameters
imply for beta (the simulator's dynamics in lots do not depend on the lot) and checks it on
the fitted betas."""

import dataclasses
import json
import math
import zipfile

import numpy as np
import pytest

from ofi_fast.cli import main
from ofi_fast.dataset import (
    SESSION_END_NS,
    SESSION_START_NS,
    SymbolParams,
    simulate_dataset,
    simulate_day,
    symbol_params,
    trading_days,
    write_lobster_zip,
)
from ofi_fast.feeds import lobster_trades, read_lobster
from ofi_fast.feeds.lobster import midnight_ns
from ofi_fast.simulate import SimResult


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_dataset(out, 3, 2, levels=3, events=6_000, seed=7, chunk_size=2_500)


def test_names_and_members(small):
    assert small.dates == ("2024-01-02", "2024-01-03")
    for p, files in zip(small.params, small.files):
        for date, f in zip(small.dates, files):
            assert f.name == f"{p.symbol}_{date}_34200000_57600000_3.zip"
            with zipfile.ZipFile(f) as z:
                assert z.namelist() == [f"{p.symbol}_{date}_34200000_57600000_message_3.csv",
                                        f"{p.symbol}_{date}_34200000_57600000_orderbook_3.csv",
                                        "README.txt"]
                assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
                first = z.read(z.namelist()[0]).split(b"\n", 1)[0].split(b",")
                book = z.read(z.namelist()[1]).split(b"\n", 1)[0].split(b",")
            assert len(first) == 6 and len(first[0].split(b".")[1]) == 9
            assert len(book) == 4 * 3
    meta = json.loads((small.out / "params.json").read_text())
    assert [s["symbol"] for s in meta["symbols"]] == ["SIMA", "SIMB", "SIMC"]
    assert meta["symbols"][0]["files"] == [f.name for f in small.files[0]]


def test_read_back_equals_the_simulator(small):
    for i, p in enumerate(small.params):
        for d, (date, f) in enumerate(zip(small.dates, small.files[i])):
            sim = SimResult.concatenate(list(simulate_day(p, [7, i, d + 1], 6_000, 3)))
            m = read_lobster(f)
            assert len(m) == len(sim) == small.events[i][d] == 6_000
            np.testing.assert_array_equal(m.ts - midnight_ns(date), sim.ts)
            np.testing.assert_array_equal(m.type, sim.event_type)
            np.testing.assert_array_equal(m.direction, sim.side)
            np.testing.assert_array_equal(m.size, sim.size)
            np.testing.assert_array_equal(m.order_id, np.arange(1, len(sim) + 1))
            for name in ("bid_px", "ask_px"):
                got, want = getattr(m, name), getattr(sim, name)
                np.testing.assert_array_equal(np.rint(got * 1e4), np.rint(want * 1e4))
                assert np.max(np.abs(got - want)) <= 1e-12 * np.max(want)
            np.testing.assert_array_equal(np.rint(m.price * 1e4), np.rint(sim.price * 1e4))
            np.testing.assert_array_equal(m.bid_sz, sim.bid_sz)
            np.testing.assert_array_equal(m.ask_sz, sim.ask_sz)
            t = lobster_trades(m)
            np.testing.assert_array_equal(t.ts - midnight_ns(date), sim.trade_ts)
            np.testing.assert_array_equal(t.size, sim.trade_size)
            np.testing.assert_array_equal(t.side, sim.trade_side)
            assert sim.ts[0] >= SESSION_START_NS and sim.ts[-1] < SESSION_END_NS


def test_the_day_fills_the_session(small):
    for f in small.paths:
        m = read_lobster(f, orderbook=False)
        span = (m.ts[-1] - m.ts[0]) / (SESSION_END_NS - SESSION_START_NS)
        assert 0.75 < span <= 1.0


def test_reproducible_and_seeded(tmp_path):
    a = simulate_dataset(tmp_path / "a", 2, 1, levels=1, events=2_000, seed=3)
    b = simulate_dataset(tmp_path / "b", 2, 1, levels=1, events=2_000, seed=3)
    c = simulate_dataset(tmp_path / "c", 2, 1, levels=1, events=2_000, seed=4)

    def content(f):
        with zipfile.ZipFile(f) as z:
            return [z.read(n) for n in z.namelist()[:2]]
    assert [content(f) for f in a.paths] == [content(f) for f in b.paths]
    assert content(a.paths[0]) != content(c.paths[0])
    assert a.params == b.params != c.params


def test_depth_at_the_touch_varies_by_an_order_of_magnitude():
    ps = symbol_params(12, 0, events=10_000, levels=1)
    depth = np.array([p.touch_depth for p in ps])
    assert depth.max() / depth.min() > 5
    assert len({p.tick_size for p in ps}) == 2 and len({p.limit_decay for p in ps}) == 12
    assert all(p.touch_depth == p.limit_rate * p.mean_size / p.cancel_rate for p in ps)


def test_beta_in_ticks_scales_as_one_over_the_lot(tmp_path):
    """What the parameters imply: the same seed with lot x4 and tick x5 gives the same path in
    lots and ticks, so through the whole pipeline (files, reader, bars, fit) beta (dollars per
    share of OFI) is x5/4: beta in ticks is x1/4, as CKS's beta ~ 1/depth with depth x4."""
    import ofi_fast
    base = symbol_params(1, 0, events=20_000, levels=1)[0]
    base = dataclasses.replace(base, tick_size=0.01, lot=100.0, mean_size=200.0)
    big = dataclasses.replace(base, tick_size=0.05, lot=400.0, mean_size=800.0)
    res = []
    for p in (base, big):
        f = tmp_path / f"{p.lot:g}_2024-01-02_34200000_57600000_1.zip"
        write_lobster_zip(f, lambda p=p: simulate_day(p, [1, 2, 3], 20_000, 1),
                          symbol="X", date="2024-01-02", levels=1)
        res.append(ofi_fast.analyze(f).summary)
    assert res[0]["beta"] > 0 and res[0]["bars"] == res[1]["bars"] > 2_000
    assert math.isclose(res[1]["beta"] / 0.05 * 4, res[0]["beta"] / 0.01, rel_tol=1e-9)
    assert math.isclose(res[1]["r2"], res[0]["r2"], rel_tol=1e-9)


def test_trading_days_skip_weekends():
    assert trading_days("2024-01-05", 3) == ["2024-01-05", "2024-01-08", "2024-01-09"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="symbols must be a positive integer"):
        simulate_dataset(tmp_path, 0, 1)
    with pytest.raises(ValueError, match="events"):
        simulate_dataset(tmp_path, 1, 1, events=2.5)
    assert isinstance(symbol_params(1)[0], SymbolParams)


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["simulate", "--out", str(out), "--symbols", "2", "--days", "1",
                 "--events", "3000", "--levels", "2"]) == 0
    text = capsys.readouterr().out
    assert "2 LOBSTER zips (2 symbols x 1 day, 2 levels, 3,000 events a day)" in text
    assert sorted(f.name for f in out.glob("*.zip")) == [
        "SIMA_2024-01-02_34200000_57600000_2.zip", "SIMB_2024-01-02_34200000_57600000_2.zip"]
    assert main(["simulate", "--out", str(out), "--symbols", "0"]) == 2
    assert main(["simulate", "--out", str(out), "--start", "2024-13-01"]) == 2
