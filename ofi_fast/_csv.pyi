"""Type stubs for ofi_fast._csv (compiled): the feed readers' typed CSV tokenizer."""

from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

SKIP: int
INT: int
INT8: int
SCALED: int
FLOAT: int
INT_F64: int
BOOL: int
SIDE_BOOK: int
SIDE_TRADE: int
ID: int
MATCH: int
KIND_NAMES: tuple[str, ...]

PARSE_OK: int
PARSE_BAD_NUMBER: int
PARSE_OUT_OF_RANGE: int
PARSE_OVERFLOW: int
PARSE_TOO_FEW: int
PARSE_TOO_MANY: int
PARSE_BAD_TOKEN: int
PARSE_EMPTY_FIELD: int
PARSE_EMPTY_LINE: int
PARSE_TOO_LONG: int

def column(name: str, kind: int, *, lo: int | None = None, hi: int | None = None,
           mult: int = 1, offset: int = 0, digits: int = 0, divisor: float = 1.0,
           sentinel: int | None = None, positive: bool = False, nonneg: bool = False,
           empty: float | None = None, zero_after_sentinel: bool = False,
           nonzero: bool = False, token: bytes | None = None, strict: bool = False,
           hint: str | None = None) -> dict[str, Any]: ...

class Tokenizer:
    ncols: int
    skip_blank: bool
    specs: tuple[dict[str, Any], ...]
    names: tuple[str, ...]
    capacity: int
    def __init__(self, columns: Sequence[dict[str, Any]], skip_blank: bool = False) -> None: ...
    def bind(self, outs: Sequence[NDArray[Any] | None],
             lines: NDArray[np.int64] | None = None) -> "Tokenizer": ...
    def unbind(self) -> None: ...
    def parse(self, buf: bytes | bytearray | memoryview, start: int, max_lines: int,
              final: bool, row0: int,
              line0: int = 1) -> tuple[int, int, int, int, int, int, int, int, int, int]: ...
    def describe(self, status: int, field: int, text: bytes) -> str: ...

def parse_rows(columns: Sequence[dict[str, Any]], data: bytes, *,
               skip_blank: bool = False) -> tuple[list[NDArray[Any] | None], int]: ...
