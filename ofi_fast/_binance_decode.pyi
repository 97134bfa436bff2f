"""Type stubs for ofi_fast._binance_decode (compiled): Binance diff-depth frames -> reused
typed buffers (the live client's per-message path)."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

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
    def __init__(self, capacity: int = 256) -> None: ...
    def fill(self, bids: Any, asks: Any, ts: int) -> int: ...
    def scan(self, raw: Any, ts_local: int, exchange_clock: bool) -> dict[str, Any] | None: ...
    def rows(self) -> tuple[NDArray[np.int8], NDArray[np.float64], NDArray[np.float64],
                            NDArray[np.uint8]]: ...
