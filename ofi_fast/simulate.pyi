"""Type stubs for ofi_fast.simulate (so the simulator's results are typed for mypy / pyright
whether the module is Python or compiled)."""

from typing import Any, Iterator

import numpy as np
from numpy.typing import NDArray

ADD: int
CANCEL: int
EXECUTE: int

class SimResult:
    ts: NDArray[np.int64]
    event_type: NDArray[np.int8]
    side: NDArray[np.int8]
    price: NDArray[np.float64]
    size: NDArray[np.float64]
    bid_px: NDArray[np.float64]
    bid_sz: NDArray[np.float64]
    ask_px: NDArray[np.float64]
    ask_sz: NDArray[np.float64]
    trade_ts: NDArray[np.int64]
    trade_price: NDArray[np.float64]
    trade_size: NDArray[np.float64]
    trade_side: NDArray[np.int8]
    trade_index: NDArray[np.int64]
    tick_size: float
    def __init__(self, **arrays: Any) -> None: ...
    def __len__(self) -> int: ...
    @property
    def levels(self) -> int: ...
    @property
    def mid(self) -> NDArray[np.float64]: ...
    def best(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                            NDArray[np.float64]]: ...
    @staticmethod
    def concatenate(parts: list[SimResult]) -> SimResult: ...

class LOBSimulator:
    def __init__(self, seed: int = 0, *, levels: int = 5, tick_size: float = 0.01,
                 start_price: float = 100.0, start_ts: int = 34_200_000_000_000,
                 limit_rate: float = 5.0, limit_decay: float = 0.85, cancel_rate: float = 0.5,
                 market_rate: float = 1.5, inside_rate: float = 20.0, mean_size: float = 200.0,
                 lot: float = 100.0, block: int = 256) -> None: ...
    def run(self, n_events: int) -> SimResult: ...
    def chunks(self, n_events: int, chunk_size: int = 1_000_000) -> Iterator[SimResult]: ...

def simulate(n_events: int = 100_000, *, seed: int = 0, levels: int = 5,
             **params: Any) -> SimResult: ...
def simulate_chunks(n_events: int, *, chunk_size: int = 1_000_000, seed: int = 0,
                    levels: int = 5, **params: Any) -> Iterator[SimResult]: ...
