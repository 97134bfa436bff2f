"""Many inputs (symbol-days) on Dask distributed: :func:`run` and ``ofi-fast batch``.

``run(inputs, out)`` expands ``inputs`` (files, folders, globs) into one task per symbol-day (a
LOBSTER zip or message file with its order book next to it, a recording: anything
:func:`ofi_fast.feeds.open` reads as one input) and runs them on a ``dask.distributed``
cluster: a :class:`distributed.LocalCluster` with one single-threaded worker process per core
by default, or the one ``client=`` names (a :class:`distributed.Client` or a scheduler address
such as ``"tcp://host:8786"``). Each task calls :func:`ofi_fast.analyze` on the worker, writes
that input's bar table there and sends back one summary row (a few hundred bytes): the data
is read where the workers run, so every path must be visible to every worker (and to the
client, which checks identities for resume) under the same name. An input may also be an
fsspec URL (``s3://bucket/day.zip``, ``file:///...``, globs allowed): the worker streams it
into a temporary folder (a LOBSTER message CSV with its order book) and analyses the copy;
its identity is read through fsspec (size, the store's modification time or ETag, the hash).

Outputs in ``out`` (each written atomically: a hidden temporary name in the same folder, then
``os.replace``; Ctrl-C or a killed worker leaves at most a hidden ``.*.tmp`` file, which
readers skip and the next run removes):

- ``bars/symbol=S/date=D/part-K.parquet``: the bar table (hive partitions, for
  ``pandas.read_parquet(out / "bars")``, ``polars.scan_parquet(out / "bars/**/*.parquet",
  hive_partitioning=True)``, ``dask.dataframe.read_parquet``); K is 0 unless several inputs
  hold the same symbol-day (e.g. LOBSTER's level-1 and level-5 files of one day: K by path
  order). Each file carries its input's path in the Parquet metadata (``ofi_fast.input``).
- ``summary.parquet``: one row per input done (:data:`SUMMARY_COLUMNS`), sorted by symbol,
  date, input;
- ``errors.csv``: ``input,error`` for each input that failed (the one-line message);
- ``manifest.json``: the analysis parameters and, per input, its identity (path, size,
  mtime, SHA-256 of the first and last MiB, also of a LOBSTER message file's order-book
  partner), status (``done`` / ``failed``), the bar file, the summary row or the error, the
  worker's wall time;
- ``cross_section.parquet``: per symbol, days, mean / min / max R^2, median beta and t
  statistics, mean touch depth; a last row ``symbol="*"`` over every symbol-day with CKS's
  depth relation (eq. 17: log beta regressed on log average depth at the touch, beta in ticks
  per share; slope, intercept, R^2, n).

Resume: a rerun with the same parameters submits no task for an input whose identity is
unchanged and whose last status was done or failed (a deterministic failure would fail again;
``force=True`` redoes every input). Different parameters (or another ofi_fast version) make
every earlier result stale: the old bar files are deleted and every input is redone.

Faults: every exception inside a task becomes that input's error (errors.csv), the others go
on. A worker process that dies (killed, out of memory) loses its running task; the scheduler
runs it again on another worker (``distributed.scheduler.allowed-failures``, 3 by default),
and the bar file it writes replaces any copy the dead worker finished (same input in the
metadata), so the results equal an undisturbed run's. On Ctrl-C the client cancels the
tasks, writes the outputs for what finished and re-raises: a rerun continues from there.

Depth and tick for the cross-section are measured in the task on the chunks ``analyze``
reads (through its ``progress`` hook, so the input is read once): the touch depth is the mean
over events of (bid size + ask size) / 2 at the best quotes (CKS's arithmetic average depth,
"AD"), the tick the smallest positive quoted spread. Inputs given as L2 deltas (crypto
recordings) have no per-event quotes in their chunks: depth and tick are NaN there and they
are left out of the depth relation (counted in ``depth_excluded``).

Only this module imports dask, and only when :func:`run` is called.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import glob as _glob
import hashlib
import inspect
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ofi_fast.errors import OFIError

MANIFEST_VERSION = 1
_MIB = 1 << 20
_LOBSTER_RE = re.compile(r"(?P<ticker>[^/\\_]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_"
                         r"(?P<kind>message|orderbook)_(?P<level>\d+)\.csv$")
_LOBSTER_ZIP_RE = re.compile(r"(?P<ticker>[A-Za-z0-9.\-]+)_(?P<date>\d{4}-\d{2}-\d{2})_"
                             r"(?:\d+_\d+_)?(?P<level>\d+)\.zip$")
_SKIP_SUFFIXES = (".txt", ".md", ".json", ".pdf", ".html", ".py", ".log")

#: Summary columns (and their Parquet types), in order. Quality counts follow
#: :class:`ofi_fast.quality.DataQuality`; ``dropped_<cause>`` per cause.
SUMMARY_COLUMNS: dict[str, str] = {
    "symbol": "string", "date": "string", "input": "string", "format": "string",
    "events": "int64", "trades": "int64", "bars": "int64", "empty_bars": "int64",
    "invalid_bars": "int64", "beta": "float64", "alpha": "float64", "r2": "float64",
    "t_beta": "float64", "t_beta_robust": "float64", "nw_lags": "int64", "n_fit": "int64",
    "oos_r2": "float64", "hit_rate": "float64", "n_oos": "int64",
    "forecast_r2": "float64", "forecast_hit_rate": "float64", "n_forecast": "int64",
    "vpin_min": "float64", "vpin_median": "float64", "vpin_max": "float64",
    "depth_mean": "float64", "tick": "float64", "bars_path": "string",
    "rows_read": "int64", "rows_applied": "int64", "messages_read": "int64",
    "messages_applied": "int64", "trades_read": "int64", "gaps": "int64", "resyncs": "int64",
    "other_symbol": "int64", "crossed": "int64", "locked": "int64",
    "stale_orders": "int64", "truncated": "bool", "lost": "int64", "lost_share": "float64",
}


def _drop_columns() -> dict[str, str]:
    from ofi_fast.quality import DROP_CAUSES
    return {f"dropped_{c}": "int64" for c in DROP_CAUSES}


class BatchError(OFIError):
    """The batch cannot start as asked (no inputs, an unreadable manifest, a bad option)."""


# --------------------------------------------------------------------------------------------
# inputs, identities, parameters
# --------------------------------------------------------------------------------------------

def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Absolute paths of the symbol-days in ``inputs`` (files, folders searched recursively,
    glob patterns), sorted, each once. In folders and globs, hidden files, text / JSON /
    Markdown files and LOBSTER order-book CSVs (read with their message file) are left out;
    a file named explicitly is always taken. A pattern or path that matches nothing is a
    :class:`BatchError`."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out: set[str] = set()
    for item in items:
        s = os.fspath(item)
        if is_url(s):
            out.update(_expand_url(s))
            continue
        p = Path(s)
        if p.is_file():
            out.add(os.path.abspath(p))
            continue
        if p.is_dir():
            found = [q for q in p.rglob("*") if q.is_file()]
        else:
            found = [Path(q) for q in _glob.glob(s, recursive=True) if Path(q).is_file()]
            if not found:
                raise BatchError(f"{s}: no such file, folder or matching pattern")
        kept = [q for q in found if _wanted(q)]
        if not kept and p.is_dir():
            raise BatchError(f"{s}: the folder holds no input files")
        out.update(os.path.abspath(q) for q in kept)
    if not out:
        raise BatchError("no inputs")
    return sorted(out)


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(s: str) -> bool:
    """``s`` is an fsspec URL (``s3://...``, ``gcs://...``, ``file:///...``), not a path."""
    return bool(_URL_RE.match(s))


def _expand_url(url: str) -> list[str]:
    """An fsspec URL: itself, or the files a glob pattern in it matches (same filters as a
    folder's)."""
    import fsspec
    fs, path = fsspec.core.url_to_fs(url)
    if any(c in path for c in "*?["):
        found = [fs.unstrip_protocol(q) for q in fs.glob(path) if fs.isfile(q)]
        kept = [q for q in found if _wanted(Path(q.split("://", 1)[1]))]
        if not kept:
            raise BatchError(f"{url}: no file matches")
        return kept
    if not fs.isfile(path):
        raise BatchError(f"{url}: no such file")
    return [url]


def _wanted(p: Path) -> bool:
    if any(part.startswith(".") for part in p.parts[-1:]):
        return False
    if p.suffix.lower() in _SKIP_SUFFIXES:
        return False
    m = _LOBSTER_RE.search(p.name)
    return not (m and m["kind"] == "orderbook")


def _lobster_partner(path: str) -> str | None:
    m = _LOBSTER_RE.search(Path(path).name)
    if not m or m["kind"] != "message":
        return None
    cand = Path(path).with_name(Path(path).name.replace("_message_", "_orderbook_"))
    return str(cand) if cand.exists() else None


def _file_identity(path: str) -> dict[str, Any]:
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_MIB))
        if st.st_size > 2 * _MIB:
            fh.seek(st.st_size - _MIB)
        h.update(fh.read(_MIB))
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256_first_last_mib": h.hexdigest()}


def _url_identity(url: str) -> dict[str, Any]:
    import fsspec
    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    size = int(info["size"])
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        h.update(fh.read(_MIB))
        if size > 2 * _MIB:
            fh.seek(size - _MIB)
        h.update(fh.read(_MIB))
    mtime = next((info[k] for k in ("mtime", "LastModified", "last_modified", "updated",
                                    "ETag", "etag") if info.get(k) is not None), None)
    return {"path": url, "size": size, "mtime": str(mtime),
            "sha256_first_last_mib": h.hexdigest()}


def _url_partner(url: str) -> str | None:
    import fsspec
    name = url.rsplit("/", 1)[-1]
    m = _LOBSTER_RE.search(name)
    if not m or m["kind"] != "message":
        return None
    cand = url[: len(url) - len(name)] + name.replace("_message_", "_orderbook_")
    fs, path = fsspec.core.url_to_fs(cand)
    return cand if fs.isfile(path) else None


def identity(path: str) -> dict[str, Any]:
    """What resume compares: path, size, mtime (ns) and the SHA-256 of the first and last MiB
    (the whole file when it is at most 2 MiB); for a LOBSTER message CSV, also its order-book
    file's (``orderbook``). For an fsspec URL: the size, the store's modification time (or
    ETag) as text, and the same hash, read through fsspec."""
    if is_url(path):
        ident = _url_identity(path)
        partner = _url_partner(path)
        if partner is not None:
            ident["orderbook"] = _url_identity(partner)
        return ident
    ident = _file_identity(path)
    partner = _lobster_partner(path)
    if partner is not None:
        ident["orderbook"] = _file_identity(partner)
    return ident


def _analyze_keywords() -> set[str]:
    from ofi_fast.pipeline import analyze
    return set(inspect.signature(analyze).parameters) - {"inputs", "progress", "timing"}


def parameters(analyze_options: dict[str, Any]) -> dict[str, Any]:
    """The analysis parameters as recorded in the manifest: every :func:`ofi_fast.analyze`
    keyword with its value (defaults filled in), and the ofi_fast version. An unknown keyword
    is a :class:`BatchError`."""
    from ofi_fast import __version__
    from ofi_fast.pipeline import analyze
    known = _analyze_keywords()
    bad = sorted(set(analyze_options) - known)
    if bad:
        raise BatchError(f"unknown analyze option(s) {', '.join(bad)} (known: "
                         f"{', '.join(sorted(known))})")
    sig = inspect.signature(analyze)
    params = {k: sig.parameters[k].default for k in sorted(known)}
    params.update(analyze_options)
    try:
        params = json.loads(json.dumps(params))
    except TypeError as exc:
        raise BatchError(f"analyze options must be plain values (numbers, strings, None, "
                         f"lists, dicts): {exc}") from None
    return {"analyze": params, "ofi_fast": __version__}


# --------------------------------------------------------------------------------------------
# the task (runs on a worker)
# --------------------------------------------------------------------------------------------

class _Touch:
    """Wraps ``analyze``'s chunk iterator (its ``progress`` hook): the mean touch depth
    (bid size + ask size) / 2 over quote events and the smallest positive quoted spread."""

    def __init__(self) -> None:
        self.depth_sum = 0.0
        self.n = 0
        self.min_spread = math.inf

    def __call__(self, it: Iterable[Any]) -> Iterator[Any]:
        for c in it:
            if c.kind == "quotes" and len(c):
                ok = np.isfinite(c.bid_px) & np.isfinite(c.ask_px)
                self.depth_sum += 0.5 * float(np.sum(c.bid_sz[ok]) + np.sum(c.ask_sz[ok]))
                self.n += int(np.count_nonzero(ok))
                sp = (c.ask_px - c.bid_px)[ok]
                sp = sp[sp > 0]
                if sp.size:
                    self.min_spread = min(self.min_spread, float(sp.min()))
            yield c

    @property
    def depth(self) -> float:
        return self.depth_sum / self.n if self.n else math.nan

    @property
    def tick(self) -> float:
        return round(self.min_spread, 10) if math.isfinite(self.min_spread) else math.nan


def _safe(s: str) -> str:
    """A partition value usable as a folder name (no separators, '=' or leading dot)."""
    s = re.sub(r"[/\\=:\s]+", "_", s).strip("._") or "unknown"
    return s


def _symbol_date(path: str, symbol: str | None, start_ns: np.ndarray) -> tuple[str, str]:
    name = Path(path).name
    m = _LOBSTER_RE.search(name) or _LOBSTER_ZIP_RE.search(name)
    sym = symbol or (m["ticker"] if m else Path(path).stem.split(".")[0])
    if m:
        date = m["date"]
    elif start_ns.shape[0]:
        date = _dt.datetime.fromtimestamp(int(start_ns[0]) / 1e9, _dt.timezone.utc).date(
            ).isoformat()
    else:
        date = "unknown"
    return _safe(sym), _safe(date)


def _planned_key(path: str) -> tuple[str, str] | None:
    """(symbol, date) from a LOBSTER name, before any reading (None for other names)."""
    name = Path(path).name
    m = _LOBSTER_RE.search(name) or _LOBSTER_ZIP_RE.search(name)
    return (_safe(m["ticker"]), _safe(m["date"])) if m else None


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, OSError) and exc.filename is not None:
        msg = f"{exc.filename}: {exc.strerror or exc}"
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _owner(path: Path) -> str | None:
    import pyarrow.parquet as pq
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:          # a foreign or broken file: not ours to replace
        return None
    v = meta.get(b"ofi_fast.input")
    return v.decode() if v is not None else None


def _write_bars(table: Any, out: Path, symbol: str, date: str, part: int, path: str) -> str:
    """Write the bar table to ``bars/symbol=S/date=D/part-K.parquet`` atomically; returns the
    path relative to ``out``. K starts at ``part``; a file of another input is never
    overwritten (os.link fails on an existing name: the next K is tried), one of this input
    (an earlier run, or a worker that died after writing) is replaced."""
    import pyarrow.parquet as pq
    folder = out / "bars" / f"symbol={symbol}" / f"date={date}"
    folder.mkdir(parents=True, exist_ok=True)
    arrow = table.to_arrow()
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                           b"ofi_fast.input": path.encode()})
    tmp = folder / f".part.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        pq.write_table(arrow, str(tmp))
        k = part
        while True:
            final = folder / f"part-{k}.parquet"
            try:
                os.link(tmp, final)
                break
            except FileExistsError:
                if _owner(final) == path:
                    os.replace(tmp, final)
                    break
                k += 1
    finally:
        tmp.unlink(missing_ok=True)
    return str(final.relative_to(out))


def _row(path: str, fmt: str, symbol: str, date: str, s: dict[str, Any], q: dict[str, Any],
         touch: _Touch, bars_path: str) -> dict[str, Any]:
    row: dict[str, Any] = {"symbol": symbol, "date": date, "input": path, "format": fmt}
    for k in ("events", "trades", "bars", "empty_bars", "invalid_bars", "beta", "alpha", "r2",
              "t_beta", "t_beta_robust", "nw_lags", "n_fit", "oos_r2", "hit_rate", "n_oos",
              "forecast_r2", "forecast_hit_rate", "n_forecast", "vpin_min", "vpin_median",
              "vpin_max"):
        row[k] = s.get(k, math.nan if SUMMARY_COLUMNS[k] == "float64" else 0)
    row["depth_mean"] = touch.depth
    row["tick"] = touch.tick
    row["bars_path"] = bars_path
    for k in ("rows_read", "rows_applied", "messages_read", "messages_applied", "trades_read",
              "resyncs", "other_symbol", "crossed", "locked", "stale_orders",
              "lost", "lost_share"):
        row[k] = q.get(k, 0)
    row["gaps"] = len(q.get("gaps", ()))
    row["truncated"] = q.get("truncated") is not None
    for c in _drop_columns():
        row[c] = int(q.get("dropped", {}).get(c[len("dropped_"):], 0))
    for k, v in row.items():            # plain Python values (they travel and go to JSON)
        if isinstance(v, np.generic):
            row[k] = v.item()
        elif v is None and SUMMARY_COLUMNS.get(k) == "float64":
            row[k] = math.nan
    return row


class _local_copy:
    """``with _local_copy(input) as path``: the input itself for a path; for an fsspec URL, a
    copy (streamed by fsspec, with a LOBSTER message file's order book beside it, under the
    same names) in a temporary folder of the worker, removed afterwards."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.tmp: Any = None

    def __enter__(self) -> str:
        if not is_url(self.src):
            return self.src
        import tempfile
        import fsspec
        self.tmp = tempfile.TemporaryDirectory(prefix="ofi_fast_batch_")
        names = [self.src] + [p for p in (_url_partner(self.src),) if p]
        for url in names:
            fs, path = fsspec.core.url_to_fs(url)
            fs.get_file(path, os.path.join(self.tmp.name, url.rsplit("/", 1)[-1]))
        return os.path.join(self.tmp.name, self.src.rsplit("/", 1)[-1])

    def __exit__(self, *exc: Any) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


def analyze_one(path: str, out: str, options: dict[str, Any], part: int = 0) -> dict[str, Any]:
    """The task: analyse one input with :func:`ofi_fast.analyze` (``options`` as given to
    :func:`run`), write its bars under ``out``, return ``{"status": "done", "row": ...}`` or
    ``{"status": "failed", "error": "..."}`` with the input's identity, the wall time and the
    worker's pid. Never raises for a bad input (any exception becomes the error line)."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    res: dict[str, Any] = {"input": path, "pid": os.getpid()}
    try:
        from ofi_fast.feeds import open as open_source
        from ofi_fast.pipeline import analyze
        res["identity"] = identity(path)
        open_kw = set(inspect.signature(open_source).parameters) - {"inputs"}
        src_opts = {k: v for k, v in options.items() if k in open_kw}
        fmt = src_opts.pop("format", "auto")
        # one task per core already: the readers' block-ahead thread would only compete
        src_opts.setdefault("prefetch", False)
        with _local_copy(path) as local:
            source = open_source(local, fmt, **src_opts)
            touch = _Touch()
            a = analyze(source, progress=touch,
                        **{k: v for k, v in options.items() if k not in open_kw})
        symbol, date = _symbol_date(path, a.symbol, a.bars["start_ns"])
        rel = _write_bars(a.bars, Path(out), symbol, date, part, path)
        res["row"] = _row(path, source.format, symbol, date, a.summary, a.summary["quality"],
                          touch, rel)
        res["status"] = "done"
    except Exception as exc:           # the input's error, never the batch's
        res["status"] = "failed"
        res["error"] = _one_line(exc)
    res["seconds"] = time.perf_counter() - t0
    res["cpu_seconds"] = time.process_time() - c0     # all of the process's threads
    return res


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------

def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _arrow_table(rows: list[dict[str, Any]], types: dict[str, str]):
    import pyarrow as pa
    cols = {}
    for k, t in types.items():
        vals = [r.get(k) for r in rows]
        if t == "float64":
            cols[k] = pa.array([math.nan if v is None else float(v) for v in vals], pa.float64())
        elif t == "int64":
            cols[k] = pa.array([0 if v is None else int(v) for v in vals], pa.int64())
        elif t == "bool":
            cols[k] = pa.array([bool(v) for v in vals], pa.bool_())
        else:
            cols[k] = pa.array(vals, pa.string())
    return pa.table(cols)


def _write_parquet(path: Path, rows: list[dict[str, Any]], types: dict[str, str]) -> None:
    import pyarrow.parquet as pq
    table = _arrow_table(rows, types)
    _atomic_write(path, lambda tmp: pq.write_table(table, str(tmp)))


def _write_errors(path: Path, errors: list[tuple[str, str]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["input", "error"])
            w.writerows(errors)
    _atomic_write(path, write)


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_manifest(path: Path, params: dict[str, Any], entries: dict[str, Any]) -> None:
    doc = {"ofi_fast_batch": MANIFEST_VERSION, "parameters": params,
           "inputs": _json_safe(entries)}
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text))


def _load_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("ofi_fast_batch") != MANIFEST_VERSION or not isinstance(doc.get("inputs"),
                                                                           dict):
            raise ValueError("not an ofi-fast batch manifest of this version")
        return doc
    except (ValueError, OSError) as exc:
        raise BatchError(f"{path}: unreadable manifest ({_one_line(exc)}); remove it or "
                         "use --force / force=True to start again") from None


def _row_from_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (math.nan if v is None and SUMMARY_COLUMNS.get(k) == "float64" else v)
            for k, v in row.items()}


# --------------------------------------------------------------------------------------------
# the cross-section
# --------------------------------------------------------------------------------------------

CROSS_COLUMNS: dict[str, str] = {
    "symbol": "string", "days": "int64", "r2_mean": "float64", "r2_min": "float64",
    "r2_max": "float64", "beta_median": "float64", "t_beta_median": "float64",
    "t_beta_robust_median": "float64", "depth_mean": "float64", "depth_slope": "float64",
    "depth_slope_se": "float64", "depth_intercept": "float64", "depth_r2": "float64",
    "depth_n": "int64", "depth_excluded": "int64",
}


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def col(k: str) -> np.ndarray:
        a = np.array([r[k] for r in rows], np.float64)
        return a[np.isfinite(a)]
    r2, beta, t, tr, d = (col(k) for k in ("r2", "beta", "t_beta", "t_beta_robust",
                                            "depth_mean"))

    def f(fn: Callable[[np.ndarray], Any], a: np.ndarray) -> float:
        return float(fn(a)) if a.size else math.nan
    return {"days": len(rows), "r2_mean": f(np.mean, r2), "r2_min": f(np.min, r2),
            "r2_max": f(np.max, r2), "beta_median": f(np.median, beta),
            "t_beta_median": f(np.median, t), "t_beta_robust_median": f(np.median, tr),
            "depth_mean": f(np.mean, d)}


def depth_relation(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """CKS (2014) eq. 17 over symbol-days: OLS of log(beta / tick) (ticks per share) on
    log(mean touch depth); slope (CKS: near -1), its plain standard error, intercept, R^2, the
    number of symbol-days used and of those left out (beta <= 0 or NaN, depth or tick
    unknown)."""
    x, y = [], []
    for r in rows:
        b, d, tk = r["beta"], r["depth_mean"], r["tick"]
        if all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (b, d, tk)):
            x.append(math.log(d))
            y.append(math.log(b / tk))
    out = {"depth_slope": math.nan, "depth_slope_se": math.nan, "depth_intercept": math.nan,
           "depth_r2": math.nan, "depth_n": len(x), "depth_excluded": len(rows) - len(x)}
    if len(x) >= 3 and np.ptp(x) > 0:
        xa, ya = np.array(x), np.array(y)
        xm, ym = xa.mean(), ya.mean()
        sxx = float(((xa - xm) ** 2).sum())
        slope = float(((xa - xm) * (ya - ym)).sum()) / sxx
        icpt = float(ym - slope * xm)
        resid = ya - icpt - slope * xa
        sst = float(((ya - ym) ** 2).sum())
        out.update(depth_slope=slope, depth_intercept=icpt,
                   depth_r2=1.0 - float((resid ** 2).sum()) / sst if sst > 0 else math.nan,
                   depth_slope_se=math.sqrt(float((resid ** 2).sum()) / (len(x) - 2) / sxx))
    return out


def cross_section(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per symbol (sorted) the statistics of :data:`CROSS_COLUMNS`, then the row ``"*"`` over
    all symbol-days with the depth relation (:func:`depth_relation`)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["symbol"], []).append(r)
    nan_depth = {k: math.nan for k in ("depth_slope", "depth_slope_se", "depth_intercept",
                                       "depth_r2")}
    out = [{"symbol": s, **_stats(v), **nan_depth, "depth_n": 0, "depth_excluded": 0}
           for s, v in sorted(by.items())]
    if rows:
        out.append({"symbol": "*", **_stats(rows), **depth_relation(rows)})
    return out


def format_cross_section(rows: list[dict[str, Any]]) -> str:
    """The table ``ofi-fast batch`` prints at the end."""
    def n(v: float, fmt: str) -> str:
        return "n/a" if not math.isfinite(v) else format(v, fmt)
    lines = [f"{'symbol':<10} {'days':>5} {'R2 mean':>8} {'R2 min':>7} {'R2 max':>7} "
             f"{'beta median':>12} {'t median':>9} {'t NW med':>9} {'depth mean':>11}"]
    for r in rows:
        lines.append(f"{r['symbol']:<10} {r['days']:>5} {n(r['r2_mean'], '.4f'):>8} "
                     f"{n(r['r2_min'], '.4f'):>7} {n(r['r2_max'], '.4f'):>7} "
                     f"{n(r['beta_median'], '.4g'):>12} {n(r['t_beta_median'], '.2f'):>9} "
                     f"{n(r['t_beta_robust_median'], '.2f'):>9} "
                     f"{n(r['depth_mean'], ',.0f'):>11}")
    if rows and rows[-1]["symbol"] == "*":
        a = rows[-1]
        lines.append(f"depth relation (CKS eq. 17, {a['depth_n']} symbol-days"
                     + (f", {a['depth_excluded']} left out" if a["depth_excluded"] else "")
                     + f"): log(beta/tick) = {n(a['depth_intercept'], '.3f')} + "
                     f"{n(a['depth_slope'], '.3f')} (se {n(a['depth_slope_se'], '.3f')}) "
                     f"log depth, R^2 {n(a['depth_r2'], '.3f')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What :func:`run` returns (module-level, pickles).

    ``out``: the output folder; ``inputs``: every input path; ``submitted``: tasks sent to
    the cluster this run; ``done`` / ``failed`` / ``skipped``: inputs finished this run,
    failed this run, taken from the manifest without a task; ``rows``: the summary rows (all
    inputs done, this run or earlier; what ``summary.parquet`` holds); ``errors``: ``(input,
    error)`` for each failed input; ``cross_section``: its rows (the last one ``"*"`` with the
    depth relation); ``task_seconds`` / ``task_cpu_seconds``: the workers' wall and CPU time
    (all the worker's threads) per task run; ``seconds``: the
    client's wall time (cluster start excluded); ``dashboard``: the Dask dashboard's address
    (None when unknown).
    """

    out: str
    inputs: tuple[str, ...]
    submitted: int
    done: int
    failed: int
    skipped: int
    rows: tuple[dict[str, Any], ...]
    errors: tuple[tuple[str, str], ...]
    cross_section: tuple[dict[str, Any], ...]
    task_seconds: tuple[float, ...]
    seconds: float
    dashboard: str | None = None
    task_cpu_seconds: tuple[float, ...] = ()

    def summary(self) -> Any:
        """``summary.parquet`` as a pandas DataFrame."""
        import pandas as pd
        return pd.read_parquet(Path(self.out) / "summary.parquet")

    def bars(self) -> Any:
        """Every bar file under ``bars/`` as one pandas DataFrame, with the hive partition
        columns ``symbol`` and ``date``."""
        import pandas as pd
        return pd.read_parquet(Path(self.out) / "bars")

    def format_cross_section(self) -> str:
        return format_cross_section(list(self.cross_section))


def _remove_stale(out: Path) -> None:
    """Delete hidden temporaries that an interrupted run left in ``out`` and ``out/bars``."""
    for p in list(out.glob(".*.tmp")) + list((out / "bars").rglob(".*.tmp")):
        p.unlink(missing_ok=True)


def _clear_bars(out: Path) -> None:
    """Remove the bar files of an earlier run with other parameters (only what we write)."""
    bars = out / "bars"
    if not bars.is_dir():
        return
    for p in bars.glob("symbol=*/date=*/part-*.parquet"):
        p.unlink()
    for d in sorted(bars.glob("symbol=*/date=*"), reverse=True) + sorted(bars.glob("symbol=*")):
        try:
            d.rmdir()
        except OSError:
            pass


def _same_identity(path: str, entry: dict[str, Any]) -> bool:
    old = entry.get("identity")
    if not old:
        return False
    try:
        return identity(path) == old
    except OSError:
        return False


def _plan_parts(todo: list[str], entries: dict[str, Any]) -> dict[str, int]:
    """The first part number to try per input: earlier inputs of the same LOBSTER symbol-day
    (by path) take the lower numbers, so the numbering does not depend on completion order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in sorted(set(todo) | set(entries)):
        k = _planned_key(p)
        if k is not None:
            groups.setdefault(k, []).append(p)
    parts = {}
    for members in groups.values():
        for i, p in enumerate(members):
            parts[p] = i
    return {p: parts.get(p, 0) for p in todo}


class _Progress:
    def __init__(self, total: int, skipped: int, enabled: bool) -> None:
        self.done = self.failed = 0
        self.skipped = skipped
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=skipped, unit="input", file=sys.stderr,
                                desc="ofi-fast batch")
                self._post()
            except ImportError:
                pass

    def _post(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, "
                                     f"skipped {self.skipped}")

    def step(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
            self._post()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _client(client: Any, workers: int | None, log: Callable[[str], None]):
    """(client, cluster to close or None, dashboard address)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError("ofi_fast.batch needs dask.distributed "
                         "(pip install 'ofi_fast[distributed]')") from None
    if client is None:
        import logging
        n = int(workers) if workers else (os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        c = Client(cluster)
        dash = getattr(c, "dashboard_link", None)
        log(f"ofi-fast batch: LocalCluster, {n} worker process(es), dashboard {dash}")
        return c, cluster, dash
    if isinstance(client, str):
        c = Client(client)
        dash = getattr(c, "dashboard_link", None)
        log(f"ofi-fast batch: scheduler {client}, "
            f"{len(c.scheduler_info().get('workers', {}))} worker(s), dashboard {dash}")
        return c, c, dash
    return client, None, getattr(client, "dashboard_link", None)


def _warm_up() -> int:
    """Import what a task needs (run once on every worker before the tasks, so the first
    task's time is the analysis, not the imports)."""
    import zoneinfo  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import ofi_fast.feeds.lobster  # noqa: F401
    from ofi_fast.pipeline import analyze
    analyze(None, events=2_000).bars.to_arrow()      # the lazy imports of a first analysis
    return os.getpid()


def run(inputs: str | os.PathLike | Iterable[str | os.PathLike], out: str | os.PathLike, *,
        client: Any = None, workers: int | None = None, force: bool = False,
        progress: bool = False, log: Callable[[str], None] | None = None,
        _on_result: Callable[[dict[str, Any]], None] | None = None,
        **analyze_options: Any) -> BatchResult:
    """Analyse every symbol-day of ``inputs`` on Dask and write the outputs into ``out`` (see
    the module docstring).

    ``client``: a :class:`distributed.Client`, or a scheduler address (``"tcp://host:8786"``);
    None: a LocalCluster of ``workers`` single-threaded processes (default: one per core),
    closed at the end. ``force``: redo inputs already done. ``progress``: a tqdm bar over the
    inputs on stderr (done / failed / skipped). ``log``: where the one-line notes go (cluster
    and dashboard address, stale results removed; default stderr). ``analyze_options``: the
    keywords of :func:`ofi_fast.analyze` (``every``, ``min_train``, ``chunk_rows``, ...), the
    same for every input."""
    say: Callable[[str], None] = log or (lambda s: print(s, file=sys.stderr))
    paths = expand_inputs(inputs)
    params = parameters(analyze_options)
    options = params["analyze"]
    outp = Path(out).resolve()
    if outp.exists() and not outp.is_dir():
        raise BatchError(f"{outp}: exists and is not a folder")
    outp.mkdir(parents=True, exist_ok=True)
    manifest_path = outp / "manifest.json"
    try:
        doc = _load_manifest(manifest_path)
    except BatchError:
        if not force:
            raise
        say(f"ofi-fast batch: {manifest_path} is unreadable: starting again (--force)")
        doc = {"parameters": None}
    entries: dict[str, Any] = {}
    if doc is not None:
        if doc.get("parameters") == params:
            entries = doc["inputs"]
        else:
            say(f"ofi-fast batch: parameters differ from {manifest_path}'s: every input is "
                "redone and the old bar files are removed")
            _clear_bars(outp)
    _remove_stale(outp)
    todo, skipped = [], 0
    for p in paths:
        e = entries.get(p)
        if (not force and e is not None and e.get("status") in ("done", "failed")
                and _same_identity(p, e)):
            skipped += 1
        else:
            todo.append(p)
    parts = _plan_parts(todo, entries)
    bar = _Progress(len(paths), skipped, progress)
    task_seconds: list[float] = []
    task_cpu: list[float] = []
    t0 = time.perf_counter()
    dash = None
    if todo:
        c, closer, dash = _client(client, workers, say)
        futures: dict[Any, str] = {}
        last_write = time.monotonic()
        try:
            from distributed import as_completed
            c.run(_warm_up)
            for p in todo:
                key = "ofi-fast-" + hashlib.sha256(
                    (p + json.dumps(params, sort_keys=True)).encode()).hexdigest()[:20]
                futures[c.submit(analyze_one, p, str(outp), options, parts[p],
                                 key=f"{key}-{time.time_ns()}", pure=False)] = p
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as exc:     # e.g. KilledWorker: it took every worker down
                    res = {"input": futures[fut], "status": "failed", "pid": None,
                           "error": _one_line(exc), "seconds": math.nan}
                fut.release()
                p = res["input"]
                e = {"status": res["status"], "identity": res.get("identity"),
                     "seconds": res["seconds"], "cpu_seconds": res.get("cpu_seconds"),
                     "pid": res["pid"]}
                if e["identity"] is None:
                    e.pop("identity")
                if res["status"] == "done":
                    e["row"] = res["row"]
                    e["bars"] = res["row"]["bars_path"]
                else:
                    e["error"] = res["error"]
                entries[p] = e
                if math.isfinite(res["seconds"]):
                    task_seconds.append(res["seconds"])
                    task_cpu.append(res["cpu_seconds"])
                bar.step(res["status"] == "done")
                if _on_result is not None:
                    _on_result(res)
                if time.monotonic() - last_write > 5.0:
                    _write_manifest(manifest_path, params, entries)
                    last_write = time.monotonic()
        except BaseException:
            for f in futures:
                f.cancel()
            _finish(outp, params, entries, paths)
            bar.close()
            raise
        finally:
            if closer is not None:
                closer.close()
    bar.close()
    rows, errors, cross = _finish(outp, params, entries, paths)
    return BatchResult(out=str(outp), inputs=tuple(paths), submitted=len(todo),
                       done=bar.done, failed=bar.failed, skipped=skipped, rows=tuple(rows),
                       errors=tuple(errors), cross_section=tuple(cross),
                       task_seconds=tuple(task_seconds), seconds=time.perf_counter() - t0,
                       dashboard=dash, task_cpu_seconds=tuple(task_cpu))


def _finish(out: Path, params: dict[str, Any], entries: dict[str, Any], paths: list[str]):
    """Write manifest, summary, errors and cross-section from ``entries``."""
    _write_manifest(out / "manifest.json", params, entries)
    done = [_row_from_json(e["row"]) for p, e in entries.items() if e.get("status") == "done"]
    done.sort(key=lambda r: (r["symbol"], r["date"], r["input"]))
    errors = sorted((p, e["error"]) for p, e in entries.items() if e.get("status") == "failed")
    _write_parquet(out / "summary.parquet", done, {**SUMMARY_COLUMNS, **_drop_columns()})
    _write_errors(out / "errors.csv", errors)
    cross = cross_section(done)
    _write_parquet(out / "cross_section.parquet", cross, CROSS_COLUMNS)
    return done, errors, cross
