"""Build a classifier from its JSON-able architecture, and save or load one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmflow.engine import PLACEMENT_FILE

from .encoders import ConvEncoder, MLPEncoder
from .fusion import SumFusion
from .fusions import FUSIONS
from .multimodal import MultimodalClassifier

WEIGHTS, ARCHITECTURE = "model.pt", "architecture.json"


def build_encoder(kind: str, in_shape: list[int], hidden: list[int], out_dim: int) -> nn.Module:
    """`mlp` for vectors, `cnn` for images, `resnet18` for F x T spectrograms or T x 3 x H x W frames."""
    if kind == "resnet18":
        from .resnet import AudioResNet18, FramesResNet18

        if len(in_shape) == 2:
            return AudioResNet18()
        if len(in_shape) == 4 and in_shape[1] == 3:
            return FramesResNet18(num_frames=in_shape[0])
        raise ValueError(f"encoder resnet18 takes F x T spectrograms or T x 3 x H x W frames, not shape {in_shape}")
    if kind == "cnn":
        return ConvEncoder(in_shape, out_dim)
    return MLPEncoder(in_shape, hidden, out_dim)


def build_classifier(architecture: dict[str, Any]) -> MultimodalClassifier:
    """Build from a JSON-able description: modalities (name -> shape), encoder, hidden, embedding_dim,
    fusion (its params, or a name), num_classes and `modality_heads`: "fusion" (the fusion's own split, if
    any), "unsplit" (add linear heads where the fusion doesn't split) or "own" (a linear head per modality
    always). `task: localization` builds an event-localization model instead (models/localization.py)."""
    if architecture.get("task") == "localization":
        from .localization import build_localizer

        return build_localizer(architecture)
    dim, classes = architecture["embedding_dim"], architecture["num_classes"]
    encoders = {
        name: build_encoder(architecture.get("encoder", "mlp"), shape, architecture["hidden"], dim)
        for name, shape in architecture["modalities"].items()
    }
    if len(encoders) == 1:  # one modality (uni-modal training): its own linear head, whatever the fusion
        return MultimodalClassifier(encoders, SumFusion({m: dim for m in encoders}, classes))
    params = FUSIONS.parse(architecture["fusion"])
    fusion = FUSIONS.of(params)
    if fusion.capabilities["modalities"] not in (None, len(encoders)):
        raise ValueError(f"fusion '{fusion.name}' combines exactly {fusion.capabilities['modalities']} modalities, "
                         f"the data has {len(encoders)}: {', '.join(encoders)}; use concat or sum")
    wanted = architecture.get("modality_heads", "fusion")
    heads = None
    if wanted == "own" or (wanted == "unsplit" and not fusion.capabilities["splits"]):
        heads = {name: nn.Linear(dim, classes) for name in encoders}
    return fusion.target(params, encoders, classes, heads)


def save_classifier(out: Path, model: MultimodalClassifier, architecture: dict[str, Any]) -> None:
    """Write weights and architecture into folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS)
    (out / ARCHITECTURE).write_text(json.dumps(architecture, indent=2))


def copy_model(checkpoint: Path, out: Path) -> None:
    """A training checkpoint's model (weights, architecture, and where its ranks ran) into folder `out`, without
    its training state (optimizer, schedule, method state), which stays with the training step."""
    out.mkdir(parents=True)
    for name in (WEIGHTS, ARCHITECTURE):
        shutil.copy2(checkpoint / name, out / name)
    if (checkpoint / PLACEMENT_FILE).exists():  # written by distributed trainings only
        shutil.copy2(checkpoint / PLACEMENT_FILE, out / PLACEMENT_FILE)


def load_classifier(folder: Path) -> tuple[MultimodalClassifier, dict[str, Any]]:
    """Load what `save_classifier` wrote: (model in eval mode on CPU, architecture)."""
    architecture = json.loads((folder / ARCHITECTURE).read_text())
    model = build_classifier(architecture)
    model.load_state_dict(torch.load(folder / WEIGHTS, weights_only=True, map_location="cpu"))
    return model.eval(), architecture
