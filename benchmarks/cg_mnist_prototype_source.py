"""Where the official PMR code's CG-MNIST accuracy comes from: PMR's prototypes from the test split or from training.

    python benchmarks/cg_mnist_prototype_source.py [--protos test train val] [--seeds 0] [--epochs 100]

The official code's CG-MNIST protocol as a plain loop on mmflow's pieces (the CG-MNIST build, the `cnn`
encoder, PMR's loss with the binary rule): SGD lr 1e-3 (x0.1 at epoch 70), momentum 0.9, weight decay 1e-4,
batch 64, alpha 1, window 0-60, prototypes after every epoch from one random batch of 64 with momentum 0.2 --
computed, as the official code does for CG-MNIST, on the split `--protos` names (`test` is the official code's
choice; the paper's text says training data). `--baseline` adds naive concat trained on train only and on
train + validation (the 500 validation pairs used plainly as training data). Prints test accuracy at the end
of the window and at the end of training, one line per run; nothing is chosen on test.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmflow.components.balance.methods.pmr import pmr_loss
from mmflow.components.data.cg_mnist import CGMNISTParams
from mmflow.components.data.colored_digits import build_cg_mnist
from mmflow.components.models.encoders import ConvEncoder

BATCH, PROTO_MOMENTUM = 64, 0.2


class GrayColor(nn.Module):
    """Two `cnn` encoders and a concat head, as the official CGClassifier."""

    def __init__(self) -> None:
        super().__init__()
        self.gray, self.color = ConvEncoder([1, 28, 28]), ConvEncoder([3, 28, 28])
        self.head = nn.Linear(1024, 10)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, gray: torch.Tensor, color: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z = {"gray": self.gray(gray), "color": self.color(color)}
        return z, self.head(torch.cat([z["gray"], z["color"]], 1))


def prototypes(model: GrayColor, split: dict[str, torch.Tensor], old: dict | None) -> dict[str, torch.Tensor]:
    """Class means over one random batch of `split`, blended with the previous ones (the official update)."""
    rows = torch.randperm(len(split["label"]))[:BATCH]
    labels = split["label"][rows]
    model.eval()
    with torch.no_grad():
        z, _ = model(split["gray"][rows], split["color"][rows])
    model.train()
    counts = torch.bincount(labels, minlength=10).clamp(min=1)[:, None].float()
    fresh = {m: torch.zeros(10, v.shape[1]).index_add_(0, labels, v) / counts for m, v in z.items()}
    return fresh if old is None else {m: (1 - PROTO_MOMENTUM) * fresh[m] + PROTO_MOMENTUM * old[m] for m in z}


def accuracy(model: GrayColor, split: dict[str, torch.Tensor]) -> float:
    """Fused test accuracy in eval mode."""
    model.eval()
    with torch.no_grad():
        _, logits = model(split["gray"], split["color"])
    model.train()
    return (logits.argmax(1) == split["label"]).float().mean().item()


def run(data: dict, method: str, protos: str, train_splits: tuple[str, ...], seed: int, epochs: int,
        window_end: int) -> tuple[float, float]:
    """Fused test accuracy at the end of the window and at the end of training."""
    torch.manual_seed(seed)
    model = GrayColor()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 70, 0.1)
    train = {k: torch.cat([data[s][k] for s in train_splits]) for k in ("gray", "color", "label")}
    centers = prototypes(model, data[protos], None)
    at_window_end = float("nan")
    for epoch in range(epochs):
        for rows in torch.randperm(len(train["label"])).split(BATCH):
            labels = train["label"][rows]
            z, logits = model(train["gray"][rows], train["color"][rows])
            if method == "pmr" and epoch <= window_end:
                loss, _ = pmr_loss(logits, z, labels, centers, alpha=1.0, mu=0.0, coefficient="binary")
            else:
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        centers = prototypes(model, data[protos], centers)
        if epoch == window_end:
            at_window_end = accuracy(model, data["test"])
    return at_window_end, accuracy(model, data["test"])


def normalized(split: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official normalization: gray with MNIST's mean and std, color with CIFAR-10's."""
    mean = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
    std = torch.tensor([0.2023, 0.1994, 0.2010])[:, None, None]
    return {"gray": (split["gray"].float() / 255 - 0.1307) / 0.3081,
            "color": (split["color"].float() / 255 - mean) / std, "label": split["label"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protos", nargs="+", default=["test", "train"], choices=["test", "train", "val"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--window-end", type=int, default=60)
    parser.add_argument("--baseline", action="store_true", help="also naive on train, and on train + validation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [("pmr", p, ("train",)) for p in args.protos]
    if args.baseline:
        runs += [("naive", "train", ("train",)), ("naive", "train", ("train", "val"))]
    for seed in args.seeds:
        data = {name: normalized(split) for name, split in build_cg_mnist(CGMNISTParams(val_size=500), seed).items()}
        for method, protos, train_splits in runs:
            started = time.perf_counter()
            at_end_of_window, final = run(data, method, protos, train_splits, seed, args.epochs, args.window_end)
            what = f"pmr, prototypes from {protos}" if method == "pmr" else f"naive on {' + '.join(train_splits)}"
            print(f"seed {seed} | {what} | test accuracy at epoch {args.window_end + 1}: {at_end_of_window:.3f} | "
                  f"at epoch {args.epochs}: {final:.3f} | {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
