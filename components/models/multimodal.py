"""The multimodal classifier, its one structured output, and how it is saved and loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .encoders import MLPEncoder
from .fusion import ConcatFusion

WEIGHTS, ARCHITECTURE = "model.pt", "architecture.json"


class MultimodalOutput(NamedTuple):
    """Fused logits, each modality's embedding (fusion input) and, where defined, its logits."""

    logits: torch.Tensor
    embeddings: dict[str, torch.Tensor]
    modality_logits: dict[str, torch.Tensor]


class MultimodalClassifier(nn.Module):
    """One encoder per modality, then a fusion over their embeddings."""

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module) -> None:
        super().__init__()
        self.modalities = list(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion

    def forward(self, inputs: dict[str, torch.Tensor]) -> MultimodalOutput:
        embeddings = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        logits, modality_logits = self.fusion(embeddings)
        return MultimodalOutput(logits, embeddings, modality_logits)


def build_classifier(architecture: dict[str, Any]) -> MultimodalClassifier:
    """Build from a JSON-able description: modalities (name -> shape), hidden, embedding_dim, fusion."""
    dim = architecture["embedding_dim"]
    encoders = {
        name: MLPEncoder(shape, architecture["hidden"], dim) for name, shape in architecture["modalities"].items()
    }
    if architecture["fusion"] != "concat":
        raise ValueError(f"unknown fusion {architecture['fusion']!r}")
    fusion = ConcatFusion({name: dim for name in encoders}, architecture["num_classes"])
    return MultimodalClassifier(encoders, fusion)


def save_classifier(out: Path, model: MultimodalClassifier, architecture: dict[str, Any]) -> None:
    """Write weights and architecture into folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS)
    (out / ARCHITECTURE).write_text(json.dumps(architecture, indent=2))


def load_classifier(folder: Path) -> tuple[MultimodalClassifier, dict[str, Any]]:
    """Load what `save_classifier` wrote: (model in eval mode on CPU, architecture)."""
    architecture = json.loads((folder / ARCHITECTURE).read_text())
    model = build_classifier(architecture)
    model.load_state_dict(torch.load(folder / WEIGHTS, weights_only=True, map_location="cpu"))
    return model.eval(), architecture
