"""Type stubs for ofi_fast._binance_decode (compiled): Binance diff-depth frames -> reused
typed buffers, and the live client's per-diff step into a BookOFI."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ofi_fast._book import BookOFI

STEP_NONE: int
STEP_SCANNED: int
STEP_APPLIED: int

def in_sequence(U: int, u: int, pu: int | None, prev_u: int, futures: bool) -> bool: ...

class DiffBuffers:
    side: NDArray[np.int8]
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    flags: NDArray[np.uint8]
    batch_end: NDArray[np.bool_]
    ts: NDArray[np.int64]
    out: NDArray[np.float64]
    n: int
    capacity: int
    U: int
    u: int
    pu: int
    E: int
    T: int
    t: int
    has_E: bool
    has_T: bool
    has_pu: bool
    has_s: bool
    symbol_ok: bool
    e: float
    mid: float
    symbol: bytes | None
    def __init__(self, capacity: int = 256) -> None: ...
    def fill(self, bids: Any, asks: Any, ts: int) -> int: ...
    def scan(self, raw: Any, ts_local: int, exchange_clock: bool) -> dict[str, Any] | None: ...
    def expect(self, symbol: str | None) -> None: ...
    def apply(self, ofi: BookOFI) -> float: ...
    def step(self, raw: Any, ts_local: int, exchange_clock: bool, prev_u: int, futures: bool,
             ofi: BookOFI, last_ts: int, every: int, bar: int) -> int: ...
    def rows(self) -> tuple[NDArray[np.int8], NDArray[np.float64], NDArray[np.float64],
                            NDArray[np.uint8]]: ...
