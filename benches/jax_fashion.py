"""Issue 15's real-data anchor: one Fashion-MNIST epoch by backprop in JAX beside one epoch of
perturb's reuse method on the CPU, in one script run (so the machine's load is shared).

Both train the same network and schedule: 784-128-10, relu hidden, identity logits, softmax
cross-entropy (mean over the batch), plain sgd with lr 0.1, mini-batches of 32 over the 60,000
training images (1,875 steps, pixels scaled to [0, 1] as perturb's IDX loader scales them), float32.
JAX is timed two ways: a Python loop over a `jax.jit` step (how the step is usually written), and
the whole epoch as one `jax.lax.scan` inside `jax.jit` (JAX's best case: no Python per step). Each
is timed for its first epoch (compilation included) and a second, steady one; the test accuracy
after the steady epoch is printed as a sanity check. perturb runs `perturb train --device cpu
--epochs 1` with the same settings, before and after the JAX rows, and its own `trained in` seconds
are reported with the whole process time. Usage:

    apt-get install dataset-fashion-mnist; pip install "jax[cpu]"; cargo build --release
    python3 benches/jax_fashion.py [--perturb target/release/perturb] [--data DIR]
"""

import argparse
import gzip
import os
import re
import struct
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

BATCH = 32
LR = 0.1
WIDTHS = [784, 128, 10]


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir, split):
    x = idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    y = idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    return (x.reshape(len(x), -1).astype(np.float32) / np.float32(255.0)), y.astype(np.int32)


def init(seed=1):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        params.append((jnp.asarray(w), jnp.zeros(fan_out, jnp.float32)))
    return params


def logits(params, x):
    (w1, b1), (w2, b2) = params
    return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def loss(params, x, y):
    z = logits(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))


def sgd(params, x, y):
    g = jax.grad(loss)(params, x, y)
    return jax.tree_util.tree_map(lambda p, d: p - LR * d, params, g)


def python_loop_epoch(step, params, xb, yb):
    for i in range(len(xb)):
        params = step(params, xb[i], yb[i])
    return jax.block_until_ready(params)


def timed(f, *args):
    t = time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t


def accuracy(params, x, y):
    return float(jnp.mean(jnp.argmax(logits(params, x), axis=1) == y))


def perturb_epoch(binary):
    cmd = [binary, "train", "--data", "fashion-mnist", "--layers", "784,128,10",
           "--activations", "relu,identity", "--loss", "cross-entropy", "--batch-size", str(BATCH),
           "--epochs", "1", "--lr", str(LR), "--method", "reuse", "--device", "cpu"]
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    whole = time.perf_counter() - t
    trained = float(re.search(r"trained in ([0-9.]+) s", out).group(1))
    return trained, whole


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--perturb", default="target/release/perturb")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    x, y = load(args.data, "train")
    xt, yt = load(args.data, "t10k")
    steps = len(x) // BATCH
    order = np.random.default_rng(3).permutation(len(x))[: steps * BATCH]
    xb = jnp.asarray(x[order].reshape(steps, BATCH, -1))
    yb = jnp.asarray(y[order].reshape(steps, BATCH))
    xt, yt = jnp.asarray(xt), jnp.asarray(yt)

    before = perturb_epoch(args.perturb)
    step = jax.jit(sgd)
    p, first_loop = timed(python_loop_epoch, step, init(), xb, yb)
    p, steady_loop = timed(python_loop_epoch, step, p, xb, yb)
    acc_loop = accuracy(p, xt, yt)

    @jax.jit
    def scan_epoch(params, xb, yb):
        return jax.lax.scan(lambda q, b: (sgd(q, *b), None), params, (xb, yb))[0]

    run = lambda q: jax.block_until_ready(scan_epoch(q, xb, yb))
    p, first_scan = timed(run, init())
    p, steady_scan = timed(run, p)
    acc_scan = accuracy(p, xt, yt)
    after = perturb_epoch(args.perturb)

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs; "
          f"{steps} steps of {BATCH}")
    print("| row | first epoch | steady epoch | test accuracy after 2 epochs |")
    print("|---|---|---|---|")
    print(f"| JAX jit step, Python loop | {first_loop:.3f} s | {steady_loop:.3f} s | {acc_loop:.4f} |")
    print(f"| JAX jit(lax.scan) epoch | {first_scan:.3f} s | {steady_scan:.3f} s | {acc_scan:.4f} |")
    for label, (trained, whole) in (("before JAX", before), ("after JAX", after)):
        print(f"| perturb reuse cpu ({label}): trained in / whole process | {trained:.3f} s | "
              f"{whole:.3f} s | |")


if __name__ == "__main__":
    main()
