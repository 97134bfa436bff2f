"""ofi_fast: order flow imbalance and related microstructure signals, in typed Cython.

The façade: every public name is re-exported here. See README.md for a tour.
"""

import os as _os

# A literal, not importlib.metadata (which costs ~25-55 ms of the import); a test keeps it
# equal to pyproject.toml's version.
__version__ = "0.1.0"

from ofi_fast.errors import (
    CapacityError,
    ChecksumError,
    CrossedBookError,
    NegativeSizeError,
    NonFiniteError,
    OFIError,
    ParseError,
    SequenceGapError,
    TimeOrderError,
    TruncatedError,
)
from ofi_fast._ring import RollingSum
from ofi_fast._ofi import OFI, l1_ofi
from ofi_fast._trades import (
    VPIN, BVCBars, Classifier, TradeFlow, VPINBuckets, bvc, classify_trades, trade_flow, vpin,
)
from ofi_fast._ofi import MultiLevelOFI, integrated_weights, mlofi
from ofi_fast._book import Book, BookOFI
from ofi_fast._impact import (
    Bars, ImpactFit, RollingOLS, bar_mid, bars, event_bars, fit_impact, volume_bars,
)
from ofi_fast._microprice import Microprice

#: Names served lazily (module ``__getattr__``), so ``import ofi_fast`` does not import the
#: pipeline, the feed readers or their optional dependencies.
_LAZY = {"analyze": "ofi_fast.pipeline", "stream": "ofi_fast.pipeline",
         "Analysis": "ofi_fast.pipeline", "BarTable": "ofi_fast.pipeline",
         "StreamBar": "ofi_fast.pipeline", "DataQuality": "ofi_fast.quality"}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ofi_fast' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def get_include() -> str:
    """The folder to add to a downstream Cython build's include path.

    It holds ``ofi_fast/_ofi.pxd`` (and the other .pxd files), so that
    ``from ofi_fast._ofi cimport OFI`` resolves.
    """
    return _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))


__all__ = [
    "Analysis",
    "BarTable",
    "DataQuality",
    "StreamBar",
    "analyze",
    "stream",
    "Bars",
    "BVCBars",
    "Classifier",
    "TradeFlow",
    "VPIN",
    "VPINBuckets",
    "bvc",
    "classify_trades",
    "trade_flow",
    "vpin",
    "Book",
    "BookOFI",
    "ImpactFit",
    "RollingOLS",
    "bar_mid",
    "event_bars",
    "fit_impact",
    "volume_bars",
    "CapacityError",
    "CrossedBookError",
    "NegativeSizeError",
    "NonFiniteError",
    "OFI",
    "OFIError",
    "ParseError",
    "RollingSum",
    "SequenceGapError",
    "TimeOrderError",
    "TruncatedError",
    "bars",
    "get_include",
    "l1_ofi",
    "MultiLevelOFI",
    "integrated_weights",
    "mlofi",
    "ChecksumError",
    "Microprice",
]
