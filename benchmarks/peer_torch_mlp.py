"""PyTorch (CPU) peer for the MLP: 784-512-10 with ReLU, SGD(0.1, momentum 0.9), batch 128,
data in memory as tensors; the loop of ../shared/bench/peer_torch.py, for the MLP.

    /tmp/venv-torch/bin/python benchmarks/peer_torch_mlp.py jaxdigits/datasets/mnist 3

Result, 2-core Intel Xeon (AVX-512), PyTorch 2.13, 2026-12-01: 1.28 s per second epoch
(46,800 images/s; 1.22-1.37 s over 3 rounds of benchmarks/compare_speed.py, which runs it);
0.88 s on the 2-core AMD EPYC, quiet, 2026-11-22. BUILD_NOTES.md.

Prints, per epoch, seconds, images per second and test accuracy in peer_torch.py's format
("epoch N seconds S images_per_s R test_acc A"), which compare_speed reads. It runs in
PyTorch's own environment, which has only torch and numpy: so no absl flags and no jaxdigits,
two positional arguments as peer_torch.py takes them, and torch imported only when it runs.
"""

import gzip
import os
import struct
import sys
import time

import numpy as np


def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    ndim = struct.unpack(">I", data[:4])[0] & 0xFF
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(root, name):
    for suffix in ("", ".gz"):
        if os.path.exists(os.path.join(root, name + suffix)):
            return read_idx(os.path.join(root, name + suffix))
    raise SystemExit(f"{name} not found in {root}")


def main(root, epochs):
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    xtr, ytr = load(root, "train-images-idx3-ubyte"), load(root, "train-labels-idx1-ubyte")
    xte, yte = load(root, "t10k-images-idx3-ubyte"), load(root, "t10k-labels-idx1-ubyte")
    xtr = torch.from_numpy((xtr.reshape(len(xtr), -1) / 255.0).astype(np.float32))
    xte = torch.from_numpy((xte.reshape(len(xte), -1) / 255.0).astype(np.float32))
    ytr, yte = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    bs = 128
    for epoch in range(epochs):
        model.train()
        t = time.perf_counter()
        perm = torch.randperm(len(xtr))
        for i in range(len(xtr) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        dt = time.perf_counter() - t
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1} seconds {dt:.2f} images_per_s {len(xtr) / dt:.0f} "
              f"test_acc {acc:.4f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} MNIST_DIR EPOCHS")
    main(sys.argv[1], int(sys.argv[2]))
