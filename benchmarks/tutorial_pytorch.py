"""The classic CIFAR-10 tutorial in PyTorch: the reference for mlxvision's ``cifar10_tutorial``.

    python benchmarks/tutorial_pytorch.py --data DATA/cifar10-jpeg [--epochs 10] [--crop rrc|pad]

Reads ``train.tar`` and ``test.tar`` (``<split>/<class>/<file>.jpg``) extracted next to each
other, or the folders ``train/`` and ``test/``. Same network (conv 3→64, conv 64→128, max-pools,
fc 1024, fc 10), same augmentation (``RandomResizedCrop(32)`` or pad-crop, flip,
``Normalize(0.5, 0.5)``), Adam 1e-3, batch 64. Needs torch and torchvision.
"""

from __future__ import annotations

import argparse
import tarfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 8 * 8, 1024)
        self.fc2 = nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _folder(data: Path, split: str) -> Path:
    if (data / split).is_dir():
        return data / split
    target = data / "extracted"
    if not (target / split).is_dir():
        with tarfile.open(data / f"{split}.tar") as tar:
            tar.extractall(target, filter="data")
    return target / split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--crop", choices=["rrc", "pad"], default="rrc")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    normalize = [T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    crop = T.RandomResizedCrop(32) if args.crop == "rrc" else T.RandomCrop(32, padding=4)
    data = Path(args.data)
    train = torchvision.datasets.ImageFolder(
        _folder(data, "train"), T.Compose([crop, T.RandomHorizontalFlip(), *normalize])
    )
    test = torchvision.datasets.ImageFolder(_folder(data, "test"), T.Compose(normalize))
    loader = torch.utils.data.DataLoader(
        train, 64, shuffle=True, num_workers=args.workers, persistent_workers=True
    )
    test_loader = torch.utils.data.DataLoader(test, 1000, num_workers=args.workers)
    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    began = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            total += len(labels)
        model.eval()
        hits = 0
        with torch.no_grad():
            for images, labels in test_loader:
                hits += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
        print(
            f"Epoch [{epoch}/{args.epochs}], Loss: {loss_sum / total:.4f}, "
            f"Accuracy: {100 * correct / total:.2f}%, Test Accuracy: {100 * hits / len(test):.2f}%",
            flush=True,
        )
    print(f"PyTorch {torch.__version__} on {device}: {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
