"""The params every colored-and-gray digit set shares: how real gray digits are split and colored."""

from __future__ import annotations

from pydantic import Field

from mmflow.engine import Params


class ColoringParams(Params):
    """How real gray digits are split and colored: the PMR paper's CG-MNIST setting by default."""

    test_size: int = Field(1000, ge=10, description="digits held out for test")
    val_size: int = Field(0, ge=0, le=50_000, description="training digits held out for validation, colored like "
                          "test: choose hyperparameters on them, not on test")
    train_color_match: float = Field(1.0, ge=0, le=1, description="P(color = the label's color) in training "
                                     "(1: the paper)")
    test_color_match: float = Field(0.1, ge=0, le=1, description="P(color = the label's color) in test and "
                                    "validation (0.1: uniform over the 10 colors, the paper)")
    color_jitter: float = Field(0.03, ge=0, description="variance of the per-image color jitter (the official "
                                "files': 0.03)")

    def check_sizes(self, digits: int, source: str) -> None:
        """Refuse held-out splits that leave fewer than 10 of the source's `digits` for training."""
        if self.test_size + self.val_size > digits - 10:
            raise ValueError(f"test_size + val_size = {self.test_size + self.val_size} leaves fewer than 10 "
                             f"of {source}'s {digits:,} digits for training")
