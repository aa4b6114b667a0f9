"""Class labels and identity ids given to the metric functions: whole numbers, or an error."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def integer_labels(values: Any, what: str) -> np.ndarray:
    """``values`` (1-D: a list, array or tensor of whole numbers, of any dtype) as int64.

    Floats that are not whole numbers are an error rather than truncated: ``1.7`` and ``1.2``
    would both become identity 1 and match each other.
    """
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind != "f":
        raise ValueError(f"{what} must be whole numbers, got dtype {arr.dtype}")
    whole = np.isfinite(arr) & (arr == np.round(arr))
    if not whole.all():
        bad = arr[~whole][:3].tolist()
        raise ValueError(f"{what} must be whole numbers (class or identity ids), got {int((~whole).sum())} that "
                         f"are not, e.g. {bad}; map them to integers first (np.unique(x, return_inverse=True))")
    return arr.astype(np.int64)
