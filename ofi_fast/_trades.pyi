"""Type stubs for ofi_fast._trades (compiled)."""

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ofi_fast._results import BVCBars as BVCBars, VPINBuckets as VPINBuckets

def classify_trades(price: ArrayLike, size: ArrayLike | None = None, *, method: str,
                    bid_px: ArrayLike | None = None, ask_px: ArrayLike | None = None,
                    ts: ArrayLike | None = None, quote_ts: ArrayLike | None = None,
                    quote_lag: int = 0, tick_size: float | None = None,
                    **bvc_options: Any) -> NDArray[Any]: ...

class Classifier:
    method: str
    quote_lag: int
    def __init__(self, method: str = "lee_ready", quote_lag: int = 0) -> None: ...
    def reset(self) -> None: ...
    def update_quote(self, ts: int, bid_px: float, ask_px: float) -> None: ...
    def update(self, ts: int, price: float) -> int: ...
    def update_many(self, ts: ArrayLike | None, price: ArrayLike,
                    bid_px: ArrayLike | None = None, ask_px: ArrayLike | None = None, *,
                    out: NDArray[np.int8] | None = None) -> NDArray[np.int8]: ...
    @property
    def n_trades(self) -> int: ...
    @property
    def n_no_quote(self) -> int: ...
    @property
    def n_crossed(self) -> int: ...
    @property
    def n_unclassified(self) -> int: ...

class TradeFlow:
    window: int | None
    window_time: int | None
    classify: str | None
    window_volume: float | None
    def __init__(self, window: int | None = None, window_time: int | None = None,
                 classify: str | None = None, capacity: int | None = None,
                 grow: bool = False, window_volume: float | None = None) -> None: ...
    def update(self, ts: int, price: float, size: float, side: int = 0) -> float: ...
    def update_quote(self, ts: int, bid_px: float, ask_px: float) -> None: ...
    def update_many(self, ts: ArrayLike | None, price: ArrayLike, size: ArrayLike,
                    side: ArrayLike | None = None, *, bid_px: ArrayLike | None = None,
                    ask_px: ArrayLike | None = None, out: NDArray[np.float64] | None = None,
                    rolling: bool = False, rolling_out: NDArray[np.float64] | None = None
                    ) -> Any: ...
    buy_volume: float
    sell_volume: float
    unknown_volume: float
    net: float
    imbalance: float
    empty: bool
    n_buy: int
    n_sell: int
    n_unknown: int
    count: int
    n_events: int
    n_classified: int
    n_no_quote: int
    capacity: int
    def reset(self) -> None: ...

def trade_flow(ts: ArrayLike | None, price: ArrayLike, size: ArrayLike,
               side: ArrayLike | None = None, *, window: int | None = None,
               window_time: int | None = None, classify: str | None = None,
               bid_px: ArrayLike | None = None, ask_px: ArrayLike | None = None,
               rolling: bool = False, capacity: int | None = None, grow: bool = False,
               window_volume: float | None = None) -> Any: ...

def bvc(ts: ArrayLike, price: ArrayLike, size: ArrayLike, *, every: int, window: int = 50,
        sigma: float | None = None, max_bars: int = 50_000_000) -> BVCBars: ...

class VPIN:
    def __init__(self, bucket_volume: float, n_buckets: int) -> None: ...
    def update(self, ts: int, size: float, side: int = 0) -> int: ...
    def update_fraction(self, ts: int, size: float, buy_fraction: float) -> int: ...
    def update_many(self, ts: ArrayLike, size: ArrayLike, side: ArrayLike | None = None, *,
                    buy_fraction: ArrayLike | None = None,
                    max_buckets: int = 50_000_000) -> VPINBuckets: ...
    value: float
    bucket_volume: float
    n_buckets: int
    n_closed: int
    open_volume: float
    open_buy: float
    def reset(self) -> None: ...

def vpin(ts: ArrayLike, size: ArrayLike, side: ArrayLike | None = None, *,
         buy_fraction: ArrayLike | None = None, bucket_volume: float,
         n_buckets: int, max_buckets: int = 50_000_000) -> VPINBuckets: ...

class _EmptyTradeCall:
    def update(self, ts: int, price: float, size: float, side: int = 0) -> float: ...
