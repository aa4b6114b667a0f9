"""Every metric of every task gives its chance value on random embeddings.

Random embeddings: i.i.d. Gaussian N(0, I/d), and the same points mapped into the Poincaré ball by
``expmap0`` (c = 1). Labels are independent of the embeddings, so every metric must equal its chance
value up to sampling error. Chance values are computed here, independently of the tasks: closed forms
from the class sizes (checked against brute-force enumeration on tiny cases), a tree enumeration, or a
permutation null with the reference library (scikit-learn) where the chance value depends on the data.

Tolerance: 4 sampling standard errors (SE), each stated where it is used; seeds are fixed. For the
nearest-prototype and classifier accuracies the SE is binomial: given the prototypes (or the classifier),
each eval image is predicted independently, and with equal class counts the conditional expectation is
exactly the chance value whatever the predicted-class frequencies.

``delta`` has no chance value (δ is a geometric property of the point set, not a score against labels)
and is not tested here. ``instance_selection`` trains classifiers; that random embeddings select a random
subset (so its gains are 0 in expectation) is tested in ``test_task_instance_selection.py``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from harness.geometry import expmap0
from harness.task import Embedded, EvalContext

from tests.test_task_fixtures import ArrayDataset, FakeMethod, euclidean, poincare

KINDS = ["gaussian", "poincare"]


def random_embeddings(n: int, dim: int, seed: int, kind: str) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) / math.sqrt(dim)
    return expmap0(x, c=1.0) if kind == "poincare" else x


def geometry(kind: str):
    return poincare() if kind == "poincare" else euclidean()


def evaluate(task, ds, emb, kind, logits=None, seed=0):
    ctx = EvalContext(dataset=ds, protocol=task.protocol(ds), method=FakeMethod(geometry(kind)),
                      embed_fn=lambda idx: Embedded(emb[idx], emb[idx], None if logits is None else logits[idx]),
                      seed=seed, device=torch.device("cpu"))
    return task.evaluate(ctx), ctx


def within(value: float, chance: float, se: float, what: str = "") -> None:
    assert abs(value - chance) <= 4 * se, f"{what}: {value:.5f} vs chance {chance:.5f} (4 SE = {4 * se:.5f})"


def harmonic(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


# -- closed forms of a random ranking, checked by enumeration ---------------------------------------------
def expected_ap(total: int, relevant: int, depth: int | None = None) -> float:
    """E[(1/R) Σ_{i≤depth} P(i) rel(i)] over uniformly random rankings of ``total`` items, ``relevant`` of
    them relevant: E[rel_i P(i)] = (1/i)(R/M + (i − 1) R (R − 1) / (M (M − 1))), summed.
    depth = total: AP (re-ID, AUPR); depth = R: MAP@R."""
    m, r = total, relevant
    depth = total if depth is None else depth
    if m == 1:
        return 1.0
    return (harmonic(depth) + (r - 1) * (depth - harmonic(depth)) / (m - 1)) / m


def expected_hit_within(total: int, relevant: int, k: int) -> float:
    """P(a relevant item among the first k) = 1 − C(M − R, k) / C(M, k)."""
    return 1.0 - math.comb(total - relevant, k) / math.comb(total, k)


def expected_inp(total: int, relevant: int) -> float:
    """E[m / rank of the last relevant]: P(last at rank r) = C(r − 1, m − 1) / C(G, m)."""
    g, m = total, relevant
    return sum(m / r * math.comb(r - 1, m - 1) for r in range(m, g + 1)) / math.comb(g, m)


@pytest.mark.parametrize("total, relevant", [(6, 1), (6, 2), (7, 3), (5, 5)])
def test_closed_forms_by_enumeration(total, relevant) -> None:
    ap = mapr = inp = 0.0
    hit = {k: 0.0 for k in range(1, total + 1)}
    positions = list(itertools.combinations(range(1, total + 1), relevant))
    for pos in positions:
        ap += sum((j + 1) / p for j, p in enumerate(pos)) / relevant
        mapr += sum((j + 1) / p for j, p in enumerate(pos) if p <= relevant) / relevant
        inp += relevant / pos[-1]
        for k in hit:
            hit[k] += pos[0] <= k
    n = len(positions)
    assert expected_ap(total, relevant) == pytest.approx(ap / n, abs=1e-12)
    assert expected_ap(total, relevant, depth=relevant) == pytest.approx(mapr / n, abs=1e-12)
    assert expected_inp(total, relevant) == pytest.approx(inp / n, abs=1e-12)
    for k, h in hit.items():
        assert expected_hit_within(total, relevant, k) == pytest.approx(h / n, abs=1e-12)


# -- replicates ------------------------------------------------------------------------------------------
# A metric computed on ONE fixed set of random images varies around its chance value from one image set to the
# next (by chance some classes' images are more compact, some gallery images are hubs), and the episodes or
# queries of a run share that set, so a per-episode or per-query SE misses that part. Where that matters the SE
# is taken over REPLICATES, independent image sets: SE = std(value − chance, ddof=1) / sqrt(replicates), and the
# value compared is the mean over replicates (Student t with replicates − 1 degrees of freedom).
Check = tuple[str, float, float, float]  # (metric, value, chance value, standard error)


def replicated(values, kind: str, seed: int, replicates: int) -> list[Check]:
    """``values(kind, seed) -> {metric: (value, chance)}`` on ``replicates`` independent seeds."""
    runs = [values(kind, seed + 1000 * r) for r in range(replicates)]
    out = []
    for name in runs[0]:
        v = np.array([run[name][0] for run in runs], dtype=np.float64)
        c = np.array([run[name][1] for run in runs], dtype=np.float64)
        se = float(np.std(v - c, ddof=1) / math.sqrt(replicates))
        assert se > 0, name
        out.append((name, float(v.mean()), float(c.mean()), se))
    return out


# -- few_shot and fine_from_coarse ---------------------------------------------------------------------
def few_shot_values(kind: str, seed: int) -> dict[str, tuple[float, float]]:
    from harness.tasks.few_shot import FewShot

    labels = np.repeat(np.arange(20), 30)
    ds = ArrayDataset({"label": labels}, {"train": np.arange(0), "novel": np.arange(600)})
    res, _ = evaluate(FewShot(FewShot.Config(episodes=80)), ds, random_embeddings(600, 8, seed, kind), kind)
    return {k: (m.value, 1 / 5) for k, m in res.items()}


def fine_from_coarse_values(kind: str, seed: int) -> dict[str, tuple[float, float]]:
    from harness.tasks.fine_from_coarse import FineFromCoarse

    fine = np.repeat(np.arange(20), 16)  # 4 coarse classes of 5 fine classes
    ds = ArrayDataset({"label": fine, "coarse_label": fine // 5},
                      {"train": np.arange(0), "test": np.arange(len(fine))})
    task = FineFromCoarse(FineFromCoarse.Config(episodes=50, n_query=5))
    res, ctx = evaluate(task, ds, random_embeddings(len(fine), 8, seed, kind), kind)
    assert set(res) == set(FineFromCoarse.METRICS)
    assert ctx.details["acc_allway_1shot/n_way"] == 20 and ctx.details["acc_intra_5way_1shot/n_way"] == 5
    return {k: (m.value, 1 / ctx.details[f"{k}/n_way"]) for k, m in res.items()}


# -- retrieval --------------------------------------------------------------------------------------------
def retrieval_chance(sizes: list[int], ks: list[int]) -> dict[str, float]:
    """Mean over queries (queries with R = n_c − 1 > 0) of each metric's chance value; M = n − 1."""
    n = sum(sizes)
    queries = [(s, s - 1) for s in sizes if s > 1]
    n_q = sum(s for s, _ in queries)
    out = {f"recall@{k}": sum(s * expected_hit_within(n - 1, r, k) for s, r in queries) / n_q for k in ks}
    out["precision_at_1"] = out["r_precision"] = sum(s * r / (n - 1) for s, r in queries) / n_q
    out["map_at_r"] = sum(s * expected_ap(n - 1, r, depth=r) for s, r in queries) / n_q
    return out


def retrieval_values(kind: str, seed: int) -> dict[str, tuple[float, float]]:
    from scipy.stats import entropy
    from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score

    from harness.tasks.retrieval import Retrieval, _clustering_space, kmeans

    sizes = [15 + 5 * c for c in range(8)]  # unequal classes, 260 images
    labels = np.repeat(np.arange(8), sizes)
    n = len(labels)
    ds = ArrayDataset({"label": labels}, {"train": np.arange(0), "novel": np.arange(n)})
    emb = random_embeddings(n, 8, seed, kind)
    res, _ = evaluate(Retrieval(), ds, emb, kind)
    chance = retrieval_chance(sizes, [1, 2, 4, 8])
    # P@1 = Σ n_c (n_c − 1) / (n (n − 1)), as the brief states it
    assert chance["precision_at_1"] == pytest.approx(sum(s * (s - 1) for s in sizes) / (n * (n - 1)))
    out = {name: (res[name].value, c) for name, c in chance.items()}
    # NMI's chance value depends on the cluster sizes. Under permutations of the labels the marginals, hence
    # both entropies, are fixed, so E[NMI] = E[MI] / mean(H(labels), H(clusters)); E[MI] is scikit-learn's
    # expected mutual information (Vinh et al. 2010), read back from its AMI = (MI − EMI) / (mean H − EMI).
    # The clusters are those of a k-means run on the same points (another seed than the task's).
    clusters = kmeans(_clustering_space(emb, geometry(kind)), 8, seed=123).numpy()
    mi = mutual_info_score(labels, clusters)
    ami = adjusted_mutual_info_score(labels, clusters)
    mean_h = (entropy(np.bincount(labels)) + entropy(np.bincount(clusters))) / 2  # in nats, as scikit-learn
    out["nmi"] = (res["nmi"].value, (mi - ami * mean_h) / (1 - ami) / mean_h)
    return out


def reid_values(kind: str, seed: int) -> dict[str, tuple[float, float]]:
    from harness.tasks.reid import Reid

    # 6 identities; camera 0 holds 150 query images each, cameras 1 and 2 hold 40 gallery images each.
    # A query's positives: its identity's 80 gallery images (other cameras, no junk), G = 480.
    q_pid, g_pid = np.repeat(np.arange(6), 150), np.repeat(np.arange(6), 80)
    pid = np.r_[q_pid, g_pid]
    cam = np.r_[np.zeros(len(q_pid), int), np.tile(np.repeat([1, 2], 40), 6)]
    ds = ArrayDataset({"pid": pid, "camid": cam}, {"train": np.arange(0), "query": np.arange(len(q_pid)),
                                                   "gallery": np.arange(len(q_pid), len(pid))})
    res, ctx = evaluate(Reid(), ds, random_embeddings(len(pid), 8, seed, kind), kind)
    g, m = 480, 80
    assert ctx.details["num_valid_queries"] == len(q_pid)
    chance = {f"rank{r}": expected_hit_within(g, m, r) for r in (1, 5, 10)}
    chance.update(mAP=expected_ap(g, m), mINP=expected_inp(g, m))
    return {name: (res[name].value, c) for name, c in chance.items()}


def ood_dataset(classes=10, n_train=50, n_test=120, n_novel=1000):
    labels = np.r_[np.repeat(np.arange(classes), n_train), np.repeat(np.arange(classes), n_test),
                   np.full(n_novel, classes)]
    a, b = classes * n_train, classes * (n_train + n_test)
    return ArrayDataset({"label": labels}, {"train": np.arange(a), "test": np.arange(a, b),
                                            "novel": np.arange(b, len(labels))})


def ood_checks(kind: str, seed: int) -> list[Check]:
    from sklearn.metrics import average_precision_score

    from harness.tasks.ood import OOD, OOD_METRICS

    ds = ood_dataset()
    n = len(ds)
    emb = random_embeddings(n, 8, seed, kind)
    # Gaussian: a random linear classifier (msp and energy scores, id_top1 from its logits);
    # Poincaré: no classifier (dist0 and proto scores, id_top1 from the nearest train prototype)
    weights = torch.randn(8, 10, generator=torch.Generator().manual_seed(seed + 1))
    logits = emb @ weights if kind == "gaussian" else None
    task = OOD(OOD.Config(far=[], metrics=list(OOD_METRICS)))
    res, ctx = evaluate(task, ds, emb, kind, logits=logits)
    n_id, n_ood = 1200, 1000
    scores = ["dist0", "proto"] + (["msp", "energy"] if logits is not None else [])
    assert {k.split("/")[1] for k in res if "/" in k} == set(scores)
    assert ("classifier" if logits is not None else "prototype") in ctx.details["id_top1/predictor"]
    out = []
    # AUROC under the null: SE = sqrt((n_id + n_ood + 1) / (12 n_id n_ood)) (Mann–Whitney U)
    se_auroc = math.sqrt((n_id + n_ood + 1) / (12 * n_id * n_ood))
    # FPR at the 95% TPR threshold: a two-sample quantile, SE ≈ sqrt(0.95 · 0.05 · (1/n_pos + 1/n_neg))
    se_fpr = math.sqrt(0.95 * 0.05 * (1 / n_id + 1 / n_ood))
    for score in scores:
        out += [(f"auroc/{score}/near", res[f"auroc/{score}/near"].value, 0.5, se_auroc),
                (f"fpr95_id_positive/{score}/near", res[f"fpr95_id_positive/{score}/near"].value, 0.95, se_fpr),
                (f"fpr95_ood_positive/{score}/near", res[f"fpr95_ood_positive/{score}/near"].value, 0.95, se_fpr)]
    # AUPR: the closed-form E[AP] of a random ranking; SE = std of scikit-learn's AP over random rankings
    rng = np.random.default_rng(0)
    is_id = np.r_[np.ones(n_id), np.zeros(n_ood)]
    for name, positives in (("aupr_in", is_id), ("aupr_out", 1 - is_id)):
        null = [average_precision_score(positives, rng.random(len(positives))) for _ in range(100)]
        chance = expected_ap(len(positives), int(positives.sum()))
        assert abs(np.mean(null) - chance) < 4 * np.std(null) / 10  # the closed form is the null's mean
        out += [(f"{name}/{score}/near", res[f"{name}/{score}/near"].value, chance, float(np.std(null)))
                for score in scores]
    # ID accuracy: 1/10, binomial SE over the 1,200 ID images
    return out + [("id_top1", res["id_top1"].value, 0.1, math.sqrt(0.1 * 0.9 / n_id))]


def tree_chance_severity(n_coarse: int, fine_per_coarse: int) -> float:
    """Enumerate the (true, wrong prediction) pairs of a balanced tree, all equally likely: mean tree distance."""
    classes = range(n_coarse * fine_per_coarse)
    d = [2 if a // fine_per_coarse == b // fine_per_coarse else 4 for a in classes for b in classes if a != b]
    return sum(d) / len(d)


def hierarchy_dataset(n_coarse=6, fine=4, n_train=80, n_test=80):
    c = n_coarse * fine
    labels = np.r_[np.repeat(np.arange(c), n_train), np.repeat(np.arange(c), n_test)]
    return ArrayDataset({"label": labels, "coarse_label": labels // fine},
                        {"train": np.arange(c * n_train), "test": np.arange(c * n_train, len(labels))})


def hierarchy_checks(kind: str, seed: int) -> list[Check]:
    from scipy.stats import pearsonr

    from harness.tasks.hierarchy import Hierarchy

    ds = hierarchy_dataset()
    n, classes, n_test = len(ds), 24, 24 * 80
    emb = random_embeddings(n, 8, seed, kind)
    # Gaussian: a classifier at chance (i.i.d. random logits); Poincaré: the nearest train prototype
    logits = torch.randn(n, classes, generator=torch.Generator().manual_seed(seed + 1)) if kind == "gaussian" else None
    res, ctx = evaluate(Hierarchy(), ds, emb, kind, logits=logits)
    # top-1: 1/24, binomial SE
    out = [("top1", res["top1"].value, 1 / classes, math.sqrt((1 / classes) * (1 - 1 / classes) / n_test))]
    # severity: the tree's chance value (enumerated). With equal class counts in a balanced tree every
    # predicted class is a sibling of the same number of true classes, so it holds whatever the predicted-class
    # frequencies. Each mistake is 2 or 4: SE = 2 sqrt(π (1 − π) / mistakes), π = P(cousin) = 20/23.
    chance = tree_chance_severity(6, 4)
    assert chance == pytest.approx((2 * 3 + 4 * 20) / 23)
    assert ctx.details["mistake_severity/chance"] == pytest.approx(chance)
    sev, pi = res["mistake_severity"], 20 / 23
    out.append(("mistake_severity", sev.value, chance, 2 * math.sqrt(pi * (1 - pi) / sev.n)))
    # radius–angle Spearman: 0; per class the null SE of Spearman's ρ is 1/sqrt(n − 1), over 24 classes
    out.append(("dist0_angle_spearman", res["dist0_angle_spearman"].value, 0.0, 1 / math.sqrt(24 * 79)))
    # CPCC: a Mantel permutation null on the same prototype distances (permuting the classes' places in the
    # tree); the chance value is its mean and the SE its standard deviation
    test = ds.splits["test"]
    geo = geometry(kind)
    fine = ds.annotations["label"][test]
    protos = torch.stack([geo.midpoint(emb[test][fine == k], dim=0) for k in range(classes)])
    d = geo.pairwise_dist(protos.double()).numpy()
    iu = np.triu_indices(classes, 1)
    rng = np.random.default_rng(0)
    null = []
    for _ in range(300):
        p = rng.permutation(classes)
        null.append(pearsonr(d[iu], np.where(p[iu[0]] // 4 == p[iu[1]] // 4, 2, 4))[0])
    assert abs(np.mean(null)) < 0.05
    return out + [("cpcc", res["cpcc"].value, float(np.mean(null)), float(np.std(null)))]


def typicality_checks(kind: str, seed: int) -> list[Check]:
    from harness.tasks.typicality import Typicality

    classes, per = 20, 100
    labels = np.repeat(np.arange(classes), per)
    typ = np.random.default_rng(seed + 1).random(len(labels)).astype(np.float32)
    ds = ArrayDataset({"label": labels, "typicality": typ}, {"train": np.arange(0), "test": np.arange(len(labels))})
    res, _ = evaluate(Typicality(), ds, random_embeddings(len(labels), 8, seed, kind), kind)
    # the null SE of Spearman's ρ on n points is 1/sqrt(n − 1); per-class mean over 20 classes of 100
    return [("spearman_per_class", res["spearman_per_class"].value, 0.0, 1 / math.sqrt(classes * (per - 1))),
            ("spearman_pooled", res["spearman_pooled"].value, 0.0, 1 / math.sqrt(len(labels) - 1))]


CHECKS = {
    "few_shot": lambda kind: replicated(few_shot_values, kind, 1, replicates=16),
    "fine_from_coarse": lambda kind: replicated(fine_from_coarse_values, kind, 2, replicates=16),
    "retrieval": lambda kind: replicated(retrieval_values, kind, 3, replicates=16),
    "reid": lambda kind: replicated(reid_values, kind, 4, replicates=16),
    "ood": lambda kind: ood_checks(kind, 5),
    "hierarchy": lambda kind: hierarchy_checks(kind, 7),
    "typicality": lambda kind: typicality_checks(kind, 9),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", sorted(CHECKS))
def test_chance(task, kind) -> None:
    results = CHECKS[task](kind)
    assert results
    for name, value, chance, se in results:
        assert value is not None, name
        within(value, chance, se, f"{task}: {name}")
