"""Dtype policy of the geometry kernels.

* float16 / bfloat16 inputs are computed in float32 and returned in the input dtype;
  float32 and float64 are computed as they are.
* Autocast is switched off inside a kernel: under ``torch.autocast`` a matmul would
  otherwise run in half precision and ``1 - c‖x‖²`` near the boundary would be rounded to 0.
* Per-point quantities that decide accuracy near the boundary (``‖x‖²``, ``1 - c‖x‖²``)
  are accumulated in float64 (:func:`accurate_dtype`): they cost O(n·d), not O(n·m·d).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_LOW = (torch.float16, torch.bfloat16)

#: Radius margin of :func:`harness.geometry.project`, by the dtype of the *returned* tensor.
#: A projection to ``(1 - eps)/√c`` must survive rounding to that dtype: bf16 has a unit
#: roundoff of 2^-8 ≈ 3.9e-3, so 1 - 1e-5 would round to 1.0 (on the boundary, artanh = inf).
#: eps ≥ 2·unit roundoff keeps the norm of the rounded point below the radius. float32 uses
#: hyptorch's 1e-3 (Khrulkov et al. 2020); float64 uses geoopt's 1e-5.
PROJ_EPS: dict[torch.dtype, float] = {
    torch.float64: 1e-5,
    torch.float32: 1e-3,
    torch.float16: 2e-3,
    torch.bfloat16: 1e-2,
}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes in for inputs of ``dtype`` (float32 for half types)."""
    if dtype in _LOW:
        return torch.float32
    if not dtype.is_floating_point:
        raise TypeError(f"geometry kernels need floating-point tensors, got {dtype}; cast with .float()")
    return dtype


def accurate_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for O(n·d) accumulations (norms), except on MPS, which has no float64."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def proj_eps(dtype: torch.dtype) -> float:
    """Projection margin for a tensor returned in ``dtype`` (see :data:`PROJ_EPS`)."""
    return PROJ_EPS.get(dtype, 1e-3)


def _result_dtype(values: list[Any]) -> torch.dtype | None:
    dtypes = [a.dtype for a in values if isinstance(a, torch.Tensor) and a.dtype.is_floating_point]
    if not dtypes:
        return None
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


def _cast(a: Any, dtype: torch.dtype) -> Any:
    if isinstance(a, torch.Tensor) and a.dtype.is_floating_point and a.dtype != dtype:
        return a.to(dtype)
    return a


def _device_type(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a.device.type
    return "cpu"


def upcast(fn: F | None = None, *, points: int = 1) -> Any:
    """Run ``fn`` with half-precision tensors cast to float32, autocast off, result cast back.

    The result dtype is the promoted dtype of the first ``points`` positional arguments
    (the points; weights, labels and a curvature tensor do not count): bf16 points give
    bf16 results. If ``fn`` has an ``out_dtype`` keyword it receives that dtype
    (projections need it to pick a margin that survives the final rounding).
    Use as ``@upcast`` or ``@upcast(points=2)``.
    """
    if fn is None:
        return functools.partial(upcast, points=points)
    params = inspect.signature(fn).parameters
    wants_out_dtype = "out_dtype" in params
    point_names = list(params)[:points]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        pts = list(args[:points]) + [kwargs.get(n) for n in point_names[len(args) :]]
        for a in pts:
            if isinstance(a, torch.Tensor) and not a.dtype.is_floating_point:
                raise TypeError(f"{fn.__name__}: points must be floating-point tensors, got {a.dtype}; cast with .float()")
        out_dtype = _result_dtype(pts)
        if out_dtype is None:
            return fn(*args, **kwargs)
        work = compute_dtype(out_dtype)
        if wants_out_dtype:
            kwargs["out_dtype"] = out_dtype
        args = tuple(_cast(a, work) for a in args)
        kwargs = {k: _cast(v, work) for k, v in kwargs.items()}
        device_type = _device_type(args, kwargs)
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type=device_type, enabled=False):
                res = fn(*args, **kwargs)
        else:
            res = fn(*args, **kwargs)
        if work == out_dtype:
            return res
        if isinstance(res, tuple):
            return tuple(_cast(r, out_dtype) for r in res)
        return _cast(res, out_dtype)

    return wrapper  # type: ignore[return-value]
