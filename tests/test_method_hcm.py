"""HCM (Xu et al., NeurIPS 2023): the margin loss, the adaptive targets, the pseudo-fine labels,
config errors, and a short training run on the embedded data.

No code was released with the paper, so the references are hand computations and a scalar
re-implementation of the loss's formula (pure Python, one pair at a time).
"""

import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from harness.plugins.methods.hcm import (
    HCM,
    OTHER_COARSE,
    SAME_COARSE,
    SAME_FINE,
    SAME_INSTANCE,
    HCMEuclidean,
    cosine_distances,
    hcm_kl,
    pair_relations,
    pseudo_fine_labels,
    update_targets,
)
from harness.registry import make_config

# Five 2-D embeddings: rows 0 and 1 are two views of image 0; pseudo-fine ids are global.
Z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
INSTANCE = torch.tensor([0, 0, 1, 2, 3])
FINE = torch.tensor([5, 5, 6, 7, 5])
COARSE = torch.tensor([2, 2, 2, 3, 2])
# 1 − cos by hand: cos(z0, z1) = 0.8, cos(z0, z4) = 0.6, cos(z1, z2) = 0.6, cos(z1, z3) = −0.8,
# cos(z1, z4) = 0.48 + 0.48 = 0.96, cos(z2, z4) = 0.8, cos(z3, z4) = −0.6, the others 0 or −1.
D_HAND = [[0.0, 0.2, 1.0, 2.0, 0.4],
          [0.2, 0.0, 0.4, 1.8, 0.04],
          [1.0, 0.4, 0.0, 1.0, 0.2],
          [2.0, 1.8, 1.0, 0.0, 1.6],
          [0.4, 0.04, 0.2, 1.6, 0.0]]
I, F_, C, O = SAME_INSTANCE, SAME_FINE, SAME_COARSE, OTHER_COARSE
REL_HAND = [[-1, I, C, O, F_],
            [I, -1, C, O, F_],
            [C, C, -1, O, C],
            [O, O, O, -1, O],
            [F_, F_, C, O, -1]]


def _kl_scalar(dist, rel, targets, tau):
    """1/N Σ_i Σ_{j≠i} P_ij log(P_ij / Q_ij), P_i = softmax(−T_i/τ), Q_i = softmax(−D_i/τ), pair by pair."""
    n, total = len(dist), 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        zp = sum(math.exp(-targets[rel[i][j]] / tau) for j in others)
        zq = sum(math.exp(-dist[i][j] / tau) for j in others)
        for j in others:
            p = math.exp(-targets[rel[i][j]] / tau) / zp
            q = math.exp(-dist[i][j] / tau) / zq
            total += p * math.log(p / q)
    return total / n


def test_cosine_distances_and_relations_match_the_hand_tables():
    assert torch.allclose(cosine_distances(Z), torch.tensor(D_HAND, dtype=torch.float32), atol=1e-6)
    assert pair_relations(INSTANCE, FINE, COARSE).tolist() == REL_HAND


@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_hcm_kl_matches_the_formula_pair_by_pair(tau):
    targets = [0.0, 0.3, 0.6, 1.0]
    got = hcm_kl(torch.tensor(D_HAND, dtype=torch.float64), torch.tensor(REL_HAND),
                 torch.tensor(targets, dtype=torch.float64), tau)
    assert got.item() == pytest.approx(_kl_scalar(D_HAND, REL_HAND, targets, tau), rel=1e-12)


def test_hcm_kl_hand_value_of_a_two_point_batch():
    # Three points, τ = 1: row 0 sees j=1 (same instance, T=0, D=0.5) and j=2 (other coarse, T=1, D=0.5):
    # P_0 = (e^0, e^−1)/(1 + e^−1), Q_0 = (½, ½), so KL_0 = Σ P log(2P); the same for rows 1 and 2 by symmetry
    # of the targets (row 2 sees two other-coarse points: P = Q = ½, KL = 0).
    rel = torch.tensor([[-1, I, O], [I, -1, O], [O, O, -1]])
    dist = torch.full((3, 3), 0.5, dtype=torch.float64)
    p = torch.tensor([1.0, math.exp(-1)], dtype=torch.float64)
    p = p / p.sum()
    kl_row = float((p * torch.log(2 * p)).sum())
    got = hcm_kl(dist, rel, torch.tensor([0.0, 0.3, 0.6, 1.0]), tau=1.0)
    assert got.item() == pytest.approx((kl_row + kl_row + 0.0) / 3, rel=1e-12)


def test_hcm_kl_is_zero_when_distances_equal_targets_and_positive_otherwise():
    targets = torch.tensor([0.0, 0.3, 0.6, 1.0], dtype=torch.float64)
    rel = torch.tensor(REL_HAND)
    exact = targets[rel.clamp_min(0)]
    assert hcm_kl(exact, rel, targets, 0.1).item() == pytest.approx(0.0, abs=1e-12)
    # a constant shift of every distance leaves the softmax, hence the loss, unchanged
    assert hcm_kl(exact + 0.25, rel, targets, 0.1).item() == pytest.approx(0.0, abs=1e-12)
    assert hcm_kl(torch.tensor(D_HAND, dtype=torch.float64), rel, targets, 0.1).item() > 0.1


def test_hcm_kl_gradients_are_finite_for_duplicates_and_tiny_vectors():
    z = torch.cat([Z.float(), Z[:2].float(), 1e-8 * torch.ones(1, 2)]).requires_grad_(True)
    n = len(z)
    rel = pair_relations(torch.arange(n) % 4, torch.arange(n) % 3, torch.arange(n) % 2)
    loss = hcm_kl(cosine_distances(z), rel, torch.tensor([0.0, 0.3, 0.6, 1.0]), 0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert z.grad[:5].abs().sum() > 0


def test_momentum_update_of_d1_d2_by_hand():
    targets = torch.tensor([0.0, 0.3, 0.6, 1.0])
    dist, rel = torch.tensor(D_HAND), torch.tensor(REL_HAND)
    new = update_targets(targets, dist, rel, momentum=0.9, min_gap=0.05)
    # same-fine pairs: (0,4), (1,4) and their mirrors: mean(0.4, 0.04) = 0.22 → 0.9·0.3 + 0.1·0.22 = 0.292
    # same-coarse pairs: (0,2), (1,2), (2,4): mean(1.0, 0.4, 0.2) = 0.5333… → 0.9·0.6 + 0.1·0.5333… = 0.59333…
    assert new.tolist() == pytest.approx([0.0, 0.292, 0.6 * 0.9 + 0.1 * 1.6 / 3, 1.0], abs=1e-6)
    assert targets.tolist() == pytest.approx([0.0, 0.3, 0.6, 1.0])  # the input is not modified


def test_momentum_update_keeps_the_order_and_skips_absent_levels():
    targets = torch.tensor([0.0, 0.3, 0.6, 1.0])
    dist = torch.tensor(D_HAND)
    # momentum 0 takes the batch means: fine mean 0.22 and coarse mean 0.5333 are kept as they are
    rel = torch.tensor(REL_HAND)
    assert update_targets(targets, dist, rel, momentum=0.0, min_gap=0.05).tolist() == \
        pytest.approx([0.0, 0.22, 1.6 / 3, 1.0], abs=1e-6)
    # coarse pairs closer than fine pairs: d2 is lifted to d1 + gap; d1 never reaches d0
    tiny = torch.full((5, 5), 0.01)
    assert update_targets(targets, tiny, rel, momentum=0.0, min_gap=0.05).tolist() == \
        pytest.approx([0.0, 0.05, 0.10, 1.0], abs=1e-6)
    # no same-fine pair in the batch: d1 keeps its value
    no_fine = torch.where(rel == SAME_FINE, torch.tensor(OTHER_COARSE), rel)
    assert update_targets(targets, dist, no_fine, momentum=0.5, min_gap=0.05)[1].item() == pytest.approx(0.3)


def test_pseudo_fine_labels_find_obvious_clusters_by_direction_inside_each_class():
    gen = torch.Generator().manual_seed(0)

    def blob(direction, n, scale):
        d = torch.tensor(direction, dtype=torch.float32)
        return (d + 0.05 * torch.randn(n, 2, generator=gen)) * scale

    # class 0: directions (1, 0) and (0, 1), each at two very different norms (only directions count)
    x0 = torch.cat([blob([1, 0], 5, 0.1), blob([1, 0], 5, 10.0), blob([0, 1], 5, 0.1), blob([0, 1], 5, 10.0)])
    x1 = torch.cat([blob([-1, 0], 6, 1.0), blob([0, -1], 6, 1.0)])
    labels = np.array([0] * 20 + [1] * 12)
    ids = pseudo_fine_labels(torch.cat([x0, x1]), labels, 2, seed=0).tolist()
    assert set(ids[:20]) == {0, 1} and set(ids[20:]) == {2, 3}  # cluster j of class y is y·k + j
    assert len(set(ids[:10])) == 1 and len(set(ids[10:20])) == 1 and ids[0] != ids[10]
    assert len(set(ids[20:26])) == 1 and len(set(ids[26:])) == 1 and ids[20] != ids[26]


def test_more_clusters_than_images_of_a_class_is_a_config_error():
    labels = np.array([0] * 20 + [1] * 3)
    with pytest.raises(ConfigError, match=r"clusters_per_class=4 but training class 1 has only 3 images.*<= 3"):
        pseudo_fine_labels(torch.randn(23, 4), labels, 4, seed=0)


@pytest.mark.parametrize("cls, overrides, message", [
    (HCM, {"d1": 0.0}, r"d0 < d1 < d2 < d3"),
    (HCM, {"d0": 0.5, "d1": 0.4}, r"d0 < d1 < d2 < d3"),
    (HCM, {"d2": 1.5}, r"d0 < d1 < d2 < d3"),
    (HCM, {"c": 0.0}, r"c must be > 0"),
    (HCM, {"c": -1.0}, r"c must be > 0"),
    (HCM, {"tau": 0.0}, r"tau must be > 0"),
    (HCM, {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    (HCM, {"clusters_per_class": 0}, r"clusters_per_class must be >= 1"),
    (HCM, {"recluster_every": 0}, r"recluster_every must be >= 1"),
    (HCM, {"alpha": -1.0}, r"alpha must be >= 0"),
    (HCM, {"d1": 0.02}, r"at least min_gap"),
    (HCMEuclidean, {"d2": 0.2}, r"hcm_euclidean: the target cosine distances"),
])
def test_invalid_configs_are_clear_errors(cls, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_config(cls, {"name": cls.Config.name, **overrides}).validate()


def test_the_harness_rejects_a_bad_config_before_any_work(tmp_path):
    from harness.config import validate
    from harness.sweep import compose

    with pytest.raises(ConfigError, match="hcm: the target cosine distances"):
        validate(compose(["method=hcm", "method.d1=0.9", "method.d2=0.8", "task=fine_from_coarse",
                          f"results_dir={tmp_path}"]))


def test_training_step_reads_two_views_and_updates_the_targets():
    from harness.plugin_check import check_method
    from harness.registry import get_registry

    check_method(get_registry().specs("method")["hcm"])  # the smoke check, with k ≤ the class sizes
    from harness.backbones import build_backbone
    from harness.engine import Viewer
    from harness.method import Batch, TrainInfo, TrainState

    torch.manual_seed(0)
    backbone, dim = build_backbone({"name": "conv4_32", "pretrained": None, "img_size": None, "kwargs": {}},
                                   in_chans=3, img_size=(16, 16))
    n = 16
    labels = np.arange(n) % 2
    cfg = make_config(HCM, {"name": "hcm", "clusters_per_class": 2, "momentum": 0.5})
    method = HCM(cfg, backbone, TrainInfo(feat_dim=dim, num_classes=2, num_train=n, label_field="coarse_label",
                                          epochs=1))
    raw = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8)
    viewer = Viewer((0.5,) * 3, (0.5,) * 3, (16, 16), torch.device("cpu"), torch.Generator().manual_seed(0))
    policies = []

    def view(x, policy):
        policies.append(policy)
        return viewer(x, policy)

    state = TrainState(epoch=0, epochs=1, step=0, device=torch.device("cpu"), rng=np.random.default_rng(0),
                       embed_train=lambda: (method.embed(viewer(raw)).detach(), None), labels=labels,
                       generator=torch.Generator().manual_seed(1))
    method.train()
    with pytest.raises(Exception, match="on_epoch_start"):
        method.training_step(Batch(raw=raw, labels=torch.as_tensor(labels), indices=torch.arange(n),
                                   viewer=view, default_policy="crop"), state)
    method.on_epoch_start(state)
    assert method.hcm.pseudo_fine.tolist() != [-1] * n
    assert set(method.hcm.pseudo_fine[labels == 1].tolist()) <= {2, 3}
    policies.clear()
    before = method.hcm.targets.clone()
    loss = method.training_step(Batch(raw=raw, labels=torch.as_tensor(labels), indices=torch.arange(n),
                                      viewer=view, default_policy="crop"), state)
    assert policies == ["crop", "crop"]
    assert torch.isfinite(loss) and loss.ndim == 0
    assert method.hcm.targets[[0, 3]].tolist() == before[[0, 3]].tolist()  # d0, d3 fixed
    assert not torch.equal(method.hcm.targets[1:3], before[1:3])  # d1, d2 moved by the batch statistics
    assert "pseudo_fine" not in method.state_dict() and "hcm.targets" in method.state_dict()


# 3 coarse × 2 training fine classes, 20 training images each (32×32: siblings differ in fine texture)
TINY = ["dataset.n_coarse=3", "dataset.fine_per_coarse=4", "dataset.novel_per_coarse=2",
        "dataset.images_per_class=30", "task.episodes=200", "task.n_query=5", "task.all_way=false"]


@pytest.mark.slow
def test_a_short_hcm_training_beats_random_init_on_fine_from_coarse(tmp_path):
    # measured: hcm 0.393, random_init 0.168 (5-way 5-shot, seed 0)
    from harness.run import run_cell
    from harness.sweep import compose

    def run(method, *extra):
        config = compose([f"method={method}", "task=fine_from_coarse", "seed=0", *TINY, *extra,
                          f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])
        result = run_cell(config, progress=False)
        assert result["status"] == "ok", result.get("reason")
        return result["metrics"]["acc_5way_5shot"]["value"]

    # k = 2 × the 2 training fine classes per coarse class (the paper's guideline)
    trained = run("hcm", "method.clusters_per_class=4", "train.epochs=10", "train.batch_size=32")
    reference = run("random_init")
    assert trained > reference + 0.15, (trained, reference)
