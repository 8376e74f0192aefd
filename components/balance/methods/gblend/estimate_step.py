"""`gblend.estimate`: Gradient-Blending weights from probe trainings (offline G-Blend's first step)."""

from __future__ import annotations

from pydantic import Field, model_validator

from mmflow.engine import InputDataError, Maybe, StepContext, component

from ....tasks.training_params import ClassifierParams
from .estimate import BlendEstimateParams
from .method import unsupported_fusion


class GBlendEstimateParams(ClassifierParams, BlendEstimateParams):
    """The model to probe (when no checkpoint is wired), its optimizer, and the estimate's settings."""

    init_seed: int | None = Field(None, description="seed of a fresh model's initialisation (default: the workflow seed)")

    @model_validator(mode="after")
    def _probes_can_split(self) -> "GBlendEstimateParams":
        reason = unsupported_fusion(self.fusion.name)
        if reason:
            raise ValueError(reason)
        return self


@component("gblend.estimate", params=GBlendEstimateParams,
           inputs={"train": "shards", "model": Maybe("model")}, outputs={"weights": "gblend_weights"},
           headline=("gblend_weight/*",), seeds="each")
def gblend_estimate(ctx: StepContext, params: GBlendEstimateParams) -> dict:
    """G-Blend weights of each modality head and the fused head, from a checkpoint or a fresh model."""
    import json

    import torch

    from ....data.shards import load_manifest, sample_keys, split_keys
    from ....models.build import build_classifier, load_classifier
    from .estimate import FUSED_HEAD, blend_weights
    from .probes import load_samples, probe_configs, probe_losses, run_probe

    manifest = load_manifest(ctx.inputs["train"])
    modalities = list(manifest["modalities"])
    if "model" in ctx.inputs:
        model, architecture = load_classifier(ctx.inputs["model"])
        if architecture.get("modality_heads") != "own":
            raise InputDataError(f"{ctx.inputs['model']}: G-Blend probes need a model with a head per modality "
                             "(one trained with method gblend)")
    else:
        torch.manual_seed(ctx.seed if params.init_seed is None else params.init_seed)
        architecture = params.architecture(manifest, modalities, modality_heads="own")
        model = build_classifier(architecture)
    heads = [*modalities, FUSED_HEAD]
    # the split online training holds out (the loop salts it with the method's name)
    train_keys, holdout_keys = split_keys(sample_keys(manifest), params.holdout, ctx.seed, salt="gblend-holdout")
    train_dir = ctx.inputs["train"].resolve()
    configs = probe_configs(heads, model, architecture, train_dir, manifest, train_keys,
                            load_samples(train_dir, holdout_keys), params, params, ctx.seed, draw=0)
    ctx.log(f"{len(heads)} probes of {params.probe_epochs} epoch(s) on {len(configs[0]['probe_keys'])} samples, "
            f"blend-validation {len(holdout_keys)} samples")
    losses = probe_losses(ctx.run_tasks(run_probe, configs), heads)
    estimate = blend_weights(losses, params.formula, params.min_delta_o)
    record = {**estimate.as_dict(), "losses": {h: vars(found) for h, found in losses.items()},
              "formula": params.formula, "holdout_samples": len(holdout_keys)}
    ctx.output("weights").write_text(json.dumps(record, indent=2))
    ctx.log("weights " + ", ".join(f"{h} {w:.3f}" for h, w in estimate.weights.items()))
    return {f"gblend_{k}": v for k, v in estimate.metrics().items()}
