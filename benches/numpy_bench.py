"""Time the book's perturbation-training step in NumPy, so the Rust program can compare itself to NumPy.

One step (forward difference, as in "Modern Computer Vision with PyTorch", Chapter01/Back_propagation.ipynb,
see /work/shared/BOOK.md): L = loss(params); for every parameter k, nudge a copy of the ORIGINAL params by
eps = 1e-4 at k, L_k = loss(nudged), grad_k = (L_k - L) / eps; then params -= lr * grad (lr = 0.01) all at once.
Network: dense layers x @ W + b (W laid out [inputs][outputs]), sigmoid hidden, identity output, MSE over
every output of every sample. All arrays are float32.

Methods (one row per size and method; the median seconds of one step is reported):
  numpy-loop        the notebook's way: a Python loop over every parameter, each doing a full forward pass
                    with np.dot. To be fair but plain, it nudges one value in place and restores it; the
                    literal notebook instead deepcopies ALL weights for every nudge (slower still).
  numpy-vectorized  all P + 1 losses from batched forward passes, chunked over nudges (<= 512 MB). Nudged
                    weights are never materialised: nudging W_l[i, j] (or b_l[j]) changes pre-activation
                    column j of layer l by delta * a_{l-1}[:, i] (or delta), so that column is recomputed for
                    every nudge at once, its change enters the next layer as a rank-1 update, and any layers
                    after that run as batched matmuls over the nudges. Works for any depth.

Sizes: book = the book's 2-3-1 network and sample (B=1); small = 16-32-4, B=64; medium = 64-128-10, B=64;
mnist = 784-128-10, B=256. Random params are uniform in +-1/sqrt(fan_in) (default_rng(1)), data x, y
uniform in [-1, 1) (default_rng(2)).

Timing: one warm-up step, then steps until >= 1 s and >= 5 runs, but a row never spends more than
--max-seconds; a row whose single step is estimated to exceed that is emitted with "skipped". Timings are
sensitive to other load on the CPUs (multithreaded BLAS stalls when its threads are descheduled), so the
JSON records the load average before the run. Before timing, the two methods' gradients are compared on
book and small (key "agreement"; a warning goes to stderr if they differ by more than 1e-2 relative to the
largest gradient).

Run: python3 benches/numpy_bench.py [--sizes book,small,medium,mnist] [--methods numpy-loop,numpy-vectorized]
                                     [--max-seconds 20]       (prints JSON on stdout)
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

F32 = np.float32
EPS, LR = F32(1e-4), F32(0.01)
CHUNK_BYTES = 512 * 2**20
SIZES = {"small": ([16, 32, 4], 64), "medium": ([64, 128, 10], 64), "mnist": ([784, 128, 10], 256)}


def make_size(name):
    """Returns (params, x, y): params is [W1, b1, W2, b2, ...] as float32 arrays."""
    if name == "book":
        params = [np.array([[-0.0053, -0.5820, -0.2723], [0.3793, -0.5204, 0.1896]]),
                  np.array([-0.0140, 0.5607, -0.0628]), np.array([[0.1528], [-0.1745], [-0.1135]]),
                  np.array([-0.5516])]
        return [p.astype(F32) for p in params], np.ones((1, 2), F32), np.zeros((1, 1), F32)
    widths, batch = SIZES[name]
    rng = np.random.default_rng(1)
    params = []
    for n_in, n_out in zip(widths, widths[1:]):
        r = 1 / np.sqrt(n_in)
        params += [rng.uniform(-r, r, (n_in, n_out)).astype(F32), rng.uniform(-r, r, n_out).astype(F32)]
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (batch, widths[0])).astype(F32)
    y = rng.uniform(-1, 1, (batch, widths[-1])).astype(F32)
    return params, x, y


def sigmoid(z):
    return F32(1) / (F32(1) + np.exp(-z))


def loss(params, x, y):
    """Full forward pass with np.dot, like the notebook's feed_forward."""
    a = x
    for l in range(0, len(params), 2):
        z = np.dot(a, params[l]) + params[l + 1]
        a = sigmoid(z) if l + 2 < len(params) else z
    return np.mean(np.square(a - y))


# ---------------------------------------------------------------- numpy-loop
def grad_loop(params, x, y):
    base = loss(params, x, y)
    grads = []
    for p in params:
        flat, g = p.reshape(-1), np.empty(p.size, F32)  # flat is a view: nudging it nudges p
        for k in range(p.size):
            old = flat[k]
            flat[k] = old + EPS
            g[k] = (loss(params, x, y) - base) / EPS
            flat[k] = old
        grads.append(g.reshape(p.shape))
    return grads


# ---------------------------------------------------------------- numpy-vectorized
def nudged_losses(params, x, y):
    """All P + 1 losses (unnudged first, then params in order), computed in chunks of nudges."""
    Ws, bs, n = params[0::2], params[1::2], len(params) // 2
    acts, zs = [x], []
    for l in range(n):
        zs.append(acts[-1] @ Ws[l] + bs[l])
        acts.append(sigmoid(zs[-1]) if l + 1 < n else zs[-1])
    out = [np.array([np.mean(np.square(acts[-1] - y))])]
    batch, widest = x.shape[0], max(W.shape[1] for W in Ws)
    chunk = max(1, CHUNK_BYTES // (4 * 4 * batch * widest))  # ~4 live [N, B, width] float32 temporaries
    for l in range(n):
        W, b = Ws[l], bs[l]
        n_in, n_out = W.shape
        # nudge k of this layer: input column ins[k] (n_in = the bias's column of ones), unit js[k],
        # and the step actually applied in float32, fl32(w + eps) - w.
        ins = np.concatenate([np.repeat(np.arange(n_in), n_out), np.full(n_out, n_in)])
        js = np.concatenate([np.tile(np.arange(n_out), n_in), np.arange(n_out)])
        deltas = np.concatenate([((W + EPS) - W).ravel(), (b + EPS) - b])
        inputs_t = np.vstack([acts[l].T, np.ones((1, batch), F32)])  # [n_in + 1, B]
        for s in range(0, len(js), chunk):
            i, j, d = ins[s:s + chunk], js[s:s + chunk], deltas[s:s + chunk, None]
            zcol = zs[l].T[j] + d * inputs_t[i]                      # [N, B]: column j of layer l, nudged
            if l + 1 == n:                                           # output layer: replace one column
                a = np.broadcast_to(acts[-1], (len(j), *acts[-1].shape)).copy()
                a[np.arange(len(j)), :, j] = zcol
            else:                                                    # rank-1 change of the next layer
                change = sigmoid(zcol) - acts[l + 1].T[j]
                a = zs[l + 1] + change[:, :, None] * Ws[l + 1][j][:, None, :]
                for m in range(l + 1, n - 1):
                    a = sigmoid(a) @ Ws[m + 1] + bs[m + 1]
            out.append(np.mean(np.square(a - y), axis=(1, 2)))
    return np.concatenate(out)


def grad_vectorized(params, x, y):
    losses = nudged_losses(params, x, y)
    flat = (losses[1:] - losses[0]) / EPS
    grads, at = [], 0
    for l in range(0, len(params), 2):  # losses are ordered W (row-major) then b per layer
        W, b = params[l], params[l + 1]
        grads += [flat[at:at + W.size].reshape(W.shape), flat[at + W.size:at + W.size + b.size]]
        at += W.size + b.size
    return grads


# ---------------------------------------------------------------- timing
METHODS = {"numpy-loop": grad_loop, "numpy-vectorized": grad_vectorized}


def step(method, params, x, y):
    for p, g in zip(params, METHODS[method](params, x, y)):
        p -= LR * g


def estimate_loop(params, x, y):
    """Seconds for one numpy-loop step: (P + 1) times the median time of one forward pass."""
    for _ in range(3):
        loss(params, x, y)
    times, start = [], time.perf_counter()
    while len(times) < 20 or time.perf_counter() - start < 0.05:
        t = time.perf_counter()
        loss(params, x, y)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * (sum(p.size for p in params) + 1)


def time_row(name, method, max_seconds):
    params, x, y = make_size(name)
    n_params, batch = sum(p.size for p in params), x.shape[0]
    row = {"size": name, "params": int(n_params), "samples": int(batch), "method": method}
    if method == "numpy-loop":
        est = estimate_loop(params, x, y)
        if 2 * est > max_seconds:  # warm-up plus one timed step would not fit
            row["skipped"] = (f"estimated {est:.1f} s per step ({n_params + 1} forward passes), "
                              f"over --max-seconds {max_seconds:g}")
            return row
    start = time.perf_counter()
    step(method, params, x, y)  # warm-up
    times = []
    while len(times) < 5 or sum(times) < 1.0:
        last = times[-1] if times else time.perf_counter() - start
        if time.perf_counter() - start + last > max_seconds:
            break
        t = time.perf_counter()
        step(method, params, x, y)
        times.append(time.perf_counter() - t)
    if not times:  # even the warm-up ran past the budget: report it as the only run
        times, row["note"] = [time.perf_counter() - start], "warm-up step only"
    med = float(np.median(times))
    row.update(median_seconds=med, runs=len(times), evals_per_second=(n_params + 1) * batch / med)
    return row


def agreement(name):
    params, x, y = make_size(name)
    g_loop = np.concatenate([g.ravel() for g in grad_loop(params, x, y)])
    g_vec = np.concatenate([g.ravel() for g in grad_vectorized(params, x, y)])
    diff, scale = float(np.max(np.abs(g_vec - g_loop))), float(np.max(np.abs(g_loop)))
    rel = diff / max(scale, 1e-12)
    if rel >= 1e-2:
        print(f"WARNING: {name}: numpy-vectorized and numpy-loop gradients differ: max |diff| {diff:.3g}, "
              f"{rel:.3g} of max |grad| {scale:.3g}", file=sys.stderr)
    return {"size": name, "max_abs_diff": diff, "max_abs_grad": scale, "relative": rel, "ok": rel < 1e-2}


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.platform()}, {cpu}"


def blas():
    try:
        from threadpoolctl import threadpool_info
        return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
                         for i in threadpool_info())
    except ImportError:
        pass
    try:
        b = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version')}"
    except Exception:
        return None


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="book,small,medium,mnist")
    ap.add_argument("--methods", default="numpy-loop,numpy-vectorized")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args()
    sizes, methods = args.sizes.split(","), args.methods.split(",")
    for s in sizes:
        if s != "book" and s not in SIZES:
            ap.error(f"unknown size {s!r}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}")
    result = {"numpy_version": np.__version__, "machine": machine(), "blas": blas(),
              "cpu_count": os.cpu_count(), "load_average_before": list(os.getloadavg()),
              "agreement": [agreement(s) for s in ("book", "small")],
              "rows": [time_row(s, m, args.max_seconds) for s in sizes for m in methods]}
    print(json.dumps(result, indent=1))
