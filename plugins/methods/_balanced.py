"""Class-balanced batch plans: K distinct classes × m images of each, in class order.

The plan of the pairwise metric-learning losses (Hyp-ViT; any loss that needs
positives of every class in a batch). Released reference: ``UniqueClassSempler``
in github.com/htdt/hyp_metric ``sampler.py`` — a random permutation of the
classes, and for every class ``m`` images drawn at random, with replacement only
when the class has fewer than ``m`` images (their ``safe_random_choice``).
"""

from __future__ import annotations

import numpy as np

from harness.errors import ConfigError, HarnessError


def class_balanced_batches(labels: np.ndarray, batch_size: int, m: int, rng: np.random.Generator,
                           *, who: str = "class_balanced_batches") -> list[np.ndarray]:
    """One epoch of batches of ``K = min(batch_size // m, number of classes)`` distinct classes × ``m`` images.

    Batch layout: the ``m`` positions of the first class, then the next class's… so that
    ``labels[batch].reshape(K, m)`` has one class per row. Classes are taken from a stream of random
    permutations (every class once before any class twice, as ``UniqueClassSempler`` does per epoch);
    within a class the ``m`` images are distinct, drawn with replacement only when the class has fewer
    than ``m``. The epoch holds ``max(1, len(labels) // (K·m))`` batches, i.e. about one pass over the
    images, so that ``train.epochs`` means the same budget as for shuffled batches (the released sampler's
    epoch is one pass over the classes instead).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise HarnessError(f"{who}: needs the training labels (a non-empty 1-D array); got shape {labels.shape}")
    if m < 1:
        raise ConfigError(f"{who}: m (images per class) must be >= 1, got {m}")
    classes, inverse = np.unique(labels, return_inverse=True)
    if batch_size // m < 2:
        raise ConfigError(f"{who}: train.batch_size={batch_size} holds {batch_size // m} class(es) of m={m} images; "
                           f"the loss needs at least 2 classes per batch: raise train.batch_size to >= {2 * m} "
                           "or lower method.m")
    if len(classes) < 2:
        raise HarnessError(f"{who}: the training split has {len(classes)} class; a class-balanced plan needs >= 2")
    k = min(batch_size // m, len(classes))
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    n_batches = max(1, len(labels) // (k * m))
    stream: list[int] = []
    batches = []
    for _ in range(n_batches):
        if len(stream) < k:
            # refill with a new permutation whose first classes are not the ones left over, so that the
            # batch drawn next has k distinct classes (possible since k <= number of classes)
            perm = rng.permutation(len(classes)).tolist()
            left = set(stream)
            stream += [c for c in perm if c not in left] + [c for c in perm if c in left]
        picked, stream = stream[:k], stream[k:]
        batches.append(np.concatenate([rng.choice(members[c], size=m, replace=len(members[c]) < m)
                                       for c in picked]))
    return batches
