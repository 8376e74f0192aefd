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

from .fusion import ConcatFusion
from .multimodal import MultimodalClassifier, MultimodalOutput

LOCALIZATION_FUSIONS = ("concat", "dmrn")


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


class DMRNFusion(nn.Module):
    """Dual multimodal residual blocks: m = 0.5 (U_a(h_a) + U_v(h_v)); h_a <- tanh(h_a + m),
    h_v <- tanh(h_v + m); then fc(0.5 (h_a + h_v)). The logits do not split by modality."""

    def __init__(self, dims: dict[str, int], num_classes: int, blocks: int = 1) -> None:
        super().__init__()
        (self.first, dim), (self.second, other) = dims.items()
        if dim != other:
            raise ValueError(f"dmrn needs embeddings of one size, got {dims}")
        self.blocks = nn.ModuleList(
            nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim)) for m in dims})
            for _ in range(blocks))
        self.fc = nn.Linear(dim, num_classes)

    def merge(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fused representation after every block."""
        a, v = embeddings[self.first], embeddings[self.second]
        for block in self.blocks:
            merged = 0.5 * (block[self.first](a) + block[self.second](v))
            a, v = torch.tanh(a + merged), torch.tanh(v + merged)
        return 0.5 * (a + v)

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.fc(self.merge(embeddings)), {}


class LocalizationModel(MultimodalClassifier):
    """Audio and visual streams (the encoders), a fusion and a per-segment classifier."""

    def __init__(self, audio: str, visual: str, audio_dim: int, visual_dim: int, num_classes: int, hidden: int,
                 attention_dim: int, fusion: str, dmrn_blocks: int, heads: dict[str, nn.Module] | None) -> None:
        encoders = {audio: AudioStream(audio_dim, hidden), visual: VisualStream(audio_dim, visual_dim, hidden,
                                                                                attention_dim)}
        dims = {audio: 2 * hidden, visual: 2 * hidden}
        fused = ConcatFusion(dims, num_classes) if fusion == "concat" else DMRNFusion(dims, num_classes, dmrn_blocks)
        super().__init__(encoders, fused, heads)
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
    fusion: concat | dmrn, dmrn_blocks, modality_heads}."""
    shapes = architecture["modalities"]
    audio = [m for m, s in shapes.items() if len(s) == 2]
    visual = [m for m, s in shapes.items() if len(s) == 4]
    if len(audio) != 1 or len(visual) != 1 or len(shapes) != 2:
        raise ValueError(f"localization needs one T x D (audio) and one T x H x W x D (visual) modality, got {shapes}")
    hidden, classes = architecture["hidden"], architecture["num_classes"]
    heads = None
    if architecture.get("modality_heads") in ("unsplit", "own") and (
            architecture["modality_heads"] == "own" or architecture["fusion"] == "dmrn"):
        heads = {m: nn.Linear(2 * hidden, classes) for m in (audio[0], visual[0])}
    return LocalizationModel(audio[0], visual[0], shapes[audio[0]][-1], shapes[visual[0]][-1], classes, hidden,
                             architecture["attention_dim"], architecture["fusion"], architecture["dmrn_blocks"], heads)


def avel_margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AVEL's original loss: a multi-label soft-margin loss on the per-segment softmax, one-hot targets."""
    targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.multilabel_soft_margin_loss(torch.softmax(logits, dim=1), targets)
