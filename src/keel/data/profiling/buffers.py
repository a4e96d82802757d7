"""Arrow arrays' buffers read as NumPy arrays, without copying and without ``pyarrow.compute``.

``to_numpy`` would do, but it makes pyarrow import pandas (0.4 s and 40 MB
that a standalone comparison does not need), and Arrow's compute functions
load ``pyarrow.compute`` (25 ms of a command's start-up).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["valid_mask", "values_of"]


def values_of(array: pa.Array, dtype: type[np.generic]) -> np.ndarray:
    """A fixed-width array's value buffer as ``dtype`` (null slots hold whatever it has)."""
    size = np.dtype(dtype).itemsize
    buffer = array.buffers()[1]
    if buffer is None:  # an empty array may have no buffer
        return np.empty(0, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=len(array), offset=array.offset * size)


def valid_mask(array: pa.Array) -> np.ndarray:
    """One bool per slot: True where the value is not null (read off the validity bitmap)."""
    bitmap = array.buffers()[0]
    if bitmap is None or array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    end = array.offset + len(array)
    bits = np.unpackbits(
        np.frombuffer(bitmap, dtype=np.uint8, count=(end + 7) // 8), count=end, bitorder="little"
    )
    return bits[array.offset :].astype(bool)
