#!/usr/bin/env python3
"""Independent float64 NumPy transcription of perturb's mini-batch cross-entropy training
(issue 14), written from the documented rules, to produce the fixture tests/xent_numpy.rs holds
`perturb --precision f64` CPU training to.

    python3 benches/numpy_xent.py > tests/fixtures/xent_numpy.json

Rules transcribed:
  model     dense layers, W_l stored [inputs][outputs] row-major then b_l, layer after layer;
            tanh hidden layer, identity output layer (the logits z); parameters stored in float32
  loss      softmax cross-entropy, natural log, mean over the batch's samples:
            L = mean_s(logsumexp(z_s) - z_s[y_s]), max subtracted; float64 throughout
  batches   an epoch visits every sample once in batches of B, the last holding the remainder;
            order: Fisher-Yates over Philox4x32-10 words of (seed, epoch) (epoch_order of
            optim_reference.py, itself transcribed from src/batches.rs)
  estimator forward differences, nominal step: the nudged parameter is fl32(w_k + fl32(eps)), the
            gradient (L(nudged) - L(w)) / eps, and 0 where the float32 nudge vanishes
  optimiser sgd, momentum, adam: trajectory() of optim_reference.py (float64 arithmetic, float32
            state and parameters), one step per batch
  report    losses: per epoch the mean of its steps' losses (each before its update)
The initial parameters come from NumPy's seeded generator and are written into the fixture; the
Rust test starts from them (the model's own seeded init is not transcribed).
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from optim_reference import epoch_order, trajectory  # noqa: E402

F32, F64 = np.float32, np.float64

WIDTHS = [3, 5, 3]
SAMPLES, BATCH, EPOCHS, LR, EPS, SEED = 20, 6, 3, 0.1, 1e-3, 7
OPTIMIZERS = [
    {"name": "sgd"},
    {"name": "momentum", "momentum": 0.9},
    {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
]


def unpack(p):
    """(W, b) per layer from the flat float32 vector, as float64."""
    out, o = [], 0
    for i, u in zip(WIDTHS[:-1], WIDTHS[1:]):
        w = p[o:o + i * u].astype(F64).reshape(i, u)
        o += i * u
        b = p[o:o + u].astype(F64)
        o += u
        out.append((w, b))
    return out


def loss(p, x, labels):
    a = x.astype(F64)
    layers = unpack(p)
    for l, (w, b) in enumerate(layers):
        a = a @ w + b
        if l + 1 < len(layers):
            a = np.tanh(a)
    m = a.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(a - m).sum(axis=1))
    return float(np.mean(lse - a[np.arange(len(labels)), labels]))


def gradient(p, x, labels):
    base = loss(p, x, labels)
    g = np.zeros(len(p), dtype=F64)
    for k in range(len(p)):
        q = p.copy()
        q[k] = F32(p[k] + F32(EPS))
        if q[k] != p[k]:
            g[k] = (loss(q, x, labels) - base) / EPS
    return base, g


def train(opt, p0, x, labels):
    p = p0.copy()
    losses, steps = [], []
    # trajectory() runs whole gradient lists; keep its state by replaying all gradients so far.
    grads = []
    for epoch in range(EPOCHS):
        order = epoch_order(SAMPLES, SEED, epoch)
        epoch_losses = []
        for start in range(0, SAMPLES, BATCH):
            rows = order[start:start + BATCH]
            base, g = gradient(p, x[rows], labels[rows])
            epoch_losses.append(base)
            grads.append([float(v) for v in g])
            p = np.array(trajectory(opt, p0, grads, LR, F64)[-1], dtype=F32)
        steps += epoch_losses
        losses.append(sum(epoch_losses) / len(epoch_losses))
    return losses, steps, p


def main():
    rng = np.random.default_rng(2024)
    n = sum(i * u + u for i, u in zip(WIDTHS[:-1], WIDTHS[1:]))
    p0 = rng.uniform(-0.8, 0.8, n).astype(F32)
    x = rng.uniform(-1, 1, (SAMPLES, WIDTHS[0])).astype(F32)
    labels = rng.integers(0, WIDTHS[-1], SAMPLES)
    runs = []
    for opt in OPTIMIZERS:
        losses, steps, p = train(opt, p0, x, labels)
        runs.append({
            "optimizer": opt,
            "losses": losses,
            "step_losses": steps,
            "params": [float(v) for v in p],
        })
    case = {
        "widths": WIDTHS,
        "activations": ["tanh", "identity"],
        "samples": SAMPLES, "batch_size": BATCH, "epochs": EPOCHS,
        "lr": LR, "eps": EPS, "seed": SEED,
        "params": [float(v) for v in p0],
        "x": [[float(v) for v in row] for row in x],
        "labels": [int(v) for v in labels],
        "runs": runs,
    }
    json.dump(case, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
