"""The autodiff anchor for `perturb bench` (issue 15): one training step by backprop in JAX, and
perturb's own reuse rows, measured side by side in one process run so the machine's load is shared.

Networks as `perturb bench` (src/bench.rs) and benches/numpy_bench.py build them: dense layers
x @ W + b, sigmoid hidden, identity output, MSE over every output of every sample, float32;
medium = 64-128-10, B=64; mnist = 784-128-10, B=256. Also cross-entropy rows (softmax over the
identity output, mean over the batch), the loss of issue 14's Fashion-MNIST runs.

JAX step: `jax.jit` of (grad of the loss, then params -= lr * grad), timed after compilation and
warm-up, `block_until_ready` on the result; the median of repeats. perturb rows: `perturb bench
--sizes medium,mnist --methods reuse --devices cpu --json`, run before and after the JAX rows
(to see the drift), its seconds per step reported. Usage:

    pip install "jax[cpu]"
    cargo build --release
    python3 benches/jax_bench.py [--perturb target/release/perturb]

`perturb bench --jax` runs `python3 benches/jax_bench.py --rows [--sizes medium,mnist]` instead: JSON
on stdout in benches/numpy_bench.py's row format (`jax-grad` rows for each size and each loss of
`--losses`, default both; a `jax-vmap-fd` row for medium: the naive forward difference as jit(vmap) over all
P + 1 nudged networks, which at mnist would need P + 1 copies of the parameters, about 41 GB), with
`evals_per_second` = (P + 1) * B per step like perturb's rows. Without an importable jax it prints
{"skipped": why} and exits 0, so that the bench prints a note and goes on.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

try:
    import jax
    import jax.flatten_util
    import jax.numpy as jnp
    import numpy as np
except ImportError as e:  # --rows reports it; the table mode needs jax
    jax = None
    MISSING = f"jax is not importable ({e}); pip install 'jax[cpu]'"

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


LOSSES = {"mse": mse, "cross-entropy": xent}


def jax_step_seconds(loss, widths, batch, repeats=REPEATS):
    params, x, y, labels = init(widths, batch)

    @jax.jit
    def step(p):
        g = jax.grad(loss)(p, x, y, labels)
        return jax.tree_util.tree_map(lambda a, d: a - LR * d, p, g)

    for _ in range(10):
        params = step(params)
    jax.block_until_ready(params)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        params = step(params)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def vmap_fd_seconds(widths, batch, eps=1e-4, max_seconds=20.0):
    """The naive forward difference as one jit(vmap) over the unnudged and all P nudged networks
    (flat parameters, network k nudged at k - 1), then the update; the median of a few steps."""
    params, x, y, labels = init(widths, batch)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    n = flat.size
    nudges = jnp.concatenate([jnp.zeros((1, n), jnp.float32), eps * jnp.eye(n, dtype=jnp.float32)])

    @jax.jit
    def step(f):
        losses = jax.vmap(lambda d: mse(unravel(f + d), x, y, labels))(nudges)
        return f - LR * (losses[1:] - losses[0]) / eps

    start = time.perf_counter()
    flat = jax.block_until_ready(step(flat))
    times = []
    while len(times) < 3 or (time.perf_counter() - start < max_seconds and len(times) < 20):
        t = time.perf_counter()
        flat = jax.block_until_ready(step(flat))
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(times)


def n_params(widths):
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def bench_rows(sizes, kinds, max_seconds):
    """The JSON rows of `perturb bench --jax`: a `jax.grad` row per size and loss in kinds, and the
    `vmap` forward difference at medium for MSE."""
    out = []
    for size in sizes:
        widths, batch = SIZES[size]
        p = n_params(widths)
        cases = [("jax-grad", kind, lambda f=LOSSES[kind]: jax_step_seconds(f, widths, batch)) for kind in kinds]
        if size == "medium" and "mse" in kinds:
            cases.append(("jax-vmap-fd", "mse", lambda: vmap_fd_seconds(widths, batch, max_seconds=max_seconds)))
        for method, loss, timed in cases:
            med, runs = timed()
            out.append({"size": size, "params": p, "samples": batch, "method": method, "loss": loss,
                        "median_seconds": med, "runs": runs,
                        "evals_per_second": (p + 1) * batch / med})
    return out


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
    ap.add_argument("--rows", action="store_true", help="JSON rows for `perturb bench --jax`")
    ap.add_argument("--sizes", default="medium,mnist")
    ap.add_argument("--losses", default="mse,cross-entropy", help="with --rows: mse, cross-entropy")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args()
    kinds = [k for k in args.losses.split(",") if k]
    for k in kinds:
        if k not in LOSSES:
            ap.error(f"unknown loss {k!r}")
    if args.rows:
        if jax is None:
            print(json.dumps({"skipped": MISSING}))
            return
        sizes = [s for s in args.sizes.split(",") if s in SIZES]
        print(json.dumps({"jax_version": jax.__version__, "platform": jax.devices()[0].platform,
                          "cpu_count": os.cpu_count(), "rows": bench_rows(sizes, kinds, args.max_seconds)}, indent=1))
        return
    if jax is None:
        raise SystemExit(MISSING)
    before = perturb_rows(args.perturb)
    jax_rows = {
        "medium mse": jax_step_seconds(mse, *SIZES["medium"])[0],
        "mnist mse": jax_step_seconds(mse, *SIZES["mnist"])[0],
        "mnist cross-entropy": jax_step_seconds(xent, *SIZES["mnist"])[0],
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
