"""Readers of the published file formats: IDX (MNIST family) and CIFAR's pickled batches."""

from __future__ import annotations

import gzip
import io
import math
import pickle
from pathlib import Path

import numpy as np

from harness.errors import DatasetFormatError

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); all values big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``) into a native-endian numpy array.

    Layout: two zero bytes, a type code, the number of dimensions ``d``, then
    ``d`` big-endian int32 sizes, then the data in C order.
    """
    from harness.plugins.datasets._folder import reading

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path, "an IDX file" + (" (gzip)" if path.suffix == ".gz" else "")), opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    count = math.prod(dims)
    if len(raw) - offset != count * dtype.itemsize:
        raise DatasetFormatError(f"{path}: header says {dims} × {dtype.itemsize} bytes, "
                         f"file holds {len(raw) - offset} bytes of data")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def find_idx(root: Path, stem: str, subdirs: tuple[str, ...] = ("", "raw")) -> Path | None:
    """The IDX file ``stem`` (or ``stem.gz``) in ``root`` or one of its ``subdirs``, if any."""
    for sub in subdirs:
        for name in (stem, stem + ".gz"):
            p = root / sub / name if sub else root / name
            if p.is_file():
                return p
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts, lists, bytes, numpy arrays) and refuses anything else.

    A pickle can run arbitrary code; the published batches need only numpy's
    array reconstruction, so that is all this allows.
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch "
                                     "(only numpy arrays are expected)")


def load_cifar_batch(path: Path) -> dict[str, object]:
    """Load one pickled CIFAR batch (``encoding='bytes'`` as published) with ``str`` keys."""
    from harness.plugins.datasets._folder import reading

    with reading(path, "a pickled CIFAR batch"), open(path, "rb") as f:
        obj = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path} does not hold a CIFAR batch dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
