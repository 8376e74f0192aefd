"""Late fusion modules: embeddings by modality -> (fused logits, per-modality logits where they split).

Definitions follow the PMR/OGM-GE reference code: concat = fc(cat(z)); sum = sum_m fc_m(z_m);
FiLM: gamma, beta = split(fc(z_0)), out = fc_out(gamma * z_1 + beta); gated:
out = fc_out(sigmoid(fc_0(z_0)) * fc_1(z_1)). Concat's per-modality logits use that modality's
block of the weight and 1/k of the bias; sum's are its branches (both give each modality's weight,
`modality_weights()`); FiLM and gated don't split. Shared: one linear head fc over every modality's
embedding, fused per sample as sum_m softmax(-entropy)_m fc(z_m) (MLA's) or as boost_rate * sum_m fc(z_m)
with a learnt boost rate (ReconBoost's ensemble).
DMRN (AVEL's dual multimodal residual network) fuses the event-localization model's streams.
fusions.py and localization_fusions.py register them by name with their params.
"""

from __future__ import annotations

import torch
from torch import nn

class ConcatFusion(nn.Module):
    """`fc(cat(z_1..z_k))`; each modality's logits use its block of the weight and 1/k of the bias."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.fc = nn.Linear(sum(self.dims.values()), num_classes)

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fused = self.fc(torch.cat([embeddings[m] for m in self.dims], dim=1))
        share = self.fc.bias / len(self.dims)
        per_modality, start = {}, 0
        for m, dim in self.dims.items():
            per_modality[m] = embeddings[m] @ self.fc.weight[:, start:start + dim].T + share
            start += dim
        return fused, per_modality

    def modality_weights(self) -> dict[str, torch.Tensor]:
        """Each modality's (classes x embedding) block of the weight."""
        return dict(zip(self.dims, self.fc.weight.split(list(self.dims.values()), dim=1)))


class SumFusion(nn.Module):
    """`sum_m fc_m(z_m)`: each branch is that modality's logits."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.fcs = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        per_modality = {m: fc(embeddings[m]) for m, fc in self.fcs.items()}
        return torch.stack(list(per_modality.values())).sum(0), per_modality

    def modality_weights(self) -> dict[str, torch.Tensor]:
        """Each modality's (classes x embedding) weight."""
        return {m: fc.weight for m, fc in self.fcs.items()}


class SharedHeadFusion(nn.Module):
    """One linear head for every modality (one embedding size). `combine="entropy"`: the fused logits weigh each
    modality's by exp(max entropy - its entropy), normalised over modalities per sample (MLA's test-time fusion);
    `"sum"`: boost_rate * the sum of every modality's, the boost rate a learnt scalar (ReconBoost's ensemble)."""

    def __init__(self, dims: dict[str, int], num_classes: int, combine: str = "entropy",
                 boost_rate: float = 1.0) -> None:
        super().__init__()
        if len(set(dims.values())) > 1:
            raise ValueError(f"fusion 'shared' applies one head to every modality's embedding, so they need one "
                             f"size: got {dims} (set embedding_dim)")
        self.modalities, self.combine = list(dims), combine
        self.fc = nn.Linear(next(iter(dims.values())), num_classes)
        if combine == "sum":
            self.boost_rate = nn.Parameter(torch.tensor(float(boost_rate)))

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        per_modality = {m: self.fc(embeddings[m]) for m in self.modalities}
        logits = torch.stack(list(per_modality.values()))  # modality x sample x class
        if self.combine == "sum":
            return self.boost_rate * logits.sum(0), per_modality
        entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
        return (entropy_weights(entropy).unsqueeze(-1) * logits).sum(0), per_modality

    def modality_weights(self) -> dict[str, torch.Tensor]:
        """The one (classes x embedding) weight, for each modality."""
        return {m: self.fc.weight for m in self.modalities}


def entropy_weights(entropy: torch.Tensor) -> torch.Tensor:
    """exp(max_m e_m - e_m) / sum_k exp(max_m e_m - e_k) over the first dimension: softmax(-e)."""
    return torch.softmax(-entropy, dim=0)


class FiLMFusion(nn.Module):
    """The first modality produces (gamma, beta) that modulate the second: fc_out(gamma * z_1 + beta)."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        (self.cond, d_cond), (self.target, d_target) = dims.items()  # exactly two (fusions.py checks)
        self.fc = nn.Linear(d_cond, 2 * d_target)
        self.fc_out = nn.Linear(d_target, num_classes)

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gamma, beta = self.fc(embeddings[self.cond]).chunk(2, dim=1)
        return self.fc_out(gamma * embeddings[self.target] + beta), {}


class GatedFusion(nn.Module):
    """The first modality gates the second: fc_out(sigmoid(fc_0(z_0)) * fc_1(z_1))."""

    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        (self.gate, d_gate), (self.value, d_value) = dims.items()  # exactly two (fusions.py checks)
        hidden = hidden or d_value
        self.fc_gate, self.fc_value = nn.Linear(d_gate, hidden), nn.Linear(d_value, hidden)
        self.fc_out = nn.Linear(hidden, num_classes)

    def forward(self, embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        gate = torch.sigmoid(self.fc_gate(embeddings[self.gate]))
        return self.fc_out(gate * self.fc_value(embeddings[self.value])), {}


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
