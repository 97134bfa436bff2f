"""Type stubs for ofi_fast._simulate (compiled): the simulator's event loop (internal)."""

import numpy as np
from numpy.typing import ArrayLike, NDArray

def _pairwise_sum(a: ArrayLike) -> float: ...

class SimEngine:
    ts: int
    bid_tick: int
    ask_tick: int
    def __init__(self, rng: np.random.Generator, levels: int, block: int, lot: float,
                 cancel_c: float, market_rate: float, inside_rate: float, depth_lam: float,
                 geo_p: float, limit: ArrayLike, qb: ArrayLike, qa: ArrayLike, ts: int,
                 bid_tick: int, pool_size: int) -> None: ...
    @property
    def qb(self) -> NDArray[np.float64]: ...
    @property
    def qa(self) -> NDArray[np.float64]: ...
    def run(self, n: int, tick_size: float, out: tuple[NDArray, ...] | None = ...) -> tuple[
        NDArray[np.int64], NDArray[np.int8], NDArray[np.int8], NDArray[np.float64],
        NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
        NDArray[np.float64]]: ...
