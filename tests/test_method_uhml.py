"""UHML (Yan et al., CVPR 2021): pseudo hierarchies, similarity degrees, the log-ratio loss, the method."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from harness.geometry import EuclideanGeometry, PoincareGeometry, expmap0
from harness.plugins.methods.uhml import (
    Uhml,
    UhmlEuclidean,
    cluster_batches,
    hierarchical_log_ratio_loss,
    hierarchical_pseudo_labels,
    pair_levels,
)
from harness.registry import make_config

T = 0.1 * math.log(10)  # β log(1/Ω) at the released Ω = β = 0.1: the target log-ratio per level


# --------------------------------------------------------------------------------------------
# A faithful re-typed copy of the released loss: github.com/JiexiYan/UnHyperML, commit f51a1aa,
# losses/LogRatio.py, ``similarity`` and ``LogRatio.forward``. Only what no longer runs is
# adapted: no ``.cuda()``/``Variable``, and the comparisons made ``uint8`` as ``eq`` returned in
# the PyTorch of the release (its mask subtractions rely on uint8 arithmetic, 0 - 1 wrapping to 255).
def released_similarity(inputs_):
    sim = torch.matmul(inputs_, inputs_.t())
    return sim


def released_log_ratio(inputs, labels, Omega=0.1):
    n = inputs.size(0)
    sim_mat = released_similarity(inputs)
    kk = labels.size(1)
    targets = labels[:, 0]
    eyes_ = torch.eye(n, n)
    pos_mask = targets.expand(n, n).eq(targets.expand(n, n).t()).to(torch.uint8)
    pos_mask = pos_mask - eyes_.eq(1).to(torch.uint8)
    neg_mask = []
    neg_mask_ = []
    for i in range(kk - 1, -1, -1):
        pos_mask_inter = labels[:, i].expand(n, n).eq(targets.expand(n, n).t()).to(torch.uint8)
        neg_mask_inter = eyes_.eq(eyes_).to(torch.uint8) - pos_mask_inter
        neg_mask_.append(neg_mask_inter)
        if i == kk - 1:
            neg_mask.append(neg_mask_inter)
        else:
            neg_mask.append(neg_mask_inter - neg_mask_[kk - i - 2])
    loss = 0
    epsilon = 1e-6
    Omega = torch.tensor(Omega).float()
    for j in range(n):
        for k in range(n):
            if pos_mask[j, k] == 1:
                for l in range(n):  # noqa: E741 - the released name
                    for m in range(kk):
                        if neg_mask[m][j, l] == 1:
                            loss_dist = torch.log(sim_mat[j, k] + epsilon) - torch.log(sim_mat[j, l] + epsilon)
                            loss_pair = torch.log(Omega + epsilon) - torch.log(Omega.pow(kk - m + 1) + epsilon)
                            loss += (loss_dist - 0.1 * loss_pair).pow(2)
    return loss
# --------------------------------------------------------------------------------------------


def brute_force_loss(log_proximity: torch.Tensor, levels: torch.Tensor, t: float = T) -> float:
    """The triplet definition, one triplet at a time (float64)."""
    x = log_proximity.double()
    n = len(x)
    h = [[1 + sum(int(levels[i, lv] != levels[j, lv]) for lv in range(levels.shape[1])) for j in range(n)]
         for i in range(n)]
    terms = [(x[a, p] - x[a, q] - t * (h[a][q] - 1)) ** 2
             for a in range(n) for p in range(n) for q in range(n)
             if p != a and h[a][p] == 1 and h[a][q] > 1]
    return float(sum(terms).detach() / len(terms))


class _Exact:
    """|x_i - x_j| computed by broadcasting: exact for small integers (pins the cut's tie semantics)."""

    def pairwise_dist(self, x, y=None):
        y = x if y is None else y
        return (x[:, None] - y[None]).norm(dim=-1)


# -- clustering and similarity degrees ------------------------------------------------------
def test_degrees_of_a_toy_two_level_hierarchy_by_hand():
    # Four tight pairs in the plane; A, B 1 apart and C, D 1 apart, the two groups 10 apart.
    centres = {"A": (0.0, 0.0), "B": (1.0, 0.0), "C": (10.0, 0.0), "D": (11.0, 0.0)}
    pts = torch.tensor([[cx, cy + dy] for cx, cy in centres.values() for dy in (0.0, 0.05)], dtype=torch.float64)
    levels = hierarchical_pseudo_labels(pts, EuclideanGeometry(), thresholds=[0.5, 3.0])
    assert levels.shape == (8, 2)
    # level 1: the four pairs; level 2: {A, B}, {C, D} (as partitions: compare co-membership)
    same = lambda col: (col[:, None] == col[None]).astype(int)  # noqa: E731
    pair_of = np.repeat(np.arange(4), 2)
    assert (same(levels[:, 0]) == same(pair_of)).all()
    assert (same(levels[:, 1]) == same(pair_of // 2)).all()
    h = pair_levels(torch.as_tensor(levels)).numpy()
    by_hand = np.array([
        [1, 1, 2, 2, 3, 3, 3, 3],
        [1, 1, 2, 2, 3, 3, 3, 3],
        [2, 2, 1, 1, 3, 3, 3, 3],
        [2, 2, 1, 1, 3, 3, 3, 3],
        [3, 3, 3, 3, 1, 1, 2, 2],
        [3, 3, 3, 3, 1, 1, 2, 2],
        [3, 3, 3, 3, 2, 2, 1, 1],
        [3, 3, 3, 3, 2, 2, 1, 1],
    ])
    assert (h == by_hand).all()
    # The degrees s = Ω^h of the released LogRatio: 0.1, 0.01, 0.001.
    assert np.allclose(0.1 ** by_hand[0], [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001])


def test_threshold_cut_follows_fcluster_semantics_on_a_hand_dendrogram():
    # Points 0, 1, 3, 7 on a line. Average linkage (Eq. 3): {0,1} at 1; {0,1}-{3} at (3+2)/2 = 2.5
    # ({3}-{7} is 4); {0,1,3}-{7} at (7+6+4)/3 = 17/3.
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    expected = {0.99: [0, 1, 2, 3], 1.0: [0, 0, 1, 2], 2.49: [0, 0, 1, 2], 2.5: [0, 0, 0, 1],
                17 / 3 - 1e-9: [0, 0, 0, 1], 17 / 3: [0, 0, 0, 0]}
    for delta, want in expected.items():
        got = hierarchical_pseudo_labels(pts, _Exact(), thresholds=[delta])[:, 0]
        # fcluster's "distance" criterion: clusters whose cophenetic distance is <= δ (a merge AT δ joins)
        assert got.tolist() == want, delta
    from scipy.cluster.hierarchy import linkage

    heights = linkage(np.array([1.0, 3.0, 7.0, 2.0, 6.0, 4.0]), method="average")[:, 2]
    assert heights == pytest.approx([1.0, 2.5, 17 / 3])


def _naive_average_linkage(d: np.ndarray, delta: float) -> np.ndarray:
    """The paper's Sec. 3.3 literally: merge the two closest sub-clusters (Eq. 3, mean pairwise
    distance) while their distance is within δ. O(n³), for tiny n."""
    clusters = [[i] for i in range(len(d))]
    while len(clusters) > 1:
        best, pair = math.inf, None
        for a, b in itertools.combinations(range(len(clusters)), 2):
            avg = d[np.ix_(clusters[a], clusters[b])].mean()
            if avg < best:
                best, pair = avg, (a, b)
        if best > delta:
            break
        a, b = pair
        clusters[a] = clusters[a] + clusters.pop(b)
    out = np.empty(len(d), dtype=np.int64)
    for k, members in enumerate(clusters):
        out[members] = k
    return out


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(((a[:, None] == a[None]) == (b[:, None] == b[None])).all())


@pytest.mark.parametrize("geometry", [PoincareGeometry(c=1.0), EuclideanGeometry()], ids=["poincare", "euclidean"])
def test_cut_equals_naive_agglomeration_at_every_level(geometry):
    gen = torch.Generator().manual_seed(3)
    pts = expmap0(torch.randn(14, 3, generator=gen, dtype=torch.float64), c=1.0)
    d = geometry.pairwise_dist(pts).numpy()
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    heights = np.sort(linkage(squareform(d, checks=False), method="average")[:, 2])
    deltas = list((heights[:-1] + heights[1:]) / 2)  # between consecutive merges: no ties
    levels = hierarchical_pseudo_labels(pts, geometry, thresholds=deltas)
    assert levels.shape == (14, len(deltas))
    for j, delta in enumerate(deltas):
        assert _same_partition(levels[:, j], _naive_average_linkage(d, delta))
        assert levels[:, j].max() + 1 == 14 - (j + 1)  # one merge per level
    # nested: points together at a level stay together at every coarser one
    h = pair_levels(torch.as_tensor(levels)).numpy()
    first_together = (levels[:, None, :] == levels[None, :, :]).argmax(-1)
    together_somewhere = (levels[:, None, :] == levels[None, :, :]).any(-1)
    assert (h[together_somewhere] == 1 + first_together[together_somewhere]).all()


def test_median_unit_thresholds_are_multiples_of_the_median_distance_and_scale_free():
    gen = torch.Generator().manual_seed(2)
    pts = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    geo = EuclideanGeometry()
    d = geo.pairwise_dist(pts).numpy()
    median = float(np.median(d[np.triu_indices(30, 1)]))
    rel = hierarchical_pseudo_labels(pts, geo, thresholds=[0.5, 0.8], threshold_unit="median")
    absolute = hierarchical_pseudo_labels(pts, geo, thresholds=[0.5 * median, 0.8 * median])
    assert np.array_equal(rel, absolute) and rel[:, 0].max() > rel[:, 1].max() > 0
    # the cut follows the embedding's scale (the log-ratio loss leaves the scale free)
    assert np.array_equal(hierarchical_pseudo_labels(7.5 * pts, geo, thresholds=[0.5, 0.8], threshold_unit="median"),
                          rel)


def test_the_linkage_measures_the_poincare_distance_not_the_chord():
    # A pair near the boundary at chord 0.05 is hyperbolically far (≈ 5.0); a pair near the origin
    # at chord 0.2 is close (≈ 0.4). A cut at 1.0 joins the second pair only.
    pts = torch.tensor([[0.97, 0.0], [0.97, 0.05], [-0.1, 0.0], [0.1, 0.0]], dtype=torch.float64)
    levels = hierarchical_pseudo_labels(pts, PoincareGeometry(c=1.0), thresholds=[1.0])[:, 0]
    assert levels[0] != levels[1] and levels[2] == levels[3]
    chord = hierarchical_pseudo_labels(pts, EuclideanGeometry(), thresholds=[0.1])[:, 0]
    assert chord[0] == chord[1] and chord[2] != chord[3]


def test_released_option_is_ward_on_coordinates_cut_by_cluster_counts():
    from scipy.cluster.hierarchy import fcluster, linkage

    gen = torch.Generator().manual_seed(0)
    pts = expmap0(torch.randn(40, 5, generator=gen, dtype=torch.float64), c=1.0)
    ours = hierarchical_pseudo_labels(pts, PoincareGeometry(c=1.0), linkage="ward", cut="maxclust",
                                      n_clusters=[8, 3])
    # released for_clustering.py hierarchical_clusteirng, K == 2: Z = linkage(X, 'ward'); maxclust cuts
    tree = linkage(pts.numpy(), "ward")
    for j, k in enumerate([8, 3]):
        assert _same_partition(ours[:, j], fcluster(tree, k, criterion="maxclust"))
        assert ours[:, j].max() + 1 == k


# -- the loss ---------------------------------------------------------------------------------
def _points_1d(*xs: float) -> torch.Tensor:
    return torch.tensor([[x] for x in xs], dtype=torch.float64)


def test_loss_of_a_tiny_batch_by_hand():
    # Points 0, 1, 3, 5 on a line; fine clusters {0, 1}, {3, 5}, one level: 8 triplets, target T.
    x = _points_1d(0, 1, 3, 5)
    d = (x - x.T).abs()
    levels = torch.tensor([[0], [0], [1], [1]])
    L = math.log  # noqa: N806
    by_hand = [(L(3) - T) ** 2, (L(5) - T) ** 2,  # anchor 0: positive 1 at 1, negatives at 3, 5
               (L(2) - T) ** 2, (L(4) - T) ** 2,  # anchor 1: positive 0 at 1, negatives at 2, 4
               (L(3 / 2) - T) ** 2, (L(2 / 2) - T) ** 2,  # anchor 2: positive 3 at 2, negatives at 3, 2
               (L(5 / 2) - T) ** 2, (L(4 / 2) - T) ** 2]  # anchor 3: positive 2 at 2, negatives at 5, 4
    got = hierarchical_log_ratio_loss(-torch.log(d + 1e-6), levels, omega=0.1, ratio_scale=0.1)
    assert float(got) == pytest.approx(sum(by_hand) / 8, rel=1e-5)
    # Two levels: {0, 1} and {3, 5} share a coarse cluster; 9 is alone at both levels.
    x = _points_1d(0, 1, 3, 5, 9)
    d = (x - x.T).abs()
    levels = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0], [2, 1]])
    by_hand = [(L(3) - T) ** 2, (L(5) - T) ** 2, (L(9) - 2 * T) ** 2,
               (L(2) - T) ** 2, (L(4) - T) ** 2, (L(8) - 2 * T) ** 2,
               (L(3 / 2) - T) ** 2, (L(2 / 2) - T) ** 2, (L(6 / 2) - 2 * T) ** 2,
               (L(5 / 2) - T) ** 2, (L(4 / 2) - T) ** 2, (L(4 / 2) - 2 * T) ** 2]
    got = hierarchical_log_ratio_loss(-torch.log(d + 1e-6), levels, omega=0.1, ratio_scale=0.1)
    assert float(got) == pytest.approx(sum(by_hand) / 12, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_the_triplet_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    b = 12
    x = torch.randn(b, b, generator=gen, dtype=torch.float64)
    levels = torch.stack([torch.randint(0, 4, (b,), generator=gen), torch.randint(0, 2, (b,), generator=gen)], 1)
    levels[:, 1] = levels[:, 0] // 2  # nested
    got = hierarchical_log_ratio_loss(x, levels, omega=0.2, ratio_scale=0.3)
    assert float(got) == pytest.approx(brute_force_loss(x, levels, t=0.3 * math.log(5)), rel=1e-10)


def test_loss_equals_the_released_log_ratio_where_the_release_is_well_defined():
    # One level (the release's level masks are then right) and positive dot products: the release's
    # summed loss on log(x·xᵀ + 1e-6) equals ours times the number of triplets.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(10, 4, generator=gen) + 0.1  # positive coordinates: every dot product > 0
    labels = torch.tensor([[0], [0], [0], [1], [1], [2], [2], [2], [3], [3]])
    released = released_log_ratio(x, labels)
    log_sim = torch.log(x @ x.T + 1e-6)
    n_triplets = sum(int((labels[:, 0] == labels[a, 0]).sum() - 1) * int((labels[:, 0] != labels[a, 0]).sum())
                     for a in range(10))
    ours = hierarchical_log_ratio_loss(log_sim, labels, omega=0.1, ratio_scale=0.1) * n_triplets
    assert float(ours) == pytest.approx(float(released), rel=1e-4)  # the release also puts ε in the target


def test_released_bugs_nan_on_negative_dot_products_and_mixed_level_masks():
    # (1) Poincaré points more than 90° apart have a negative dot product: the release's log is NaN.
    pts = expmap0(torch.tensor([[1.0, 0.2], [0.9, 0.3], [-1.0, 0.1], [-0.8, -0.3]]), c=1.0)
    levels = torch.tensor([[0], [0], [1], [1]])
    assert torch.isnan(released_log_ratio(pts, levels))
    method = Uhml(make_config(Uhml, {"dim": 2, "normalize": False}), _Identity(), _info(4, feat_dim=2))
    method.pseudo_levels = levels
    loss = method.loss(pts.requires_grad_(), _batch(torch.zeros(4, 2), np.arange(4)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pts.grad).all()
    # (2) Two levels: the release compares level-1 labels with level-0 ones. Fine {0,1} {2,3} {4,5}, coarse
    # {0..3} {4,5}, numbered so that the mix-up is visible: anchor 0's level-1 label 0 equals the level-0
    # label of samples 0, 1 only, so the release takes 2, 3 (same coarse cluster) for level-3 negatives.
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(1)) + 0.1
    levels = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1]])
    log_sim = torch.log(x @ x.T + 1e-6)
    correct = brute_force_loss(log_sim, levels)
    n_triplets = 6 * 4
    assert float(hierarchical_log_ratio_loss(log_sim, levels, omega=0.1, ratio_scale=0.1)) == pytest.approx(
        correct, rel=1e-6)
    assert float(released_log_ratio(x, levels)) / n_triplets != pytest.approx(correct, rel=1e-2)


def test_gradients_are_finite_also_for_duplicate_positives():
    # A singleton cluster is drawn 8 times (with replacement): positives at distance 0.
    method = Uhml(make_config(Uhml, {"dim": 8}), _Identity(), _info(3, feat_dim=8))
    method.pseudo_levels = torch.tensor([[0, 0], [1, 0], [2, 1]])
    feats = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    feats_b = feats[idx].clone().requires_grad_()
    loss = method.loss(method.head(feats_b.float()), _batch(torch.zeros(8, 8), idx))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats_b.grad).all() and feats_b.grad.abs().sum() > 0


def test_method_loss_is_the_log_ratio_of_poincare_distances_eq1():
    gen = torch.Generator().manual_seed(4)
    method = Uhml(make_config(Uhml, {"dim": 3}), _Identity(), _info(6, feat_dim=3))
    method.pseudo_levels = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0], [2, 1], [2, 1]])
    z = method.head(torch.randn(6, 3, generator=gen))
    assert torch.allclose(z.norm(dim=-1), torch.full((6,), math.tanh(1.0)), atol=1e-6)  # on the sphere
    zz = z.double()
    sq = (zz[:, None] - zz[None]).pow(2).sum(-1)
    n2 = zz.pow(2).sum(-1)
    d_eq1 = torch.acosh((1 + 2 * sq / ((1 - n2[:, None]) * (1 - n2[None]))).clamp_min(1))  # paper Eq. 1, c = 1
    want = brute_force_loss(-torch.log(d_eq1 + 1e-6), method.pseudo_levels)
    assert float(method.loss(z, _batch(torch.zeros(6, 3), np.arange(6))).detach()) == pytest.approx(want, rel=1e-4)
    ctrl = UhmlEuclidean(make_config(UhmlEuclidean, {"dim": 3}), _Identity(), _info(6, feat_dim=3))
    ctrl.pseudo_levels = method.pseudo_levels
    e = ctrl.head(torch.randn(6, 3, generator=gen))
    want = brute_force_loss(-torch.log((e[:, None] - e[None]).norm(dim=-1).double() + 1e-6), ctrl.pseudo_levels)
    assert float(ctrl.loss(e, _batch(torch.zeros(6, 3), np.arange(6))).detach()) == pytest.approx(want, rel=1e-4)


# -- the method's hooks -----------------------------------------------------------------------
def _info(n, num_classes=0, feat_dim=8, epochs=2):
    from harness.method import TrainInfo

    return TrainInfo(feat_dim=feat_dim, num_classes=num_classes, num_train=n,
                     label_field="label" if num_classes else None, epochs=epochs)


def _state(epoch, embeddings, labels=None, seed=0):
    from harness.method import TrainState

    return TrainState(epoch=epoch, epochs=4, step=0, device=torch.device("cpu"), rng=np.random.default_rng(seed),
                      embed_train=lambda: (embeddings, embeddings), labels=labels,
                      generator=torch.Generator().manual_seed(seed))


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


def _batch(images, indices, labels=None):
    from harness.method import Batch

    return Batch(images=images, indices=torch.as_tensor(indices), labels=labels,
                 viewer=lambda raw, policy: raw.float(), raw=images)


def test_cluster_batches_are_p_by_k_over_pseudo_classes():
    clusters = np.array([0] * 10 + [1] * 3 + [2] * 1 + [3] * 8 + [4] * 20)
    batches = cluster_batches(clusters, batch_size=16, num_instances=4, n_batches=7, rng=np.random.default_rng(0))
    assert len(batches) == 7
    seen = []
    for b in batches:
        assert len(b) == 16
        groups = clusters[b].reshape(4, 4)  # 4 clusters × 4 images, cluster by cluster
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0])) == 4  # no cluster twice in a batch
        for g, members in zip(groups[:, 0], b.reshape(4, 4)):
            assert (clusters[members] == g).all()
            if (clusters == g).sum() >= 4:
                assert len(set(members)) == 4  # without replacement when the cluster has 4
        seen += list(groups[:, 0])
    # shuffled passes over the 5 clusters, remainder dropped: every pass of 4 misses one cluster
    assert set(seen) == set(range(5))
    # fewer clusters than a batch holds: all of them, once
    two = cluster_batches(np.array([0, 0, 1, 1, 1]), batch_size=64, num_instances=8, n_batches=2,
                          rng=np.random.default_rng(0))
    assert [len(b) for b in two] == [16, 16]
    # a batch that is no multiple of K cuts the stream of K-blocks (the released DataLoader over the sampler)
    cut = cluster_batches(clusters, batch_size=12, num_instances=8, n_batches=3, rng=np.random.default_rng(0))
    assert [len(b) for b in cut] == [12, 12, 12]
    first = clusters[cut[0]]
    assert (first[:8] == first[0]).all() and (first[8:] == first[8]).all() and first[0] != first[8]
    with pytest.raises(ConfigError, match="at most one cluster"):
        cluster_batches(clusters, batch_size=8, num_instances=8, n_batches=1, rng=np.random.default_rng(0))


def test_epoch_start_clusters_the_training_embeddings_and_plans_batches():
    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=-1) * 3
    feats = (centres.repeat_interleave(10, 0) + 0.05 * torch.randn(60, 4, generator=gen))
    method = Uhml(make_config(Uhml, {"dim": 4, "thresholds": [0.5, 3.5], "threshold_unit": "absolute"}), _Identity(),
                  _info(60, feat_dim=4))
    with torch.no_grad():
        method.proj.weight.copy_(torch.eye(4))
        method.proj.bias.zero_()
        emb = method.head(feats)
    method.on_epoch_start(_state(0, emb))
    assert method.cluster_counts[0] == 6 and method.pseudo_levels.shape == (60, 2)
    plan = method.batch_indices(None, 32, np.random.default_rng(0))
    assert len(plan) == 60 // 32 and all(len(b) == 32 for b in plan)
    with pytest.raises(ConfigError, match="at most one pseudo-class"):
        method.batch_indices(None, 8, np.random.default_rng(0))
    merged = Uhml(make_config(Uhml, {"dim": 4, "thresholds": [3.9], "threshold_unit": "absolute"}), _Identity(),
                  _info(60, feat_dim=4))
    with pytest.raises(ConfigError, match="one cluster.*Lower method.thresholds"):
        merged.on_epoch_start(_state(0, torch.nn.functional.normalize(feats, dim=-1) * 0.1))


def test_hooks_ignore_labels_even_when_given():
    n = 24
    feats = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    garbage = np.random.default_rng(0).integers(0, 5, n)
    results = []
    for labels in (None, garbage):
        torch.manual_seed(0)
        method = Uhml(make_config(Uhml, {"dim": 6}), _Identity(), _info(n, feat_dim=6))
        emb = method.head(feats).detach()
        method.on_epoch_start(_state(0, emb, labels=labels))
        plan = method.batch_indices(labels, 16, np.random.default_rng(1))
        idx = plan[0]
        loss = method.training_step(_batch(feats[idx], idx, None if labels is None else torch.as_tensor(labels[idx])),
                                    _state(0, emb, labels=labels))
        loss.backward()
        results.append((method.pseudo_levels.clone(), np.concatenate(plan), float(loss.detach()),
                        method.proj.weight.grad.clone()))
    for a, b in zip(*results):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("override,match", [
    ({"dim": 0}, "dim must be >= 1"),
    ({"c": 0.0}, "c must be > 0"),
    ({"linkage": "single"}, "linkage must be one of"),
    ({"cut": "inconsistent"}, "cut must be one of"),
    ({"thresholds": [3.0, 2.0]}, "thresholds must be increasing"),
    ({"thresholds": []}, "thresholds must be increasing"),
    ({"thresholds": [-1.0, 2.0]}, "thresholds must be increasing positive"),
    ({"threshold_unit": "max"}, "threshold_unit must be one of"),
    ({"cut": "maxclust", "n_clusters": [50, 100]}, "n_clusters must be decreasing"),
    ({"cut": "maxclust", "n_clusters": [1]}, "the finest >= 2"),
    ({"omega": 1.0}, r"omega must be in \(0, 1\)"),
    ({"ratio_scale": 0.0}, "ratio_scale must be > 0"),
    ({"num_instances": 1}, "num_instances must be >= 2"),
])
def test_invalid_configs_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        make_config(Uhml, override).validate()


def test_defaults_are_the_paper_and_released_ones():
    cfg = make_config(Uhml, {})
    cfg.validate()
    assert (cfg.dim, cfg.c, cfg.normalize, cfg.omega, cfg.ratio_scale, cfg.num_instances) == (512, 1.0, True, 0.1,
                                                                                              0.1, 8)
    assert (cfg.linkage, cfg.cut, cfg.n_clusters, cfg.augment) == ("average", "distance", [100, 50],
                                                                   "resized_crop_flip")
    ctrl = make_config(UhmlEuclidean, {})
    ctrl.validate()
    assert {k: v for k, v in vars(ctrl).items() if k != "name"} == {k: v for k, v in vars(cfg).items() if k != "name"}
    assert Uhml.supervised is False and UhmlEuclidean.supervised is False and not Uhml.requires
