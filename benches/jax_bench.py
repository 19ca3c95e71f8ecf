"""The autodiff anchor for `perturb bench` (issue 15): one training step by backprop in JAX, and
perturb's own reuse rows, measured side by side in one process run so the machine's load is shared.

Networks as `perturb bench` (src/bench.rs) and benches/numpy_bench.py build them: dense layers
x @ W + b, sigmoid hidden, identity output, MSE over every output of every sample, float32;
medium = 64-128-10, B=64; mnist = 784-128-10, B=256. Also a cross-entropy row for mnist (softmax
over the identity output, mean over the batch), the loss of issue 14's Fashion-MNIST runs.

JAX step: `jax.jit` of (grad of the loss, then params -= lr * grad), timed after compilation and
warm-up, `block_until_ready` on the result; the median of repeats. perturb rows: `perturb bench
--sizes medium,mnist --methods reuse --devices cpu --json`, run before and after the JAX rows
(to see the drift), its seconds per step reported. Usage:

    pip install "jax[cpu]"
    cargo build --release
    python3 benches/jax_bench.py [--perturb target/release/perturb]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

SIZES = {"medium": ([64, 128, 10], 64), "mnist": ([784, 128, 10], 256)}
REPEATS = 200
LR = 0.01


def init(widths, batch, seed=1):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        params.append(
            (
                jnp.asarray(rng.uniform(-bound, bound, (fan_in, fan_out)), jnp.float32),
                jnp.asarray(rng.uniform(-bound, bound, fan_out), jnp.float32),
            )
        )
    data = np.random.default_rng(2)
    x = jnp.asarray(data.uniform(-1, 1, (batch, widths[0])), jnp.float32)
    y = jnp.asarray(data.uniform(-1, 1, (batch, widths[-1])), jnp.float32)
    labels = jnp.asarray(data.integers(0, widths[-1], batch), jnp.int32)
    return params, x, y, labels


def forward(params, x):
    for w, b in params[:-1]:
        x = jax.nn.sigmoid(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def mse(params, x, y, _labels):
    return jnp.mean((forward(params, x) - y) ** 2)


def xent(params, x, _y, labels):
    z = forward(params, x)
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, labels[:, None], 1)[:, 0])


def jax_step_seconds(loss, widths, batch):
    params, x, y, labels = init(widths, batch)

    @jax.jit
    def step(p):
        g = jax.grad(loss)(p, x, y, labels)
        return jax.tree_util.tree_map(lambda a, d: a - LR * d, p, g)

    for _ in range(10):
        params = step(params)
    jax.block_until_ready(params)
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        params = step(params)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def perturb_rows(binary):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.json")
        subprocess.run(
            [binary, "bench", "--sizes", "medium,mnist", "--methods", "reuse", "--devices", "cpu",
             "--json", out],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(out) as f:
            rows = json.load(f)
    return {r["size"]: r["seconds"] for r in rows}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--perturb", default="target/release/perturb")
    args = ap.parse_args()
    before = perturb_rows(args.perturb)
    jax_rows = {
        "medium mse": jax_step_seconds(mse, *SIZES["medium"]),
        "mnist mse": jax_step_seconds(mse, *SIZES["mnist"]),
        "mnist cross-entropy": jax_step_seconds(xent, *SIZES["mnist"]),
    }
    after = perturb_rows(args.perturb)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs")
    print("| row | seconds per step |")
    print("|---|---|")
    for name, s in jax_rows.items():
        print(f"| JAX jax.grad + sgd, {name} | {s * 1e3:.3f} ms |")
    for size in SIZES:
        for label, rows in (("before JAX", before), ("after JAX", after)):
            print(f"| perturb reuse cpu, {size} mse ({label}) | {rows[size] * 1e3:.3f} ms |")


if __name__ == "__main__":
    main()
