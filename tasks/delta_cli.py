"""``harness delta FILE``: δ-hyperbolicity of a feature or distance matrix saved as .npy / .npz / .pt.

Every bad input is a one-line error (exit status 2): a missing, empty or truncated file, a pickle
(only plain arrays are read), complex or non-numeric values, a point set too large for the memory it
needs, all points identical (δ_rel = 2δ/diam undefined).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.tasks.delta_estimators import (DEFAULT_N_BASES, ESTIMATORS, EXACT_AUTO_MAX_N, EXACT_MAX_N,
                                            METRIC_CHOICES, SAMPLED_ESTIMATORS, delta_hyperbolicity)

FEATURE_METRICS = tuple(m for m in METRIC_CHOICES if m != "precomputed")


#: 0-d arrays of a cell's ``.npz`` (``save_embeddings=true``) naming the geometry its embeddings live in
GEOMETRY_KEYS = ("geometry", "geometry_c")


def _load_matrix(path: str, key: str | None) -> tuple[np.ndarray, tuple[str, float] | None]:
    """The 2-D array in ``path`` (``key`` in an archive), and the geometry the file records, if any."""
    import pickle
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such file: {path}")
    if p.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt", ".pth"):
        raise ValueError(f"unsupported file type '{suffix}'; give a .npy, .npz, .pt or .pth file")
    magic = {".npy": b"\x93NUMPY", ".npz": b"PK"}.get(suffix)
    if magic is not None:
        with p.open("rb") as fh:
            head = fh.read(8)
        if not head.startswith(magic):
            raise ValueError(f"{path} is not a NumPy {suffix} file (it starts with {head!r}, not {magic!r}); write "
                             f"it with np.{'save' if suffix == '.npy' else 'savez'}(path, array)")
    try:
        if suffix == ".npy":
            obj: Any = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path} holds pickled Python objects; only plain numeric arrays are read "
                             "(np.save(path, array) of a float array)") from exc
        raise ValueError(f"{path} could not be read: {' '.join(str(exc).split())[:200]} (truncated or not an array "
                         "file?)") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ValueError(f"{path} could not be read as a tensor file ({type(exc).__name__}: {first}); "
                         "truncated, or a pickle of other objects? save it with torch.save(tensor, path)") from exc
    recorded = None
    if isinstance(obj, dict):
        if all(isinstance(obj.get(k), np.ndarray) and obj[k].ndim == 0 for k in GEOMETRY_KEYS):
            recorded = (str(obj["geometry"]), float(obj["geometry_c"]))
        arrays = {k: v for k, v in obj.items() if isinstance(v, (np.ndarray, torch.Tensor)) and k not in GEOMETRY_KEYS}
        if key is None:
            if len(arrays) != 1:
                raise ValueError(f"{path} holds {len(arrays)} arrays ({', '.join(map(str, arrays)) or 'none'}); "
                                 "pick one with --key")
            obj = next(iter(arrays.values()))
        elif key not in arrays:
            raise ValueError(f"{path} has no array '{key}'; it has: {', '.join(map(str, arrays)) or 'none'}")
        else:
            obj = arrays[key]
    if not isinstance(obj, (np.ndarray, torch.Tensor)):
        raise ValueError(f"{path} does not hold an array or tensor (got {type(obj).__name__})")
    a = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
    if np.iscomplexobj(a):
        raise ValueError(f"{path} holds complex values; δ needs real features or distances")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{path} holds {a.dtype} values, not numbers")
    if a.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {a.shape}; expected (n, d) features or an (n, n) "
                         "distance matrix")
    if 0 in a.shape:
        raise ValueError(f"{path} holds no points (shape {a.shape})")
    return a, recorded


def _feature_metric(args: argparse.Namespace, recorded: tuple[str, float] | None) -> tuple[str, float]:
    """The metric and c of feature rows: ``--metric`` / ``--c``, else the geometry the file records (a
    cell's ``.npz``: its embeddings are read in the method's own geometry), else Euclidean."""
    if args.metric is not None or recorded is None:
        return args.metric or "euclidean", 1.0 if args.c is None else args.c
    name, c = recorded
    if name not in FEATURE_METRICS:
        raise ValueError(f"{args.file} records the geometry '{name}', which harness delta cannot read; pass "
                         f"--metric ({', '.join(FEATURE_METRICS)}) or a --distances matrix")
    if args.c is not None and name != "euclidean" and args.c != c:
        raise ValueError(f"{args.file} records the geometry {name} with c = {c:g}, not --c {args.c:g}; drop --c to "
                         "read it as recorded, or pass --metric too to read it otherwise")
    print(f"harness delta: note: reading {args.file} in the geometry it records: {name}"
          + (f" (c = {c:g})" if name != "euclidean" else "") + "; --metric reads it otherwise", file=sys.stderr)
    return name, c


def _looks_like_distances(a: np.ndarray) -> bool:
    if a.shape[0] != a.shape[1] or not np.isfinite(a).all():
        return False
    scale = float(np.abs(a).max()) or 1.0
    return bool(np.abs(np.diagonal(a)).max() <= 1e-6 * scale and np.abs(a - a.T).max() <= 1e-6 * scale
                and a.min() >= 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness delta",
        description="Gromov δ-hyperbolicity of a feature matrix (n, d) or a distance matrix (n, n): "
                    "δ (four-point, Gromov products with the ½), δ_rel = 2δ/diam, exact or a certified bracket.")
    p.add_argument("file", help="a .npy, .npz, .pt or .pth file holding one 2-D array")
    p.add_argument("--distances", action="store_true", help="the (square) input is a distance matrix")
    p.add_argument("--metric", choices=FEATURE_METRICS, default=None,
                   help="distance between feature rows: the Poincaré ball, or hyperboloid points (time coordinate "
                        "first). Default: the geometry a cell's .npz records (save_embeddings=true), else euclidean")
    p.add_argument("--c", type=float, default=None,
                   help="curvature: the ball's radius is 1/sqrt(c) (default: the c the .npz records, else 1)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true",
                      help=f"exact four-point δ (O(n^4); refused above {EXACT_MAX_N} points)")
    mode.add_argument("--base", type=int, default=None, metavar="K",
                      help="δ_w at base point K only (what the reference computes for one sample)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="auto",
                   help="auto: exact up to %d points, else a bracket; hyptorch / hyp_metric / max_over_draws "
                        "reproduce published sampling protocols" % EXACT_AUTO_MAX_N)
    p.add_argument("--bases", type=int, default=DEFAULT_N_BASES, metavar="K", help="base points of a bracket")
    p.add_argument("--sample-size", type=int, default=None, help="points per draw (sampled estimators)")
    p.add_argument("--draws", type=int, default=None, help="number of draws (sampled estimators)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled estimators' draws")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--key", default=None, help="array name inside a .npz / a saved dict")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def cli_main(argv: list[str]) -> int:
    """``harness delta FILE [...]``: print δ, δ_rel, diameter, exact or bracket, and time. Returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return int(exc.code or 0)
    try:
        a, recorded = _load_matrix(args.file, args.key)
        if args.distances:
            if args.metric is not None:
                raise ValueError("--metric applies to feature input; a --distances matrix is used as given")
            metric, c = "precomputed", 1.0
        else:
            metric, c = _feature_metric(args, recorded)
            if _looks_like_distances(a):
                print(f"harness delta: note: {args.file} is square, symmetric with a zero diagonal; it is read "
                      "as features (pass --distances to read it as a distance matrix)", file=sys.stderr)
        res = delta_hyperbolicity(a, metric=metric, c=c, estimator=args.estimator,
                                  exact=True if args.exact else None, base=args.base, n_bases=args.bases,
                                  sample_size=args.sample_size, draws=args.draws, seed=args.seed,
                                  device=args.device)
    except (ValueError, MemoryError) as exc:
        print(f"harness delta: error: {exc}", file=sys.stderr)
        return 2
    if not res["diameter"]:
        print(f"harness delta: error: all {res['n']} points of {args.file} are identical (diameter 0): δ = 0 and "
              "δ_rel = 2δ/diam is undefined", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_jsonable(res), sort_keys=True))
        return 0
    print(_describe(res, args.file))
    return 0


def _jsonable(res: dict[str, Any]) -> dict[str, Any]:
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [fix(u) for u in v]
        return v
    return {k: fix(v) for k, v in res.items()}


def _describe(res: dict[str, Any], name: str) -> str:
    diam = res["diameter"]
    rel = (lambda v: 2 * v / diam if diam else float("nan"))
    est = res["estimator"]
    where = f"metric {res['metric']}" + (f" (c = {res['c']:g})" if res["c"] is not None else "")
    lines = [f"{name}: {res['n']} points, {where}"]
    if est in SAMPLED_ESTIMATORS:
        lines += [f"estimator    {est}: {res['draws']} draws of {res['sample_size']} points "
                  f"({'with' if res['replace'] else 'without'} replacement, seed {res['seed']}), base = first sample",
                  f"δ            {res['delta']:.6g}",
                  f"δ_rel        {res['delta_rel']:.6g} ± {res['delta_rel_std']:.3g} (std over draws)",
                  f"diameter     {diam:.6g} (mean over draws)" if SAMPLED_ESTIMATORS[est].reduce == "mean"
                  else f"diameter     {diam:.6g} (of the max draw)",
                  "exact        no (a sample estimate, no bounds on the full set's δ)"]
    elif res["exact"]:
        lines += [f"δ            {res['delta']:.6g} (exact four-point)",
                  f"δ_rel        {res['delta_rel']:.6g}",
                  f"diameter     {diam:.6g}", "exact        yes"]
    else:
        what = f"δ_w at base point {res['base']}" if est == "base" else f"bracket from {len(res['bases'])} base points"
        lines += [f"δ            {res['delta']:.6g} ({what})",
                  f"δ_rel        {res['delta_rel']:.6g}",
                  f"bracket      {res['lower']:.6g} ≤ δ ≤ {res['upper']:.6g}   "
                  f"({rel(res['lower']):.4g} ≤ δ_rel ≤ {rel(res['upper']):.4g})",
                  f"diameter     {diam:.6g}", "exact        no"]
    t = f"time         {res['seconds']:.3f} s on {res['device']} ({res['backend']})"
    if res.get("compile_seconds"):
        t += f"; + {res['compile_seconds']:.2f} s one-off kernel compile/cache load"
    lines.append(t)
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - `harness delta` is the entry point
    raise SystemExit(cli_main(sys.argv[1:]))
