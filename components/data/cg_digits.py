"""`data.cg_digits`: colored-and-gray digits built from scikit-learn's 1,797 real 8 x 8 handwritten digits.

A second color-tied dataset in CG-MNIST's setting, from another real image set that ships in a
package: the gray digit and the same digit colored, the color the label's in every training pair and
random in validation and test (by default), so that the colored modality wins through its shortcut.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from mmflow.engine import StepContext, component

from .coloring import ColoringParams


class CGDigitsParams(ColoringParams):
    """How the 1,797 digits are split and how strongly color follows the label."""

    test_size: int = Field(400, ge=10, le=1787, description="digits held out for test")

    @model_validator(mode="after")
    def _leaves_training_digits(self) -> "CGDigitsParams":
        self.check_sizes(1797, "scikit-learn")
        return self


@component("data.cg_digits", params=CGDigitsParams, outputs={"dataset": "dataset"})
def cg_digits(ctx: StepContext, params: CGDigitsParams) -> dict:
    """A gray digit (1x8x8) and the same digit colored (3x8x8), its color the label's in training."""
    from .colored_digits import build_cg_digits
    from .datasets import save_tensor_dataset

    splits = build_cg_digits(params, ctx.seed)
    save_tensor_dataset(ctx.output("dataset"), splits, num_classes=10)
    return {f"{split}_samples": int(data["label"].shape[0]) for split, data in splits.items()}
