"""The one place where model parameters become the floats constriction codes with.

Decoding works only if the decoder hands constriction bit-identical floats to the ones the
encoder used (`docs/design.md`, *Determinism*). Every leaf codec passes its parameters through
:func:`coder_float64`, so there is exactly one conversion rule: IEEE float64, C-contiguous.
"""

from __future__ import annotations

import numpy as np

__all__ = ["coder_float64"]


def coder_float64(values: np.ndarray) -> np.ndarray:
    """Converts model parameters to the float64 arrays handed to constriction.

    float32 and float16 inputs convert exactly (every such value is a float64 value);
    already-contiguous float64 input is returned without a copy.

    Args:
        values: Array-like of real numbers, any shape.

    Returns:
        C-contiguous float64 array of the same shape.

    Example:
        >>> coder_float64(np.array([0.5, 0.25], dtype=np.float32)).dtype
        dtype('float64')
    """
    return np.ascontiguousarray(values, dtype=np.float64)
