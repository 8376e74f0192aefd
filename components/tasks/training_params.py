"""The params of the shared training loop: the model, optimizer and batching every training step and G-Blend
probe uses, and what classification and localization add."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mmflow.engine import Params

from ..balance.base import METHODS
from ..balance.methods.naive import NaiveParams
from ..models.fusions import FUSIONS, ConcatParams
from ..models.localization_fusions import LOCALIZATION_FUSIONS
from ..models.localization_fusions import ConcatParams as LocalizationConcatParams


class ClassifierParams(Params):
    """Model, optimizer and batching of a multimodal classifier (shared by training and G-Blend probes)."""

    batch_size: int = Field(64, ge=1, description="samples per batch on each worker")
    encoder: Literal["mlp", "cnn", "resnet18"] = Field(
        "mlp", description="mlp for vectors; cnn (4 conv layers) for images; resnet18 for spectrograms and frames")
    hidden: list[int] = Field(default_factory=lambda: [128], description="MLP encoder hidden widths")
    embedding_dim: int | None = Field(None, ge=1, description="each modality's embedding size (fusion input); "
                                      "null: 512 for resnet18 (its only size), 64 otherwise")
    fusion: FUSIONS.field() = Field(  # type: ignore[valid-type]
        default_factory=ConcatParams, description="the fusion: its name, or a mapping with `name` and its params "
        "(`mmflow components --table fusion` lists them)")
    optimizer: Literal["sgd", "adam", "adagrad"] = Field("sgd", description="optimizer")
    lr: float = Field(0.05, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, description="L2 weight decay")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm to this (null: no clipping)")
    shuffle_buffer: int = Field(1000, ge=1, description="webdataset sample shuffle buffer")
    loader_workers: int = Field(0, ge=0, le=64, description="processes decoding samples for each training worker "
                                "(media shards; count them in cpus_per_worker); 0: in the training process")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="a truncated or corrupt shard stops the step naming it, or is skipped and counted "
        "(corrupt_shard_reads; ranks stay even by padding)")
    verify_shards: Literal["once", "every_epoch"] = Field(
        "once", description="check each shard against the SHA-256 in its manifest before a worker first reads it, "
        "or before every epoch (for shards that may change during training)")

    @model_validator(mode="after")
    def _fits_encoder(self) -> "ClassifierParams":
        if self.encoder == "mlp" and FUSIONS.of(self.fusion).capabilities["stage"] == "intermediate":
            raise ValueError(f"fusion '{self.fusion.name}' works inside staged encoders: set encoder: cnn or resnet18")
        if self.encoder == "resnet18" and self.embedding_dim not in (None, 512):
            raise ValueError("encoder resnet18 gives 512-d embeddings: leave embedding_dim out or set it to 512")
        return self

    def architecture(self, manifest: dict, modalities: list[str], modality_heads: str = "fusion") -> dict[str, Any]:
        """The JSON-able model description for `build_classifier`, from the shards' manifest."""
        return {"modalities": {m: manifest["modalities"][m]["shape"] for m in modalities},
                "num_classes": manifest["num_classes"], "encoder": self.encoder, "hidden": self.hidden,
                "embedding_dim": self.embedding_dim or (512 if self.encoder == "resnet18" else 64),
                "fusion": self.fusion.model_dump(), "modality_heads": modality_heads}


class TrainClassifierParams(ClassifierParams):
    """Model, optimizer, schedule and balancing method of a multimodal classifier."""

    epochs: int = Field(10, ge=1, description="passes over the training shards")
    method: METHODS.field() = Field(  # type: ignore[valid-type]
        default_factory=NaiveParams, description="the balancing method: its name, or a mapping with `name` and its "
        "params (`mmflow components --table method` lists them)")
    lr_schedule: Literal["constant", "step", "cosine"] = Field("constant", description="learning-rate schedule")
    lr_step_size: int = Field(10, ge=1, description="epochs between decays (step schedule)")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="decay factor (step schedule)")
    uneven_shards: Literal["pad", "drop"] = Field(
        "pad", description="when shards don't split evenly over workers: repeat samples or drop them"
    )
    diagnostics: bool = Field(True, description="per-epoch head/prototype accuracy, rho and gradient angles")
    diagnostic_fraction: float = Field(0.1, gt=0, le=1, description="share of batches for diagnostic prototypes")
    angle_batches: int = Field(2, ge=0, description="batches per epoch for the gradient-angle diagnostic")

    @model_validator(mode="after")
    def _fits_method(self) -> "TrainClassifierParams":
        METHODS.of(self.method).target.check(self.method, self)
        return self


class TrainLocalizationParams(TrainClassifierParams):
    """AVEL model (attention + BiLSTMs), fusion, optimizer and method (naive or PMR on event segments)."""

    encoder: Literal["avel"] = Field("avel", description="audio-guided visual attention + a BiLSTM per modality")
    hidden: int = Field(128, ge=1, description="LSTM hidden size per direction (embeddings are 2 x hidden)")
    attention_dim: int = Field(256, ge=1, description="hidden size of the audio-guided attention")
    fusion: LOCALIZATION_FUSIONS.field() = Field(  # type: ignore[valid-type]
        default_factory=LocalizationConcatParams, description="the fusion of both streams per segment: its name, or "
        "a mapping with `name` and its params (`mmflow components --table 'localization fusion'` lists them)")
    loss: Literal["cross_entropy", "avel_margin"] = Field(
        "cross_entropy", description="per-segment loss: cross-entropy, or AVEL's original softmax + multi-label "
        "soft-margin loss")
    optimizer: Literal["sgd", "adam", "adagrad"] = Field("adam", description="optimizer (AVEL: Adam)")
    lr: float = Field(1e-3, gt=0, description="learning rate (AVEL: 1e-3)")
    batch_size: int = Field(64, ge=1, description="videos per batch on each worker")
    method: METHODS.field(lambda choice: choice.capabilities["localization"],  # type: ignore[valid-type]
                          "does not train event localization") = Field(
        default_factory=NaiveParams, description="the balancing method: its name, or a mapping with `name` and its "
        "params, among those that train localization (PMR's prototype terms use event segments only)")

    @model_validator(mode="after")
    def _no_embedding_dim(self) -> "TrainLocalizationParams":
        if self.embedding_dim is not None:
            raise ValueError("localization embeddings are the BiLSTM outputs (2 x hidden): set hidden, not "
                             "embedding_dim")
        return self

    def architecture(self, manifest: dict, modalities: list[str], modality_heads: str = "fusion") -> dict[str, Any]:
        """The JSON-able localization model description, from the shards' manifest."""
        return {"task": "localization", "modalities": {m: manifest["modalities"][m]["shape"] for m in modalities},
                "num_classes": manifest["num_classes"], "hidden": self.hidden, "attention_dim": self.attention_dim,
                "fusion": self.fusion.model_dump(), "modality_heads": modality_heads}
