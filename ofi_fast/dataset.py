"""A simulated dataset: many symbol-days of LOBSTER files from :mod:`ofi_fast.simulate`.

``simulate_dataset(out, symbols, days)`` writes one zip per symbol-day, named and laid out like
LOBSTER's sample files: ``SYMBOL_YYYY-MM-DD_34200000_57600000_L.zip`` holding
``SYMBOL_YYYY-MM-DD_34200000_57600000_message_L.csv``, ``..._orderbook_L.csv`` (no headers)
and a ``README.txt`` giving the parameters, plus ``out/params.json`` with every symbol's
parameters and every file written. This is the load of the batch tests and benchmarks
(:mod:`ofi_fast.batch`), and a dataset to try ``ofi-fast batch`` on without data.

Each symbol has its own parameters, drawn from ``numpy.random.default_rng([seed, i])`` for the
i-th symbol (:func:`symbol_params`), so that betas differ across symbols as in Cont, Kukanov &
Stoikov (2014, section 4):

- ``lot`` (and ``mean_size = 2 * lot``): ``round(100 * 10**U(0, 1))`` shares, so the mean
  depth at the touch, ``20 * lot`` (limit inflow ``limit_rate * mean_size`` over the cancel
  rate), varies by an order of magnitude across symbols. The simulator's dynamics in lots do
  not depend on the lot, so beta (price change per share of OFI) scales as ``tick_size /
  lot``: the depth relation log beta ~ log depth has slope -1 among symbols of one tick size;
- ``tick_size``: 0.01 (three symbols in four) or 0.05 dollars (a multiple of LOBSTER's
  1e-4 price unit, so prices are exact integers in the files);
- the shape of the rates: ``limit_decay`` U(0.7, 0.95), ``market_rate`` = ``limit_rate`` x
  U(0.2, 0.5), ``inside_rate`` = 20 x U(0.5, 1.5); ``start_price`` U(20, 500) dollars;
- the time scale: every rate is multiplied by one factor so that ``events`` events span about
  95 % of the session 09:30-16:00 (the factor comes from a 20,000-event pilot run on another
  seed; a common factor only stretches time, it does not change the sequence of events).
  Events after 16:00 (rare: when the pilot's rate was off) are not written.

Day d of symbol i is ``LOBSimulator([seed, i, d + 1], levels=levels, **params)``: one seed per
symbol-day, so days of one symbol share parameters and differ in their path. Trading days are
the weekdays from ``start`` on (no holiday calendar).

LOBSTER columns from the simulator's arrays (:class:`ofi_fast.simulate.SimResult`):

- time: ``ts`` (ns after midnight) as seconds with 9 decimals, exact;
- type: ``event_type`` (already LOBSTER's codes: 1 submission, 3 deletion, 4 visible
  execution; the simulator has no partial cancels, hidden executions or halts);
- order id: ``1 + row`` of the message in its file. The simulator models queue sizes, not
  individual orders, so a deletion or execution does not name an earlier submission; the ids
  are unique and deterministic, which is all the readers use;
- size: ``size`` (whole shares); price: ``round(price * 10000)``; direction: ``side`` (the
  book side the event changes; for an execution the resting order's side, as LOBSTER's);
- order book: after each message, ``levels`` levels of ask price, ask size, bid price, bid
  size, prices ``round(px * 10000)``, an empty level (never simulated) as LOBSTER's dummy
  prices with size 0.

So ``feeds.read_lobster`` gives back exactly the simulated events: ``ts`` minus the date's
midnight (New York), types, directions, sizes and book sizes equal; prices equal in LOBSTER's
integer unit (the float read back is ``int / 10000``, the simulator's is ``tick * tick_size``,
which can differ in the last bit). tests/test_dataset.py holds this.

Memory: each day is simulated in chunks of ``chunk_size`` events, twice (messages, then the
order book: the simulator is cheaper than buffering), so a day of any length needs
O(chunk_size x levels) memory.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ofi_fast.simulate import LOBSimulator, SimResult

SESSION_START_NS = 34_200 * 1_000_000_000   # 09:30:00, ns after midnight
SESSION_END_NS = 57_600 * 1_000_000_000     # 16:00:00
PRICE_SCALE = 10_000                         # LOBSTER prices: dollars x 10000
DUMMY_ASK = 9_999_999_999
DUMMY_BID = -9_999_999_999
_PILOT_EVENTS = 20_000
_FILL = 0.95                                 # share of the session the events should span

__all__ = ["SymbolParams", "Dataset", "symbol_params", "trading_days", "simulate_day",
           "simulate_dataset", "write_lobster_zip", "lobster_name"]


@dataclasses.dataclass(frozen=True)
class SymbolParams:
    """One symbol's simulator parameters (rates per second, sizes in shares, prices in
    dollars); :meth:`simulator_kwargs` gives :class:`~ofi_fast.simulate.LOBSimulator`'s
    keywords."""

    symbol: str
    tick_size: float
    lot: float
    mean_size: float
    start_price: float
    limit_rate: float
    limit_decay: float
    cancel_rate: float
    market_rate: float
    inside_rate: float

    @property
    def touch_depth(self) -> float:
        """Mean queue at the touch implied by the parameters (shares): inflow
        ``limit_rate * mean_size`` over the per-order cancel rate."""
        return self.limit_rate * self.mean_size / self.cancel_rate

    def simulator_kwargs(self) -> dict[str, float]:
        d = dataclasses.asdict(self)
        del d["symbol"]
        return d


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What :func:`simulate_dataset` wrote: the folder, the parameters per symbol, the dates
    and the zip files (``files[i][d]`` for symbol i, day d); ``events[i][d]`` written."""

    out: Path
    params: tuple[SymbolParams, ...]
    dates: tuple[str, ...]
    files: tuple[tuple[Path, ...], ...]
    events: tuple[tuple[int, ...], ...]

    @property
    def paths(self) -> list[Path]:
        """Every zip, symbol by symbol, day by day."""
        return [p for row in self.files for p in row]


def trading_days(start: str, days: int) -> list[str]:
    """``days`` weekdays (Monday to Friday) from ``start`` (``"YYYY-MM-DD"``) on, as strings."""
    d = _dt.date.fromisoformat(start)
    out = []
    while len(out) < days:
        if d.weekday() < 5:
            out.append(d.isoformat())
        d += _dt.timedelta(days=1)
    return out


def _name(i: int) -> str:
    """Symbol names SIMA, SIMB, ..., SIMZ, SIMAA, ... (letters only, like tickers)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return "SIM" + s


def _time_scale(p: SymbolParams, events: int, levels: int, seed: int) -> float:
    """The factor on every rate that makes ``events`` events span ``_FILL`` of the session."""
    sim = LOBSimulator([seed, 2**31 - 1], levels=levels, start_ts=0, **p.simulator_kwargs())
    n = min(_PILOT_EVENTS, max(1_000, events))
    r = sim.run(n)
    rate = n / (int(r.ts[-1]) / 1e9)                 # events per second at the base rates
    return events / (_FILL * (SESSION_END_NS - SESSION_START_NS) / 1e9 * rate)


def symbol_params(symbols: int, seed: int = 0, *, events: int = 100_000,
                  levels: int = 5) -> list[SymbolParams]:
    """The parameters of symbols ``0 .. symbols-1`` (see the module docstring), with rates
    scaled so that a day of ``events`` events fills the session."""
    out = []
    for i in range(int(symbols)):
        rng = np.random.default_rng([seed, i])
        lot = float(round(100 * 10 ** rng.uniform(0.0, 1.0)))
        tick = float(rng.choice([0.01, 0.01, 0.01, 0.05]))
        decay = float(rng.uniform(0.7, 0.95))
        market = 5.0 * float(rng.uniform(0.2, 0.5))
        inside = 20.0 * float(rng.uniform(0.5, 1.5))
        price = round(float(rng.uniform(20.0, 500.0)) / tick) * tick
        base = SymbolParams(_name(i), tick, lot, 2 * lot, round(price, 4), 5.0, decay, 0.5,
                            market, inside)
        c = _time_scale(base, events, levels, seed)
        out.append(dataclasses.replace(base, limit_rate=5.0 * c, cancel_rate=0.5 * c,
                                       market_rate=market * c, inside_rate=inside * c))
    return out


def simulate_day(p: SymbolParams, seed, events: int, levels: int,
                 chunk_size: int = 250_000) -> Iterator[SimResult]:
    """The events of one symbol-day in chunks (those after 16:00 cut off): times are ns after
    midnight from 09:30 on."""
    sim = LOBSimulator(seed, levels=levels, start_ts=SESSION_START_NS, **p.simulator_kwargs())
    for r in sim.chunks(events, chunk_size):
        if r.ts.shape[0] and r.ts[-1] >= SESSION_END_NS:
            k = int(np.searchsorted(r.ts, SESSION_END_NS))
            yield _head(r, k)
            return
        yield r


def _head(r: SimResult, k: int) -> SimResult:
    """The first k events of ``r`` (and their trades)."""
    t = int(np.searchsorted(r.trade_index, k))
    d = {name: getattr(r, name) for name in SimResult.__slots__}
    for name in ("ts", "event_type", "side", "price", "size", "bid_px", "bid_sz", "ask_px",
                 "ask_sz"):
        d[name] = d[name][:k]
    for name in ("trade_ts", "trade_price", "trade_size", "trade_side", "trade_index"):
        d[name] = d[name][:t]
    return SimResult(**d)


def lobster_name(symbol: str, date: str, kind: str, levels: int) -> str:
    """``SYMBOL_YYYY-MM-DD_34200000_57600000_{kind}_L.csv`` (LOBSTER's file names)."""
    return f"{symbol}_{date}_34200000_57600000_{kind}_{levels}.csv"


def _px(a: np.ndarray, dummy: int) -> np.ndarray:
    """Prices as LOBSTER integers (dollars x 10000); NaN (empty level) as the dummy price."""
    ok = np.isfinite(a)
    out = np.full(a.shape, dummy, np.int64)
    out[ok] = np.rint(a[ok] * PRICE_SCALE).astype(np.int64)
    return out


def _message_lines(r: SimResult, first_row: int) -> bytes:
    ts = r.ts
    sec, frac = np.divmod(ts, 1_000_000_000)
    oid = np.arange(first_row + 1, first_row + 1 + ts.shape[0], dtype=np.int64)
    rows = zip(sec.tolist(), frac.tolist(), r.event_type.tolist(), oid.tolist(),
               r.size.astype(np.int64).tolist(), _px(r.price, 0).tolist(), r.side.tolist())
    return "".join([f"{s}.{f:09d},{t},{o},{z},{p},{d}\n" for s, f, t, o, z, p, d in rows]
                   ).encode()


def _book_lines(r: SimResult) -> bytes:
    n, lv = r.bid_px.shape
    m = np.empty((n, 4 * lv), np.int64)
    m[:, 0::4] = _px(r.ask_px, DUMMY_ASK)
    m[:, 1::4] = np.where(np.isfinite(r.ask_px), r.ask_sz, 0).astype(np.int64)
    m[:, 2::4] = _px(r.bid_px, DUMMY_BID)
    m[:, 3::4] = np.where(np.isfinite(r.bid_px), r.bid_sz, 0).astype(np.int64)
    return "".join([",".join(map(str, row)) + "\n" for row in m.tolist()]).encode()


def write_lobster_zip(path, chunks, *, symbol: str, date: str, levels: int,
                      readme: str = "") -> int:
    """Write one LOBSTER zip at ``path`` (atomically: a temporary name, then renamed) from a
    callable ``chunks()`` that yields :class:`~ofi_fast.simulate.SimResult` chunks (called
    twice: messages, then the order book). Returns the number of messages written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            n = 0
            with z.open(lobster_name(symbol, date, "message", levels), "w",
                        force_zip64=True) as fh:
                for r in chunks():
                    fh.write(_message_lines(r, n))
                    n += len(r)
            nb = 0
            with z.open(lobster_name(symbol, date, "orderbook", levels), "w",
                        force_zip64=True) as fh:
                for r in chunks():
                    if r.bid_px.shape[1] != levels:
                        raise ValueError(f"book chunks have {r.bid_px.shape[1]} levels, "
                                         f"expected {levels}")
                    fh.write(_book_lines(r))
                    nb += len(r)
            if nb != n:
                raise ValueError(f"chunks() gave {n} messages, then {nb} book rows")
            if readme:
                z.writestr("README.txt", readme)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def simulate_dataset(out, symbols: int, days: int, *, levels: int = 5, events: int = 100_000,
                     seed: int = 0, start: str = "2024-01-02",
                     chunk_size: int = 250_000) -> Dataset:
    """Write ``symbols`` x ``days`` simulated LOBSTER zips into folder ``out`` (created) and
    ``out/params.json``; see the module docstring for the names, the parameters and the
    columns. ``events``: events per symbol-day (fewer when the day would run past 16:00);
    ``levels``: order-book levels in the files; ``start``: the first trading day. Existing
    files of the same names are replaced (each written atomically)."""
    for name, v in (("symbols", symbols), ("days", days), ("levels", levels),
                    ("events", events), ("chunk_size", chunk_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dates = trading_days(start, days)
    params = symbol_params(symbols, seed, events=events, levels=levels)
    files, counts = [], []
    for i, p in enumerate(params):
        row, crow = [], []
        for d, date in enumerate(dates):
            path = out / f"{p.symbol}_{date}_34200000_57600000_{levels}.zip"
            s = [seed, i, d + 1]
            readme = (f"Simulated by ofi_fast.dataset (not market data): symbol {p.symbol}, "
                      f"{date}, seed {s}, levels {levels}\n"
                      + json.dumps(dataclasses.asdict(p), indent=1) + "\n")
            n = write_lobster_zip(
                path, lambda p=p, s=s: simulate_day(p, s, events, levels, chunk_size),
                symbol=p.symbol, date=date, levels=levels, readme=readme)
            row.append(path)
            crow.append(n)
        files.append(tuple(row))
        counts.append(tuple(crow))
    meta = {"generator": "ofi_fast.dataset.simulate_dataset", "seed": seed, "levels": levels,
            "events": events, "start": start, "dates": dates,
            "symbols": [dict(dataclasses.asdict(p), touch_depth=p.touch_depth,
                             files=[f.name for f in files[i]], events=list(counts[i]))
                        for i, p in enumerate(params)]}
    tmp = out / f".params.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, out / "params.json")
    return Dataset(out, tuple(params), tuple(dates), tuple(files), tuple(counts))
