"""Readers of the published file formats: IDX (MNIST family), CIFAR's pickled batches and binary records."""

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


def idx_names(stem: str) -> tuple[str, str]:
    """The names an IDX file is published under: LeCun's dashed ``train-images-idx3-ubyte`` and the dotted
    ``train-images.idx3-ubyte`` of the Kaggle copies."""
    head, _, tail = stem.rpartition("-idx")
    return stem, f"{head}.idx{tail}"


def find_idx(root: Path, stem: str, subdirs: tuple[str, ...] = ("", "raw")) -> Path | None:
    """The IDX file ``stem`` under either of its :func:`idx_names`, plain or ``.gz``, in ``root`` or one of
    its ``subdirs``, if any."""
    for sub in subdirs:
        for name in idx_names(stem):
            for file in (name, name + ".gz"):
                p = root / sub / file if sub else root / file
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


CIFAR_IMAGE_BYTES = 3 * 32 * 32


def read_cifar_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels ``(N, label_bytes)`` int64, images ``(N, 3, 32, 32)`` uint8) of a file of CIFAR's binary version.

    The file is ``N`` records of ``label_bytes`` label bytes (CIFAR-10: 1; CIFAR-100: coarse, fine)
    then 3,072 image bytes: the 1024 red, 1024 green, 1024 blue values of a 32×32 image, row-major.
    A size that is not a whole, positive number of records is a :class:`DatasetFormatError`.
    """
    from harness.plugins.datasets._folder import reading

    record = label_bytes + CIFAR_IMAGE_BYTES
    with reading(path, "a CIFAR binary batch"):
        raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise DatasetFormatError(f"{path} holds {raw.size:,} bytes: not a whole, positive number of "
                                 f"{record:,}-byte records ({label_bytes} label byte(s) + {CIFAR_IMAGE_BYTES:,} "
                                 "image bytes each): a truncated or partial copy? copy it again from the source")
    rows = raw.reshape(-1, record)
    return rows[:, :label_bytes].astype(np.int64), rows[:, label_bytes:].reshape(-1, 3, 32, 32)
