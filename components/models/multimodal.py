"""The multimodal classifier, its one structured output, and how it is saved and loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .encoders import build_encoder
from .fusion import build_fusion, fusion_splits

WEIGHTS, ARCHITECTURE = "model.pt", "architecture.json"


class MultimodalOutput(NamedTuple):
    """Fused logits, each modality's embedding (fusion input) and, where defined, its logits."""

    logits: torch.Tensor
    embeddings: dict[str, torch.Tensor]
    modality_logits: dict[str, torch.Tensor]


class MultimodalClassifier(nn.Module):
    """One encoder per modality, then a fusion over their embeddings.

    `heads` (optional) are per-modality linear classifiers for fusions whose logits don't
    split, for methods that need each modality's own logits (auxiliary losses).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, heads: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.modalities = list(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(heads or {})

    def forward(self, inputs: dict[str, torch.Tensor]) -> MultimodalOutput:
        embeddings = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        logits, modality_logits = self.fusion(embeddings)
        if self.heads:
            modality_logits = {m: head(embeddings[m]) for m, head in self.heads.items()}
        return MultimodalOutput(logits, embeddings, modality_logits)


def build_classifier(architecture: dict[str, Any]) -> MultimodalClassifier:
    """Build from a JSON-able description: modalities (name -> shape), encoder, hidden, embedding_dim,
    fusion, num_classes and `modality_heads` (add per-modality heads where the fusion doesn't split)."""
    dim, classes = architecture["embedding_dim"], architecture["num_classes"]
    encoders = {
        name: build_encoder(architecture.get("encoder", "mlp"), shape, architecture["hidden"], dim)
        for name, shape in architecture["modalities"].items()
    }
    fusion = build_fusion(architecture["fusion"], {name: dim for name in encoders}, classes)
    heads = None
    if architecture.get("modality_heads") and len(encoders) > 1 and not fusion_splits(architecture["fusion"]):
        heads = {name: nn.Linear(dim, classes) for name in encoders}
    return MultimodalClassifier(encoders, fusion, heads)


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
