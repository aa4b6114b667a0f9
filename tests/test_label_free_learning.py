"""A short label-free pre-training on the embedded data beats the untrained network on retrieval.

The label-free rows of the default grid train with the ``colour`` views (SimCLR's colour
distortion alone): on the embedded hierarchy the classes are outlines and gratings under random
colours, and the papers' crop / flip / blur views leave SimCLR and MoCo v2 at chance there
(README, "Label-free methods"). Reduced data (30 images per class) and schedule, one seed.
HACK's output is a 2-D ball, which the untrained network's pooled features out-rank whatever it learns:
its reference is its own network untrained, read through the same ball (``train.epochs=0``). Against
that it learns on MNIST-like digits (scikit-learn's, below: a slow test, since the claim holds over
seeds, not for each), not on the hierarchy (README, "HACK"; ``test_committed_results.py`` pins the
committed rows of both).
"""

import pytest

from harness.run import run_cell
from harness.sweep import compose


def _recall_at_1(tmp_path, overrides):
    config = compose([*overrides, "task=retrieval", "dataset.images_per_class=30", "seed=0",
                      f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])
    result = run_cell(config, progress=False)
    assert result["status"] == "ok", result["reason"]
    return result["metrics"]["recall@1"]["value"]


@pytest.mark.parametrize("overrides", [
    pytest.param(["method=mocov2_colour", "train.epochs=8"], id="mocov2_colour"),
    pytest.param(["method=simclr_colour", "train.epochs=8"], id="simclr_colour", marks=pytest.mark.slow),
    # UHML's pseudo-labels need the default schedule: R@1 0.050 after 8 epochs, 0.126 after 16
    pytest.param(["method=uhml_released_colour", "train.epochs=16"], id="uhml_released_colour",
                 marks=pytest.mark.slow),
    # HCL needs boxes: it pre-trains on the generated scenes and is scored on the hierarchy
    pytest.param(["method=hcl_colour", "train_dataset=scenes", "train.epochs=8"], id="hcl_colour",
                 marks=pytest.mark.slow),
])
def test_short_label_free_run_beats_random_init_on_retrieval(tmp_path, overrides):
    trained = _recall_at_1(tmp_path, overrides)
    reference = _recall_at_1(tmp_path, ["method=random_init"])
    # random_init's Recall@1 on the default data: 0.067 ± 0.016 over 3 seeds (leaderboards/retrieval.md)
    assert trained > 2 * reference, (trained, reference)


@pytest.mark.slow
def test_hack_beats_its_own_initialisation_on_digits_over_ten_seeds(tmp_path):
    """HACK (defaults) on scikit-learn's digits at 28 px, digits 5-9 held out: its ball's Recall@1 against
    the same network untrained, over seeds 0-9 (``grid=hack_retrieval``; committed: 0.431 ± 0.050 against
    0.352 ± 0.044, leaderboards/retrieval.md). One seed is no test: a trained run's Recall@1 moves by
    up to ±0.1 with the float rounding of the CPU it runs on (seed 0: 0.562 on one machine, 0.410 on
    another, 0.424 on one thread), so the claim is the mean over seeds. 1 min 42 s."""
    def recall_at_1(seed, *overrides):
        config = compose(["method=hack", "dataset=digits", "dataset.image_size=28", "dataset.novel_classes=[5,6,7,8,9]",
                          "task=retrieval", f"seed={seed}", *overrides, f"results_dir={tmp_path / 'res'}",
                          f"cache_dir={tmp_path / 'cache'}"])
        result = run_cell(config, progress=False)
        assert result["status"] == "ok", result["reason"]
        return result["metrics"]["recall@1"]["value"]

    gains = [recall_at_1(seed) - recall_at_1(seed, "train.epochs=0") for seed in range(10)]
    assert sum(gains) / len(gains) > 0.02, gains
