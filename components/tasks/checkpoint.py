"""What a training checkpoint holds beyond the model (optimizer, schedule, epoch, method state), and which
checkpoint a restarted worker may continue from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from mmflow.engine import TrainSession

METHOD_STATE = "method_state.pt"
TRAINING_STATE = "training_state.pt"  # optimizer, schedule, epoch: what resuming needs beyond the weights


def config_digest(config: dict[str, Any]) -> str:
    """What a checkpoint must have been written for: the config without input paths (a run resumed on another
    machine reads the same shards from elsewhere)."""
    return hashlib.sha256(json.dumps({k: v for k, v in config.items() if k != "train"}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def restorable(session: TrainSession, config: dict[str, Any]) -> Path | None:
    """The checkpoint to continue from, if there is one and it was written for this very config."""
    folder = session.restored()
    if folder is None or not (folder / TRAINING_STATE).exists():
        return None
    saved = torch.load(folder / TRAINING_STATE, weights_only=True, map_location="cpu")
    if saved.get("config") != config_digest(config):
        session.history = []  # another configuration's run: start over
        return None
    return folder
