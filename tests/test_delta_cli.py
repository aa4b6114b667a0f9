"""`harness delta FILE`: cli_main called with argv lists; numbers checked against the library and brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.tasks import delta_estimators as D
from harness.tasks.delta_cli import cli_main, delta_hyperbolicity

from tests.test_delta import brute_four_point, dense_delta_w, euclid, poincare_dist

KEYS = ("delta", "delta_rel", "diameter", "exact", "lower", "upper", "n", "seconds")


def run_json(capsys, argv):
    assert cli_main([*argv, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


@pytest.fixture
def feats(tmp_path):
    x = np.random.default_rng(0).normal(size=(9, 3))
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, str(path)


def test_npy_features_json_is_the_exact_value(capsys, feats):
    x, path = feats
    res = run_json(capsys, [path])
    assert all(k in res for k in KEYS)
    assert res["exact"] is True and res["n"] == 9 and isinstance(res["seconds"], float)
    assert res["delta"] == pytest.approx(brute_four_point(euclid(x)), rel=1e-6)
    assert res["lower"] == res["delta"] and 0 <= res["upper"] - res["lower"] <= 6 * 2.0 ** -24 * res["diameter"]
    assert res["diameter"] == pytest.approx(euclid(x).max())
    assert res["delta_rel"] == pytest.approx(2 * res["delta"] / res["diameter"])


def test_pt_poincare_with_curvature(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 2))
    x = 0.6 * x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(0.1, 1, (8, 1))
    path = tmp_path / "emb.pt"
    torch.save(torch.tensor(x, dtype=torch.float64), path)
    res = run_json(capsys, [str(path), "--metric", "poincare", "--c", "2"])
    assert res["metric"] == "poincare" and res["c"] == 2.0
    assert res["delta"] == pytest.approx(brute_four_point(poincare_dist(x, 2.0)), rel=1e-6)


def _cell_npz(path, points, geometry, c):
    """A cell's ``.npz`` as ``save_embeddings=true`` writes it: splits' arrays and the geometry."""
    np.savez(path, test_embeddings=points, test_indices=np.arange(len(points)), geometry=np.array(geometry),
             geometry_c=np.array(c))
    return str(path)


def test_a_cell_npz_is_read_in_the_geometry_it_records(capsys, tmp_path):
    from harness.geometry import poincare_to_lorentz

    rng = np.random.default_rng(4)
    c = 0.5
    ball = rng.normal(size=(8, 2))
    ball = 0.9 / np.sqrt(c) * ball / np.linalg.norm(ball, axis=1, keepdims=True) * rng.uniform(0.1, 1, (8, 1))
    expected = brute_four_point(poincare_dist(ball, c))
    hyperboloid = poincare_to_lorentz(torch.tensor(ball), c=c).numpy()  # an isometry: the same δ
    for geometry, points in (("poincare", ball), ("lorentz", hyperboloid)):
        path = _cell_npz(tmp_path / f"{geometry}.npz", points, geometry, c)
        res = run_json(capsys, [path, "--key", "test_embeddings"])
        assert (res["metric"], res["c"]) == (geometry, c)
        assert res["delta"] == pytest.approx(expected, rel=1e-6)
        assert cli_main([path, "--key", "test_embeddings"]) == 0
        assert f"in the geometry it records: {geometry} (c = 0.5)" in capsys.readouterr().err
    # told otherwise, it reads otherwise: Euclidean distances between the hyperboloid's coordinates
    res = run_json(capsys, [str(tmp_path / "lorentz.npz"), "--key", "test_embeddings", "--metric", "euclidean"])
    assert res["delta"] == pytest.approx(brute_four_point(euclid(hyperboloid)), rel=1e-6)


@pytest.mark.parametrize("argv, match", [
    (["--c", "2"], "records the geometry lorentz with c = 0.5, not --c 2"),
    (["--metric", "poincare"], r"7 of 7 points lie on or outside the Poincaré ball of c = 1 .* hyperboloid points "
                               r"are metric 'lorentz'"),
])
def test_a_recorded_geometry_contradicted_or_misread_is_an_error(capsys, tmp_path, argv, match):
    from harness.geometry import poincare_to_lorentz

    ball = np.random.default_rng(5).uniform(-0.5, 0.5, size=(7, 3))
    path = _cell_npz(tmp_path / "e.npz", 3 * poincare_to_lorentz(torch.tensor(ball), c=0.5).numpy(), "lorentz", 0.5)
    assert cli_main([path, "--key", "test_embeddings", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness delta: error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(match, err), err


def test_a_geometry_harness_delta_cannot_read_is_named(capsys, tmp_path):
    path = _cell_npz(tmp_path / "s.npz", np.eye(5), "sphere", 1.0)
    assert cli_main([path, "--key", "test_embeddings"]) == 2
    assert "records the geometry 'sphere', which harness delta cannot read" in capsys.readouterr().err
    assert cli_main([path, "--key", "test_embeddings", "--metric", "euclidean"]) == 0


def test_distances_flag_and_the_note_without_it(capsys, tmp_path):
    d = euclid(np.random.default_rng(2).normal(size=(7, 2)))
    path = tmp_path / "d.npy"
    np.save(path, d)
    res = run_json(capsys, [str(path), "--distances"])
    assert res["metric"] == "precomputed" and res["delta"] == pytest.approx(brute_four_point(d), rel=1e-6)
    assert cli_main([str(path)]) == 0
    captured = capsys.readouterr()
    assert "--distances" in captured.err  # a square zero-diagonal input read as features gets a note


def test_base_point_is_the_reference_delta_w(capsys, feats):
    x, path = feats
    res = run_json(capsys, [path, "--base", "3"])
    assert res["base"] == 3 and res["exact"] is False
    assert res["delta"] == pytest.approx(dense_delta_w(euclid(x), 3), abs=1e-6)
    assert res["lower"] <= brute_four_point(euclid(x)) + 1e-9 <= res["upper"] + 1e-9


def test_exact_refused_when_n_is_too_large(capsys, feats, monkeypatch):
    monkeypatch.setattr(D, "EXACT_MAX_N", 8)
    _, path = feats
    assert cli_main([path, "--exact"]) == 2
    err = capsys.readouterr().err
    assert "refused above 8 points" in err and "bracket" in err


def test_estimator_seed_and_sample_options(capsys, tmp_path):
    x = np.random.default_rng(3).normal(size=(60, 4))
    path = tmp_path / "x.npz"
    np.savez(path, feats=x, labels=np.arange(60))
    res = run_json(capsys, [str(path), "--key", "feats", "--estimator", "hyptorch", "--sample-size", "20",
                            "--draws", "2", "--seed", "4"])
    ref = delta_hyperbolicity(x, estimator="hyptorch", sample_size=20, draws=2, seed=4)
    assert res["delta_rel"] == pytest.approx(ref["delta_rel"])
    assert (res["estimator"], res["sample_size"], res["draws"], res["seed"]) == ("hyptorch", 20, 2, 4)
    assert res["lower"] is None and res["upper"] is None


def test_bracket_from_the_command_line(capsys, feats, monkeypatch):
    monkeypatch.setattr(D, "EXACT_AUTO_MAX_N", 4)
    x, path = feats
    res = run_json(capsys, [path, "--bases", "2"])
    assert res["estimator"] == "bracket" and len(res["bases"]) == 2
    assert res["lower"] <= brute_four_point(euclid(x)) + 1e-9 <= res["upper"] + 1e-9
    assert cli_main([path, "--bases", "2"]) == 0
    out = capsys.readouterr().out
    assert "≤ δ ≤" in out and "exact        no" in out


def test_human_readable_output(capsys, feats):
    _, path = feats
    assert cli_main([path]) == 0
    out = capsys.readouterr().out
    for word in ("δ ", "δ_rel", "diameter", "exact        yes", "time"):
        assert word in out


@pytest.mark.parametrize("setup,argv,match", [
    (None, [], "no such file"),
    ("3d", [], "shape"),
    ("npz2", [], "--key"),
    ("ok", ["--distances", "--metric", "poincare"], "--metric applies to feature input"),
    ("ok", ["--estimator", "exact", "--draws", "3"], "sampled estimators"),
    ("txt", [], "unsupported file type"),
])
def test_errors_exit_2_with_a_message(capsys, tmp_path, setup, argv, match):
    path = tmp_path / "in.npy"
    if setup == "3d":
        np.save(path, np.zeros((4, 4, 4)))
    elif setup == "npz2":
        path = tmp_path / "in.npz"
        np.savez(path, a=np.zeros((5, 2)), b=np.zeros((5, 2)))
    elif setup == "ok":
        np.save(path, np.random.default_rng(0).normal(size=(6, 2)))
    elif setup == "txt":
        path = tmp_path / "in.txt"
        path.write_text("1 2\n")
    target = str(path) if setup else str(tmp_path / "missing.npy")
    assert cli_main([target, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness delta: error:") and match in err


def test_help_and_usage_errors(capsys):
    assert cli_main(["--help"]) == 0
    assert "harness delta" in capsys.readouterr().out
    assert cli_main(["x.npy", "--exact", "--base", "1"]) == 2  # mutually exclusive
    assert "not allowed" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x76\x00{'descr': '<f8', 'fortran_order': False, "
                             b"'shape': (100, 4), }" + b" " * 40 + b"\n" + b"\x00" * 64), "could not be read"),
    (lambda p: np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True), "pickled Python objects"),
    (lambda p: p.write_text("0.1 0.2\n0.3 0.4\n"), "is not a NumPy .npy file (it starts with b'0.1 0.2\\n', not b'\\x93NUMPY')"),
    (lambda p: np.save(p, np.ones((5, 3)) + 1j), "complex values"),
    (lambda p: np.save(p, np.zeros((0, 3))), "holds no points"),
    (lambda p: np.save(p, np.ones((6, 3))), "are identical (diameter 0)"),
])
def test_bad_files_are_one_line_errors(tmp_path, capsys, make, message):
    path = tmp_path / "x.npy"
    make(path)
    assert cli_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_truncated_and_pickled_torch_files_are_one_line_errors(tmp_path, capsys):
    good = tmp_path / "good.pt"
    torch.save(torch.randn(20, 3), good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:60])
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickle.pt")
    for name in ("cut.pt", "pickle.pt"):
        assert cli_main([str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "could not be read as a tensor file" in err and len(err.strip().splitlines()) == 1


def test_too_many_points_are_refused_before_any_matrix_is_built(tmp_path, capsys, monkeypatch):
    import tracemalloc

    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(25_000, 2)).astype(np.float32))
    tracemalloc.start()
    assert cli_main([str(tmp_path / "big.npy")]) == 2
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "25,000 points" in capsys.readouterr().err
    assert peak < 50 * 2**20  # refused before an n×n matrix (5 GB) was built
    monkeypatch.setattr(D, "available_memory", lambda: 2**20)  # a machine with 1 MiB free
    np.save(tmp_path / "mid.npy", np.random.default_rng(0).normal(size=(3000, 2)))
    assert cli_main([str(tmp_path / "mid.npy")]) == 2
    assert "GiB for the n×n matrices" in capsys.readouterr().err
