"""The conventional script, kept as a whole-process baseline for ``mnistlab bench``.

    python -m mnistlab.studies.baseline --dataset fashion-mnist --epochs 1

It trains the way the usual PyTorch MNIST example does, start to finish in one process: a
``Dataset`` that makes a PIL image and a normalised tensor per item, a ``DataLoader`` with a
worker process, the example's network (conv32-conv64-pool-dropout-fc128-dropout-fc10, log
softmax), Adadelta at lr 1.0 stepped down by 0.7 each epoch, batch 64, the loss read back
every 10 batches to log it, and a test pass of batch 1000 after each epoch. Only the files
are read by mnistlab's loader (torchvision does not install beside the CPU torch wheel);
that costs well under a second and is the same for both sides of the comparison.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout1(torch.flatten(x, 1))
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def train_epoch(model, loader, optimizer, epoch: int, limit: int, log) -> None:
    model.train()
    for batch, (data, target) in enumerate(loader):
        if limit and batch >= limit:
            break
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch % 10 == 0:
            log(f"epoch {epoch} [{batch * len(data)}/{len(loader.dataset)}] loss {loss.item():.4f}")


def test(model, loader) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            out = model(data)
            loss += F.nll_loss(out, target, reduction="sum").item()
            correct += (out.argmax(1) == target).sum().item()
    n = len(loader.dataset)
    return loss / n, correct / n


def main(argv: list[str] | None = None) -> int:
    from ..data.sources import load_dataset
    from .bench import TutorialDataset  # per item: PIL image, ToTensor, Normalize

    p = argparse.ArgumentParser(prog="python -m mnistlab.studies.baseline", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit-batches", type=int, default=0, help="stop each epoch after this many batches")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    ds = load_dataset(args.dataset)
    train = torch.utils.data.DataLoader(TutorialDataset(ds.train), batch_size=64, shuffle=True, num_workers=1)
    held = torch.utils.data.DataLoader(TutorialDataset(ds.test), batch_size=1000, num_workers=1)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        train_epoch(model, train, optimizer, epoch, args.limit_batches, log)
        loss, acc = test(model, held)
        log(f"test: average loss {loss:.4f}, accuracy {acc:.2%}")
        scheduler.step()
    print(f"test_acc {acc:.4f} wall_s {time.perf_counter() - t0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
