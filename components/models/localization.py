"""AVEL event-localization models (Tian et al., ECCV 2018): audio-guided visual attention, one
bidirectional LSTM per modality, concat or DMRN fusion, a classifier per segment.

The output is the same `MultimodalOutput` every balancing method reads, with segments as the
samples: fused logits (B*T) x classes, each modality's per-segment embedding (B*T) x 2*hidden,
so PMR's prototypes and the diagnostics work on segments unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .localization_fusions import LOCALIZATION_FUSIONS
from .multimodal import MultimodalClassifier, MultimodalOutput


class AudioGuidedAttention(nn.Module):
    """Per segment: e_i = w^T tanh(U_v v_i + U_a a), alpha = softmax_i(e), attended = sum_i alpha_i v_i."""

    def __init__(self, audio_dim: int, visual_dim: int, hidden: int) -> None:
        super().__init__()
        self.visual = nn.Linear(visual_dim, hidden)
        self.audio = nn.Linear(audio_dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, regions: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """regions B x T x R x Dv, audio B x T x Da -> (attended B x T x Dv, weights B x T x R)."""
        energy = self.score(torch.tanh(self.visual(regions) + self.audio(audio).unsqueeze(2))).squeeze(-1)
        weights = torch.softmax(energy, dim=-1)
        return (weights.unsqueeze(-1) * regions).sum(dim=2), weights


class AudioStream(nn.Module):
    """A bidirectional LSTM over the audio features: B x T x Da -> B x T x 2*hidden."""

    def __init__(self, audio_dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(audio_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.lstm(audio.float())[0]


class VisualStream(nn.Module):
    """Audio-guided attention over each segment's regions, then a bidirectional LSTM."""

    def __init__(self, audio_dim: int, visual_dim: int, hidden: int, attention_dim: int) -> None:
        super().__init__()
        self.attention = AudioGuidedAttention(audio_dim, visual_dim, attention_dim)
        self.lstm = nn.LSTM(visual_dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        regions = visual.float().flatten(2, -2)  # B x T x H x W x D -> B x T x (H*W) x D
        attended, _ = self.attention(regions, audio.float())
        return self.lstm(attended)[0]


class LocalizationModel(MultimodalClassifier):
    """Audio and visual streams (the encoders), a fusion and a per-segment classifier."""

    def __init__(self, audio: str, visual: str, audio_dim: int, visual_dim: int, hidden: int, attention_dim: int,
                 fusion: nn.Module, heads: dict[str, nn.Module] | None) -> None:
        encoders = {audio: AudioStream(audio_dim, hidden), visual: VisualStream(audio_dim, visual_dim, hidden,
                                                                                attention_dim)}
        super().__init__(encoders, fusion, heads)
        self.audio, self.visual = audio, visual

    def forward(self, inputs: dict[str, torch.Tensor]) -> MultimodalOutput:
        audio = inputs[self.audio]
        streams = {self.audio: self.encoders[self.audio](audio),
                   self.visual: self.encoders[self.visual](inputs[self.visual], audio)}
        embeddings = {m: h.reshape(-1, h.shape[-1]) for m, h in streams.items()}  # segments as samples
        logits, modality_logits = self.fusion(embeddings)
        if self.heads:
            modality_logits = {m: head(embeddings[m]) for m, head in self.heads.items()}
        return MultimodalOutput(logits, embeddings, modality_logits)


def build_localizer(architecture: dict[str, Any]) -> LocalizationModel:
    """From {modalities: {audio: [T, Da], visual: [T, H, W, Dv]}, num_classes, hidden, attention_dim,
    fusion (a registered localization fusion's params), modality_heads}."""
    shapes = architecture["modalities"]
    audio = [m for m, s in shapes.items() if len(s) == 2]
    visual = [m for m, s in shapes.items() if len(s) == 4]
    if len(audio) != 1 or len(visual) != 1 or len(shapes) != 2:
        raise ValueError(f"localization needs one T x D (audio) and one T x H x W x D (visual) modality, got {shapes}")
    hidden, classes = architecture["hidden"], architecture["num_classes"]
    params = LOCALIZATION_FUSIONS.parse(architecture["fusion"])
    fusion = LOCALIZATION_FUSIONS.of(params)
    wanted = architecture.get("modality_heads", "fusion")
    heads = None
    if wanted == "own" or (wanted == "unsplit" and not fusion.capabilities["splits"]):
        heads = {m: nn.Linear(2 * hidden, classes) for m in (audio[0], visual[0])}
    module = fusion.target(params, {audio[0]: 2 * hidden, visual[0]: 2 * hidden}, classes)
    return LocalizationModel(audio[0], visual[0], shapes[audio[0]][-1], shapes[visual[0]][-1], hidden,
                             architecture["attention_dim"], module, heads)


def avel_margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AVEL's original loss: a multi-label soft-margin loss on the per-segment softmax, one-hot targets."""
    targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.multilabel_soft_margin_loss(torch.softmax(logits, dim=1), targets)
