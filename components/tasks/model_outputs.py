"""Every sample's outputs of a model over a pass of batches, gathered, for measures that need them all at once
(linear probes, class means)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def model_outputs(model: torch.nn.Module, batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(fused logits as "fused" and per-modality logits, embeddings by modality, labels flattened) of every sample."""
    logits: dict[str, list[torch.Tensor]] = {}
    embeddings: dict[str, list[torch.Tensor]] = {}
    labels = []
    for features, batch_labels in batches:
        out = model(features)
        logits.setdefault("fused", []).append(out.logits)
        for m, value in out.modality_logits.items():
            logits.setdefault(m, []).append(value)
        for m, value in out.embeddings.items():
            embeddings.setdefault(m, []).append(value)
        labels.append(batch_labels.reshape(-1))
    return ({k: torch.cat(v) for k, v in logits.items()}, {k: torch.cat(v) for k, v in embeddings.items()},
            torch.cat(labels))
