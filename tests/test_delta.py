"""δ-hyperbolicity library: closed forms, brute-force four-point checks, the reference estimators."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.tasks import _delta_kernels as K
from harness.tasks import delta_estimators as D
from harness.tasks.delta_estimators import delta_hyperbolicity, four_point

ROOT = Path(__file__).resolve().parents[1]


def reference_module():
    """The faithful copies of hyptorch / hyp_metric delta.py in benchmarks/bench_delta.py."""
    spec = importlib.util.spec_from_file_location("bench_delta", ROOT / "benchmarks" / "bench_delta.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def brute_four_point(d: np.ndarray) -> float:
    """max over all 4-tuples (repetitions included) of (S1 − S2)/2, straight from the definition."""
    n = len(d)
    a, b, c, w = np.array(list(itertools.product(range(n), repeat=4))).T
    s = np.sort(np.stack([d[a, b] + d[c, w], d[a, c] + d[b, w], d[a, w] + d[b, c]]), axis=0)
    return float(((s[2] - s[1]) / 2).max())


def dense_delta_w(d: np.ndarray, w: int) -> float:
    """δ_w with a dense n³ max-min product (the reference formula at base w)."""
    g = 0.5 * (d[w][None, :] + d[:, w][:, None] - d)
    return float((np.minimum(g[:, :, None], g[None, :, :]).max(1) - g).max())


def euclid(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def random_tree_metric(n: int, rng: np.random.Generator) -> np.ndarray:
    """Path lengths in a random weighted tree (parent of node i is a random earlier node)."""
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n)]
    weight = rng.uniform(0.1, 2.0, n)
    adj: dict[int, list[tuple[int, float]]] = {i: [] for i in range(n)}
    for i in range(1, n):
        adj[i].append((parent[i], weight[i]))
        adj[parent[i]].append((i, weight[i]))
    d = np.zeros((n, n))
    for s in range(n):
        stack, seen = [(s, 0.0)], {s}
        while stack:
            u, du = stack.pop()
            d[s, u] = du
            for v, wt in adj[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append((v, du + wt))
    return d


def cycle_metric(n: int) -> np.ndarray:
    i = np.arange(n)
    k = np.abs(i[:, None] - i[None])
    return np.minimum(k, n - k).astype(float)


def cycle_delta(n: int) -> float:
    """Four-point δ of the n-cycle with unit edges: four points splitting it into arcs as equal
    as possible; with n = 4m + r, δ = m − ½ if r = 1, else m (checked against brute force below)."""
    m, r = divmod(n, 4)
    return m - 0.5 if r == 1 else float(m)


def poincare_dist(x: np.ndarray, c: float) -> np.ndarray:
    """d_c(x, y) = arccosh(1 + 2c‖x−y‖² / ((1 − c‖x‖²)(1 − c‖y‖²))) / √c."""
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    nx = 1 - c * (x ** 2).sum(1)
    return np.arccosh(1 + 2 * c * sq / (nx[:, None] * nx[None])) / math.sqrt(c)


def disk_sample(n: int, rng: np.random.Generator, c: float = 1.0, max_radius: float = 4.0) -> np.ndarray:
    """Points of the Poincaré disk at hyperbolic distance ≤ max_radius from the origin."""
    v = rng.normal(size=(n, 2))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = np.tanh(math.sqrt(c) * rng.uniform(0, max_radius, n) / 2) / math.sqrt(c)
    return v * r[:, None]


# ------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tree_metric_has_zero_delta(seed):
    d = random_tree_metric(40, np.random.default_rng(seed))
    tol = 1e-6 * d.max()
    assert delta_hyperbolicity(d, metric="precomputed", exact=True)["delta"] <= tol
    br = delta_hyperbolicity(d, metric="precomputed", exact=False, n_bases=4)
    assert br["lower"] <= tol and br["upper"] <= tol
    assert delta_hyperbolicity(d, metric="precomputed", base=7)["delta"] <= tol


@pytest.mark.parametrize("n", range(4, 26))
def test_cycle_graph_closed_form(n):
    d = cycle_metric(n)
    res = delta_hyperbolicity(d, metric="precomputed", exact=True)
    assert res["delta"] == pytest.approx(cycle_delta(n), abs=1e-9)
    assert res["diameter"] == n // 2
    assert res["delta_rel"] == pytest.approx(2 * cycle_delta(n) / (n // 2))
    assert four_point(d, *res["witness"]) == pytest.approx(res["delta"])


@pytest.mark.parametrize("n", range(4, 11))
def test_cycle_closed_form_is_the_brute_force_value(n):
    assert brute_four_point(cycle_metric(n)) == pytest.approx(cycle_delta(n))


@pytest.mark.parametrize("n,radius", [(8, 1.0), (12, 2.5), (16, 0.3)])
def test_points_on_a_circle(n, radius):
    """Evenly spaced points, chord (Euclidean) metric, n divisible by 4: the inscribed square
    (diagonals 2R, sides √2·R) gives (S1 − S2)/2 = (4R − 2√2·R)/2 = (2 − √2)R, the maximum."""
    th = 2 * np.pi * np.arange(n) / n
    x = radius * np.stack([np.cos(th), np.sin(th)], 1)
    res = delta_hyperbolicity(x, exact=True)
    assert res["delta"] == pytest.approx((2 - math.sqrt(2)) * radius, rel=1e-6)
    assert res["delta"] == pytest.approx(brute_four_point(euclid(x)), rel=1e-6)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_euclidean_grid(k):
    """k×k unit grid: the four corners give (S1 − S2)/2 = (√2 − 1)(k − 1)."""
    g = np.array([(i, j) for i in range(k) for j in range(k)], float)
    res = delta_hyperbolicity(g * 0.5, exact=True)
    assert res["delta"] == pytest.approx((math.sqrt(2) - 1) * (k - 1) * 0.5, rel=1e-6)
    if k <= 3:
        assert res["delta"] == pytest.approx(brute_four_point(euclid(g * 0.5)), rel=1e-6)


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_poincare_disk(c):
    rng = np.random.default_rng(int(c))
    x = disk_sample(10, rng, c)
    res = delta_hyperbolicity(x, metric="poincare", c=c, exact=True)
    ref = poincare_dist(x, c)
    assert np.allclose(D.feature_distances(x, metric="poincare", c=c), ref, atol=1e-9)
    assert res["delta"] == pytest.approx(brute_four_point(ref), rel=1e-6)
    # The hyperbolic plane of curvature −c has four-point δ = log 2 / √c (Nica & Špakula 2016,
    # Cor. 5.4); an ideal square attains it in the limit.
    big = delta_hyperbolicity(disk_sample(300, rng, c, max_radius=6.0), metric="poincare", c=c, exact=True)
    assert 0.6 / math.sqrt(c) < big["delta"] <= math.log(2) / math.sqrt(c) + 1e-6
    for radius, expect in [(0.9, 0.6876450306), (0.999, 0.69314668)]:
        sq = radius / math.sqrt(c) * np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], float)
        r = delta_hyperbolicity(sq, metric="poincare", c=c, exact=True)
        assert r["delta"] == pytest.approx(expect / math.sqrt(c), rel=1e-6)
        assert r["delta"] == pytest.approx(brute_four_point(poincare_dist(sq, c)), rel=1e-7)


# ------------------------------------------------------------------------------- brute force
def random_sets():
    rng = np.random.default_rng(123)
    for i in range(12):
        n = int(rng.integers(4, 10))
        x = rng.normal(size=(n, int(rng.integers(1, 6)))) * rng.uniform(0.1, 10)
        yield f"euclid{i}", euclid(x), True
    for i in range(6):
        n = int(rng.integers(4, 9))
        a = rng.exponential(size=(n, n)) ** 2
        a = (a + a.T) / 2
        np.fill_diagonal(a, 0)
        yield f"nonmetric{i}", a, False
    x = rng.normal(size=(8, 2))
    yield "duplicates", euclid(np.concatenate([x, x[:3]])), True


@pytest.mark.parametrize("name,d,is_metric", list(random_sets()), ids=lambda v: v if isinstance(v, str) else "")
def test_exact_equals_brute_force(name, d, is_metric):
    truth = brute_four_point(d)
    # The four-point δ equals max_w δ_w under the Gromov-product convention.
    assert max(dense_delta_w(d, w) for w in range(len(d))) == pytest.approx(truth, abs=1e-12)
    for backend in ("numba", "torch"):
        res = delta_hyperbolicity(d, metric="precomputed", exact=True, backend=backend, device="cpu")
        assert res["exact"] and res["metric_space"] == is_metric
        assert res["delta"] == pytest.approx(truth, abs=1e-6 * d.max())
        assert res["lower"] == res["delta"] <= truth + 1e-12 <= res["upper"] + 2e-12
        # the float32 kernel's rounding bound, twice: on its value and on the quadruples it did not pick
        rounding = 3 * 2.0 ** -24 * (1.0 if is_metric else 1.5) * d.max()
        assert res["upper"] - res["lower"] <= 2 * rounding + 1e-12


def test_exact_upper_bound_holds_when_float32_rounding_picks_another_quadruple():
    """A path metric scaled to 1e6 with noise of 1e-2 (review case): the float32 kernel cannot tell the
    quadruples apart (a float32 ulp at 1e6 is 0.06), so its witness need not be the maximum; the
    reported upper bound must still hold against the O(n⁴) brute force."""
    rng = np.random.default_rng(3)
    n = 14
    idx = np.arange(n, dtype=np.float64)
    noise = rng.uniform(0, 2e-2, size=(n, n))
    d = np.abs(idx[:, None] - idx[None, :]) * 1e6 + (noise + noise.T) / 2
    np.fill_diagonal(d, 0.0)
    truth = brute_four_point(d)
    for backend in ("numba", "torch"):
        res = delta_hyperbolicity(d, metric="precomputed", exact=True, backend=backend, device="cpu")
        assert res["lower"] <= truth <= res["upper"], backend
        assert res["upper"] - res["lower"] <= 6 * 2.0 ** -24 * 1.5 * d.max()


@pytest.mark.parametrize("seed", range(4))
def test_base_point_delta_and_gromov_lemma(seed):
    rng = np.random.default_rng(seed)
    d = euclid(rng.normal(size=(30, 3)))
    exact = delta_hyperbolicity(d, metric="precomputed", exact=True)["delta"]
    for w in rng.choice(30, 5, replace=False):
        for backend in ("numba", "torch"):
            res = delta_hyperbolicity(d, metric="precomputed", base=int(w), backend=backend, device="cpu")
            assert res["delta"] == pytest.approx(dense_delta_w(d, int(w)), abs=1e-6)
            assert res["delta"] - 1e-6 <= exact <= 2 * res["delta"] + 1e-6  # Gromov's lemma
            assert res["lower"] - 1e-9 <= exact <= res["upper"] + 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_bracket_contains_the_exact_value(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 120))
    kind = seed % 3
    if kind == 0:
        x = rng.normal(size=(n, 16))
        args = dict(metric="euclidean")
    elif kind == 1:
        x = disk_sample(n, rng, 1.0)
        args = dict(metric="poincare")
    else:
        x = euclid(rng.normal(size=(n, 4))) ** 1.5  # not a metric: no diam/2 cap, no pruning
        args = dict(metric="precomputed")
    exact = delta_hyperbolicity(x, exact=True, **args)
    for bases in (1, 3, 8, [0, 5, 9]):
        br = delta_hyperbolicity(x, exact=False, n_bases=bases, seed=seed, **args)
        assert br["lower"] <= exact["delta"] + 1e-9 <= br["upper"] + 2e-9
        assert br["lower"] == pytest.approx(four_point(_dist(x, args), *br["witness"]))
        assert len(br["bases"]) == (bases if isinstance(bases, int) else 3)
        assert br["upper"] <= 2 * min(br["base_deltas"]) * (1 + 1e-5) + 1e-9
        if args["metric"] != "precomputed":
            assert br["upper"] <= br["diameter"] / 2 + 1e-12


def _dist(x, args):
    if args["metric"] == "precomputed":
        return x
    return D.feature_distances(x, metric=args["metric"])


def padded(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric float32 G as the kernels take it: its int32 view padded to a multiple of
    BLOCK with PAD, and the row maxima as the row bounds."""
    m = len(g)
    mp = -(-m // K.BLOCK) * K.BLOCK
    gf = np.zeros((mp, mp), np.float32)
    gf[:m, :m] = g
    gi = gf.view(np.int32)
    gi[m:, :] = K.PAD
    gi[:m, m:] = K.PAD
    return gi, g.max(1).astype(np.float32)


def dense_excess(g: np.ndarray, kk: int) -> np.ndarray:
    """``max_{k<kk} min(g[x, k], g[k, y]) − g[x, y]`` for every pair, straight from the definition
    (float32, in row chunks to bound memory)."""
    out = np.empty_like(g)
    for i in range(0, len(g), 64):
        out[i:i + 64] = np.minimum(g[i:i + 64, :kk, None], g[None, :kk, :]).max(1) - g[i:i + 64]
    return out


def check_kernel(kernel, g: np.ndarray, kk: int) -> None:
    """The kernel's (value, x, y) against the dense excess; ``best`` as a floor."""
    gi, r = padded(g)
    m = len(g)
    e = dense_excess(g, kk)
    truth = e.max()
    v, x, y = kernel(gi, r, m, kk, np.float32(-1.0))
    assert v == truth  # max/min only select and the one subtraction is the same float32 rounding
    assert x <= y and e[x, y] == truth
    v2, x2, y2 = kernel(gi, r, m, kk, truth)  # nothing beats the floor: (best, -1, -1)
    assert (v2, x2, y2) == (truth, -1, -1)


KERNELS = pytest.mark.parametrize("kernel", [K.max_min_excess, K.max_min_excess_serial], ids=["parallel", "serial"])


@KERNELS
def test_kernel_against_dense_max_min(kernel):
    """Random symmetric G, sizes around and off the 4×4 block, with K below and above the
    size from which blocks are screened on 16-bit codes."""
    rng = np.random.default_rng(7)
    for m in (1, 5, 13, 37, 66, 150, 203):  # 150 and 203 points: several row panels
        a = rng.uniform(0, 3, size=(m, m)).astype(np.float32)
        g = np.maximum(a, a.T)
        for kk in sorted({k for k in (1, m // 2 + 1, K.SCREEN_MIN_K - 1, K.SCREEN_MIN_K, m) if k <= m}):
            check_kernel(kernel, g, kk)


def adversarial_matrices():
    """Symmetric non-negative float32 matrices built to trip a screen on 16-bit codes."""
    rng = np.random.default_rng(11)
    sym = lambda a: np.maximum(a, a.T).astype(np.float32)  # noqa: E731
    yield "ties", sym(rng.integers(0, 4, size=(130, 130)).astype(np.float32))
    blocks = rng.integers(0, 5, 133)
    yield "constant_blocks", sym(rng.uniform(0, 2, (5, 5))[blocks[:, None], blocks[None, :]])
    yield "constant", np.full((101, 101), 1.5, np.float32)
    yield "zeros", np.zeros((70, 70), np.float32)
    # 12 binades: most values fall below the codes' 8-binade range and share the bottom code.
    yield "wide_range", sym(10.0 ** rng.uniform(-9, 3, size=(120, 120)))
    # Every value sits on a bucket edge: the last or the first pattern of a 2^CODE_SHIFT bucket
    # (buckets counted from the top value, as the kernel does).
    top = np.array([4.0], np.float32).view(np.int32)[0]
    base = top - (65536 << K.CODE_SHIFT) + 1
    edges = base + (rng.integers(60000, 65536, size=(140, 140)) << K.CODE_SHIFT) - rng.integers(0, 2, (140, 140))
    g = sym(np.minimum(edges, top).astype(np.int32).view(np.float32))
    g[0, 0] = 4.0
    yield "bucket_edges", g


@KERNELS
@pytest.mark.parametrize("name,g", list(adversarial_matrices()), ids=lambda v: v if isinstance(v, str) else "")
def test_kernel_on_adversarial_matrices(kernel, name, g):
    for kk in (len(g), len(g) // 2 + 1):
        check_kernel(kernel, g, kk)


def previous_kernel_cases():
    """(Gi, r, m) from Gromov products of point clouds, a tree (δ_w = 0: every pair ties), a
    cycle, and the adversarial matrices; and the G-preparation inputs they came from."""
    rng = np.random.default_rng(12)
    sets = [euclid(rng.normal(size=(300, 16))), D.feature_distances(disk_sample(250, rng), metric="poincare"),
            random_tree_metric(150, rng), cycle_metric(130)]
    cases = []
    for d in sets:
        n = len(d)
        mp = -(-n // K.BLOCK) * K.BLOCK
        gf, _, r32, _, _ = K.prepare_base(d, 3, np.arange(n), np.empty(mp * mp, np.float32))
        cases.append((gf.view(np.int32), r32, n))
    for _, g in adversarial_matrices():
        gi, r = padded(g)
        cases.append((gi, r, len(g)))
    return sets, cases


def test_kernel_is_the_previous_kernel_bit_for_bit():
    """Same (value, x, y) as the previous int32-only kernel (``v1_*`` in benchmarks/bench_delta.py),
    ties included: the 16-bit screen only skips blocks that cannot move the running maximum."""
    ref = reference_module()
    for gi, r, m in previous_kernel_cases()[1]:
        for kk in (m, m // 3 + 1):
            for best in (np.float32(-1.0), np.float32(0.0)):
                assert (K.max_min_excess_serial(gi, r, m, kk, best)
                        == ref.v1_max_min_excess_serial(gi, r, m, kk, best))


@pytest.mark.slow
def test_parallel_kernel_preparation_and_exact_are_the_previous_ones_bit_for_bit():
    """As above for the parallel kernel, the G preparation and the whole exact four-point δ
    (the v1 copies are compiled uncached: ~10 s)."""
    ref = reference_module()
    sets, cases = previous_kernel_cases()
    for gi, r, m in cases:
        for kk in (m, m // 3 + 1):
            assert K.max_min_excess(gi, r, m, kk, np.float32(0)) == ref.v1_max_min_excess(gi, r, m, kk, np.float32(0))
    for d in sets:
        n = len(d)
        mp = -(-n // K.BLOCK) * K.BLOCK
        new = K.prepare_base(d, 3, np.arange(n), np.empty(mp * mp, np.float32))
        old = ref.v1_prepare_base(d, 3, np.arange(n), np.empty(mp * mp, np.float32))
        assert np.array_equal(new[0].view(np.int32), old[0].view(np.int32))
        assert all(np.array_equal(a, b) for a, b in zip(new[1:], old[1:]))
        order = np.argsort(-d.max(1), kind="stable")
        for metric_space in (True, False):
            # On several threads, which of tied quadruples is reported depends on timing (the
            # streams share their running maximum); on one thread it is fixed.
            assert K.exact_delta(d, order, metric_space)[0] == ref.v1_exact_delta(d, order, metric_space)[0]
            with D._numba_threads(0):
                assert K.exact_delta(d, order, metric_space) == ref.v1_exact_delta(d, order, metric_space)


def test_torch_path_in_row_blocks_matches_numba():
    d = euclid(np.random.default_rng(8).normal(size=(40, 3)))
    for w in (0, 17):
        a = D._NumbaSolver(d).base(w, np.arange(40), 0.0, None)
        b = D._TorchSolver(d, torch.device("cpu"), budget_bytes=4 * 40 * 40 * 3).base(w, np.arange(40), 0.0, None)
        assert b.value == pytest.approx(a.value, abs=1e-6)
        assert D._base_term(d, *b.witness, w) == pytest.approx(dense_delta_w(d, w), abs=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "poincare"])
def test_exact_with_pruning_is_the_same_on_both_backends(metric):
    """n = 60: the z-threshold and base-skipping prunes fire; both paths must agree with brute
    force over all C(60, 4) quadruples (in a metric repeated points give ≤ 0) and with the run
    that treats the matrix as non-metric (no metric prunes)."""
    rng = np.random.default_rng(9)
    x = disk_sample(60, rng) if metric == "poincare" else rng.normal(size=(60, 6))
    dm = D.feature_distances(x, metric=metric)
    a = delta_hyperbolicity(x, metric=metric, exact=True)
    b = delta_hyperbolicity(x, metric=metric, exact=True, backend="torch", device="cpu")
    c = delta_hyperbolicity(dm, metric="precomputed", exact=True, assume_metric=False)
    q = np.array(list(itertools.combinations(range(60), 4))).T
    s = np.sort(np.stack([dm[q[0], q[1]] + dm[q[2], q[3]], dm[q[0], q[2]] + dm[q[1], q[3]],
                          dm[q[0], q[3]] + dm[q[1], q[2]]]), axis=0)
    truth = float(((s[2] - s[1]) / 2).max())
    for r in (a, b, c):
        assert r["delta"] == pytest.approx(truth, rel=1e-6)


def test_triangle_check():
    rng = np.random.default_rng(3)
    d = euclid(rng.normal(size=(25, 3)))
    assert K.triangle_violation(d, 1e-12) <= 1e-12
    bad = d.copy()
    bad[2, 9] = bad[9, 2] = d[2, 9] + 2 * d.max()
    others = [k for k in range(25) if k not in (2, 9)]
    assert K.triangle_violation(bad, 1e-12) == pytest.approx(bad[2, 9] - (d[2, others] + d[others, 9]).min())


# ------------------------------------------------------------------------------- estimators
def test_hyptorch_estimator_reproduces_reference():
    ref = reference_module()
    x = np.random.default_rng(0).normal(size=(300, 16)) + 3
    np.random.seed(11)
    mean, std = ref.batched_delta_hyp(x, n_tries=3, batch_size=80)
    res = delta_hyperbolicity(x, estimator="hyptorch", draws=3, sample_size=80, seed=11)
    assert res["delta_rel"] == pytest.approx(mean, rel=1e-6)
    assert res["delta_rel_std"] == pytest.approx(std, rel=1e-5, abs=1e-9)
    assert (res["draws"], res["sample_size"], res["replace"], res["seed"]) == (3, 80, True, 11)
    assert res["exact"] is False and res["lower"] is None and res["upper"] is None


def test_hyp_metric_estimator_reproduces_reference():
    ref = reference_module()
    x = np.random.default_rng(1).normal(size=(200, 8))
    torch.manual_seed(5)
    expect = ref.hyp_metric_rel_delta(torch.tensor(x), n_tries=4, batch_size=60)
    res = delta_hyperbolicity(x, estimator="hyp_metric", draws=4, sample_size=60, seed=5)
    assert res["delta_rel"] == pytest.approx(expect, rel=1e-6)
    assert res["replace"] is False and res["draws"] == 4


def test_max_over_draws_and_precomputed_sampling():
    ref = reference_module()
    x = np.random.default_rng(2).normal(size=(150, 5))
    gen = np.random.default_rng(9)
    rels = []
    for _ in range(3):
        idx = gen.choice(150, 40, replace=False)
        dm = euclid(x[idx])
        rels.append(2 * ref.delta_hyp(dm) / dm.max())
    res = delta_hyperbolicity(x, estimator="max_over_draws", draws=3, sample_size=40, seed=9)
    assert res["delta_rel"] == pytest.approx(max(rels), rel=1e-6)
    assert res["draw_delta_rel"] == pytest.approx(rels, rel=1e-6)
    pre = delta_hyperbolicity(euclid(x), metric="precomputed", estimator="max_over_draws", draws=3,
                              sample_size=40, seed=9)
    assert pre["delta_rel"] == pytest.approx(max(rels), rel=1e-6)


def test_sampling_underestimates_on_clustered_features():
    """One base point of one sample is below the exact value; the bracket never is."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 16))[rng.integers(0, 10, 200)] * 2 + rng.normal(size=(200, 16))
    exact = delta_hyperbolicity(x, exact=True)
    base0 = delta_hyperbolicity(x, base=0)
    assert base0["delta"] <= exact["delta"] + 1e-9
    assert base0["lower"] <= exact["delta"] + 1e-9 <= base0["upper"] + 1e-9


# ------------------------------------------------------------------------------- dispatch, output
def test_auto_switches_to_a_bracket(monkeypatch):
    x = np.random.default_rng(0).normal(size=(20, 3))
    assert delta_hyperbolicity(x)["estimator"] == "exact"
    monkeypatch.setattr(D, "EXACT_AUTO_MAX_N", 10)
    res = delta_hyperbolicity(x)
    assert res["estimator"] == "bracket" and res["lower"] <= res["upper"]
    assert res["delta"] == res["lower"]


def test_result_fields_and_json():
    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    res = delta_hyperbolicity(x, exact=True)
    json.dumps(res)
    for key in ("delta", "delta_rel", "diameter", "exact", "lower", "upper", "n", "seconds", "estimator",
                "witness", "compile_seconds", "backend"):
        assert key in res
    assert res["n"] == 12 and res["backend"] == "numba"
    assert res["delta_rel"] == pytest.approx(2 * res["delta"] / res["diameter"])
    assert res["diameter"] == pytest.approx(euclid(x.double().numpy()).max())


def test_non_metric_precomputed_is_detected():
    a = euclid(np.random.default_rng(0).normal(size=(12, 2))) ** 2  # squared distances break the triangle
    assert delta_hyperbolicity(a, metric="precomputed", exact=True)["metric_space"] is False
    assert delta_hyperbolicity(np.sqrt(a), metric="precomputed", exact=True)["metric_space"] is True


@pytest.mark.parametrize("bad,kwargs,match", [
    (np.full((5, 2), np.nan), {}, "NaN"),
    (np.ones((3, 2)), {}, "at least 4 points"),
    (np.ones(6), {}, "2-D"),
    (np.ones((5, 4)), {"metric": "precomputed"}, "square"),
    (np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3.5, 2, 1, 0]]), {"metric": "precomputed"}, "symmetric"),
    (np.array([[0, 1, 2, 3], [1, 0.5, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]]), {"metric": "precomputed"}, "zero diagonal"),
    (np.array([[0, -1, 2, 3], [-1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]]), {"metric": "precomputed"},
     "non-negative"),
    (np.full((5, 2), 0.8), {"metric": "poincare"}, "outside the Poincaré ball"),
    (np.zeros((5, 2)), {"metric": "poincare", "c": -1.0}, "positive"),
    (np.zeros((5, 2)), {"metric": "cosine"}, "unknown metric"),
    (np.zeros((5, 2)), {"estimator": "fast"}, "unknown estimator"),
    (np.zeros((5, 2)), {"exact": True, "estimator": "hyptorch"}, "contradicts"),
    (np.zeros((5, 2)), {"base": 1, "estimator": "exact"}, "contradicts"),
    (np.zeros((5, 2)), {"base": 5}, "not an index"),
    (np.zeros((5, 2)), {"sample_size": 10}, "sampled estimators"),
    (np.zeros((5, 2)), {"exact": False, "n_bases": 0}, "at least one base"),
])
def test_bad_inputs_have_clear_errors(bad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        delta_hyperbolicity(bad, **kwargs)


def test_exact_refused_for_large_n(monkeypatch):
    monkeypatch.setattr(D, "EXACT_MAX_N", 10)
    with pytest.raises(ValueError, match="refused above 10 points"):
        delta_hyperbolicity(np.random.default_rng(0).normal(size=(11, 2)), exact=True)
