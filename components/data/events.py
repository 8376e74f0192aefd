"""`data.synthetic_events`: the embedded event-localization source (AVE-shaped, small by default).

Each video has T one-second segments; one event of a class spans a contiguous run of them and
background fills the rest. Audio carries the event as a class mean in every event segment;
the visual stream carries it as a class pattern in one region of a grid (where an audio-guided
attention should look). The two strengths differ, so one modality dominates.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from mmflow.engine import Params, StepContext, component


class SyntheticEventsParams(Params):
    """Sizes and per-modality signal of the synthetic events."""

    num_classes: int = Field(5, ge=1, le=1000, description="event classes (background is one more, the last)")
    segments: int = Field(10, ge=2, le=1000, description="segments per video (AVE: 10)")
    min_event: int = Field(2, ge=1, description="shortest event, in segments")
    train_size: int = Field(600, ge=1, description="training videos")
    test_size: int = Field(200, ge=1, description="test videos")
    audio_dim: int = Field(32, ge=1, description="audio feature size per segment (AVE: 128)")
    visual_grid: int = Field(3, ge=1, description="visual regions per side (AVE: 7)")
    visual_dim: int = Field(32, ge=1, description="visual feature size per region (AVE: 512)")
    audio_signal: float = Field(1.5, ge=0, description="norm of the event's audio class mean")
    visual_signal: float = Field(1.6, ge=0, description="norm of the event's visual class pattern (in one region "
                                 "of the grid, so the weaker modality despite the larger norm)")
    noise: float = Field(1.0, ge=0, description="std of the Gaussian noise on every feature")

    @model_validator(mode="after")
    def _fits(self) -> "SyntheticEventsParams":
        if self.min_event > self.segments:
            raise ValueError(f"min_event {self.min_event} exceeds segments {self.segments}")
        return self


@component("data.synthetic_events", params=SyntheticEventsParams, outputs={"dataset": "dataset"})
def synthetic_events(ctx: StepContext, params: SyntheticEventsParams) -> dict:
    """Synthetic audio-visual event videos: per-segment labels, events of one class, background elsewhere."""
    from .datasets import save_tensor_dataset

    splits = generate_events(params, ctx.seed)
    save_tensor_dataset(ctx.output("dataset"), splits, params.num_classes + 1, background=params.num_classes)
    return {"train_videos": params.train_size, "test_videos": params.test_size,
            "event_segment_share": float((splits["train"]["segments"] != params.num_classes).float().mean())}


def generate_events(params: SyntheticEventsParams, seed: int) -> dict:
    """Draw train/test splits: audio (N, T, audio_dim), visual (N, T, g, g, visual_dim), label, segments."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    t, g, c = params.segments, params.visual_grid, params.num_classes
    audio_means = _unit(torch.randn(c, params.audio_dim, generator=gen)) * params.audio_signal
    visual_means = _unit(torch.randn(c, params.visual_dim, generator=gen)) * params.visual_signal
    splits = {}
    for split, size in (("train", params.train_size), ("test", params.test_size)):
        labels = torch.randint(c, (size,), generator=gen)
        lengths = torch.randint(params.min_event, t + 1, (size,), generator=gen)
        starts = (torch.rand(size, generator=gen) * (t - lengths + 1)).long()
        steps = torch.arange(t)
        inside = (steps >= starts[:, None]) & (steps < (starts + lengths)[:, None])  # N x T
        segments = torch.where(inside, labels[:, None], torch.tensor(c))
        audio = torch.randn(size, t, params.audio_dim, generator=gen) * params.noise
        audio += inside[..., None] * audio_means[labels][:, None, :]
        visual = torch.randn(size, t, g, g, params.visual_dim, generator=gen) * params.noise
        region = torch.randint(g * g, (size,), generator=gen)  # where the event is seen, for the whole video
        flat = visual.view(size, t, g * g, params.visual_dim)
        flat[torch.arange(size), :, region] += inside[..., None] * visual_means[labels][:, None, :]
        splits[split] = {"audio": audio, "visual": visual, "label": labels, "segments": segments}
    return splits


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)
