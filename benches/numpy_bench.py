"""Time the book's perturbation-training step in NumPy, so the Rust program can compare itself to NumPy.

One step (forward difference, as in "Modern Computer Vision with PyTorch", Chapter01/Back_propagation.ipynb,
see /work/shared/BOOK.md): L = loss(params); for every parameter k, nudge a copy of the ORIGINAL params by
eps = 1e-4 at k, L_k = loss(nudged), grad_k = (L_k - L) / eps; then params -= lr * grad (lr = 0.01) all at once.
Network: dense layers x @ W + b (W laid out [inputs][outputs]), sigmoid hidden, identity output, MSE over
every output of every sample (--losses cross-entropy: softmax cross-entropy of the identity output's logits
against one-hot rows of seeded labels, mean over samples; not for book, whose one output makes it 0). All arrays
are float32.

Methods (one row per size and method; the median seconds of one step is reported):
  numpy-loop        the notebook's way: a Python loop over every parameter, each doing a full forward pass
                    with np.dot. To be fair but plain, it nudges one value in place and restores it; the
                    literal notebook instead deepcopies ALL weights for every nudge (slower still).
  numpy-vectorized  the same naive algorithm, vectorised: the P + 1 networks (unnudged, then one per nudged
                    parameter) run as batched forward passes, in chunks of C networks (~8 MB per chunk,
                    measured faster here than bigger chunks; at least one network per chunk). Each
                    network does the FULL forward pass over all B samples, every layer included: the nudged
                    parameter array is materialised as a (C, in, out) or (C, out) stack (one nudged copy per
                    network) and used via batched matmul, (C, B, in) @ (C, in, out); the other layers share
                    their weights, so (C, B, in) is multiplied as one (C * B, in) @ (in, out) matmul. Nothing
                    is reused between networks beyond what a plain batched forward pass shares.
  numpy-reuse       a cheaper algorithm (the reuse idea, in NumPy), NOT the naive one: all P + 1 losses,
                    chunked over nudges (<= 512 MB), without materialising nudged weights. Nudging W_l[i, j]
                    (or b_l[j]) changes pre-activation column j of layer l by delta * a_{l-1}[:, i] (or
                    delta), so that column is recomputed for every nudge at once, its change enters the next
                    layer as a rank-1 update, and any layers after that run as batched matmuls over the
                    nudges. Layers before l are not recomputed. Works for any depth.

Sizes: book = the book's 2-3-1 network and sample (B=1); small = 16-32-4, B=64; medium = 64-128-10, B=64;
mnist = 784-128-10, B=256. Random params are uniform in +-1/sqrt(fan_in) (default_rng(1)), data x, y
uniform in [-1, 1) (default_rng(2)).

Timing: one warm-up step, then steps until >= 1 s and >= 5 runs, but a row never spends more than
--max-seconds; a row whose single step is estimated to exceed that is emitted with "skipped". Timings are
sensitive to other load on the CPUs (multithreaded BLAS stalls when its threads are descheduled), so the
JSON records the load average before the run. numpy-loop and numpy-vectorized estimate one step first
(from one forward pass, resp. ~0.1 s of timed chunks per parameter array); numpy-reuse is cheap and just runs.
Before timing, numpy-vectorized's and numpy-reuse's gradients are each compared with numpy-loop's on book
and small (key "agreement"; a warning goes to stderr if they differ by more than 1e-2 relative to the
largest gradient and by more than 4 steps of the forward difference's resolution, one ULP of the loss over
eps: cross-entropy's gradients are small beside its loss).

Run: python3 benches/numpy_bench.py [--sizes book,small,medium,mnist]
         [--methods numpy-loop,numpy-vectorized,numpy-reuse] [--losses mse,cross-entropy]
         [--max-seconds 20]                                                            (prints JSON on stdout)
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
CHUNK_BYTES = 512 * 2**20          # numpy-reuse's chunk budget
FULL_CHUNK_BYTES = 8 * 2**20       # numpy-vectorized's: measured faster here than larger chunks (cache)
SIZES = {"small": ([16, 32, 4], 64), "medium": ([64, 128, 10], 64), "mnist": ([784, 128, 10], 256)}


def make_size(name, kind="mse"):
    """Returns (params, x, y): params is [W1, b1, W2, b2, ...] as float32 arrays; for cross-entropy y
    holds one-hot rows of seeded class labels."""
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
    if kind == "cross-entropy":
        y = np.eye(widths[-1], dtype=F32)[rng.integers(0, widths[-1], batch)]
    return params, x, y


def mean_loss(a, y, kind):
    """The loss of outputs a (shape (..., B, outputs)) against y, one value per leading index: MSE over
    every output and sample, or softmax cross-entropy (max subtracted) against y's rows, mean over samples."""
    if kind == "mse":
        return np.mean(np.square(a - y), axis=(-2, -1))
    m = np.max(a, axis=-1, keepdims=True)
    lse = np.log(np.sum(np.exp(a - m), axis=-1)) + m[..., 0]
    return np.mean(lse - np.sum(y * a, axis=-1), axis=-1)


def sigmoid(z):
    return F32(1) / (F32(1) + np.exp(-z))


def sigmoid_inplace(z):
    """sigmoid(z) by the same float32 operations, written into z: saves big temporaries (numpy-vectorized)."""
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += F32(1)
    return np.reciprocal(z, out=z)


def loss(params, x, y, kind="mse"):
    """Full forward pass with np.dot, like the notebook's feed_forward."""
    a = x
    for l in range(0, len(params), 2):
        z = np.dot(a, params[l]) + params[l + 1]
        a = sigmoid(z) if l + 2 < len(params) else z
    return mean_loss(a, y, kind)


# ---------------------------------------------------------------- numpy-loop
def grad_loop(params, x, y, kind="mse"):
    base = loss(params, x, y, kind)
    grads = []
    for p in params:
        flat, g = p.reshape(-1), np.empty(p.size, F32)  # flat is a view: nudging it nudges p
        for k in range(p.size):
            old = flat[k]
            flat[k] = old + EPS
            g[k] = (loss(params, x, y, kind) - base) / EPS
            flat[k] = old
        grads.append(g.reshape(p.shape))
    return grads


# ---------------------------------------------------------------- numpy-vectorized
def batched_losses(params, x, y, c, nudged=None, kind="mse"):
    """Losses of c networks, each by a full forward pass over all B samples, run as batched matmuls.

    nudged = (k, stack): every network's params[k] is its own slice of stack, shape (c, *params[k].shape);
    all other params are the same in every network. Returns c losses, shape (c,)."""
    k_nudged, stack = nudged if nudged else (None, None)
    batch, n = x.shape[0], len(params) // 2
    a = np.broadcast_to(x, (c, *x.shape))  # (c, B, in): every network gets the same samples
    for l in range(n):
        W, b = params[2 * l], params[2 * l + 1]
        if k_nudged == 2 * l:
            z = np.matmul(a, stack)                                   # (c, B, in) @ (c, in, out)
        else:
            z = (a.reshape(c * batch, -1) @ W).reshape(c, batch, -1)  # shared W: one big matmul
        z += stack[:, None, :] if k_nudged == 2 * l + 1 else b
        a = sigmoid_inplace(z) if l + 1 < n else z
    return mean_loss(a, y, kind)


def full_chunks(params, batch):
    """(k, start, stop): chunks of nudges, never crossing a parameter array, each <= ~FULL_CHUNK_BYTES
    (but at least one network)."""
    widest = max([params[0].shape[0]] + [W.shape[1] for W in params[0::2]])
    for k, p in enumerate(params):
        per_net = 4 * (p.size + 4 * batch * widest)  # its nudged copy of p + ~4 (B, width) temporaries
        chunk = max(1, FULL_CHUNK_BYTES // per_net)
        for start in range(0, p.size, chunk):
            yield k, start, min(start + chunk, p.size)


def chunk_losses(params, x, y, k, start, stop, kind="mse"):
    """Losses of the networks with flat element start..stop-1 of params[k] nudged (one each)."""
    p, c = params[k], stop - start
    stack = np.repeat(p[None], c, axis=0)
    flat = stack.reshape(c, -1)
    flat[np.arange(c), np.arange(start, stop)] += EPS  # the same float32 nudge as numpy-loop's
    return batched_losses(params, x, y, c, (k, stack), kind)


def grad_vectorized(params, x, y, kind="mse"):
    base = batched_losses(params, x, y, 1, kind=kind)[0]  # the unnudged network, by the same batched code
    flats = [np.empty(p.size, F32) for p in params]
    for k, start, stop in full_chunks(params, x.shape[0]):
        flats[k][start:stop] = (chunk_losses(params, x, y, k, start, stop, kind) - base) / EPS
    return [g.reshape(p.shape) for g, p in zip(flats, params)]


def estimate_vectorized(params, x, y, kind, probe_seconds=0.1):
    """Seconds for one numpy-vectorized step: for every parameter array, its chunks are timed until
    probe_seconds have passed (at least one chunk), and the time per nudge is scaled to the array's size."""
    batched_losses(params, x, y, 1, kind=kind)  # warm-up
    spent, done = [0.0] * len(params), [0] * len(params)
    for k, start, stop in full_chunks(params, x.shape[0]):
        if spent[k] >= probe_seconds:
            continue
        t = time.perf_counter()
        chunk_losses(params, x, y, k, start, stop, kind)
        spent[k] += time.perf_counter() - t
        done[k] += stop - start
    return sum(s / d * p.size for s, d, p in zip(spent, done, params))


# ---------------------------------------------------------------- numpy-reuse
def nudged_losses(params, x, y, kind="mse"):
    """All P + 1 losses (unnudged first, then params in order), computed in chunks of nudges."""
    Ws, bs, n = params[0::2], params[1::2], len(params) // 2
    acts, zs = [x], []
    for l in range(n):
        zs.append(acts[-1] @ Ws[l] + bs[l])
        acts.append(sigmoid(zs[-1]) if l + 1 < n else zs[-1])
    out = [np.array([mean_loss(acts[-1], y, kind)])]
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
            out.append(mean_loss(a, y, kind))
    return np.concatenate(out)


def grad_reuse(params, x, y, kind="mse"):
    losses = nudged_losses(params, x, y, kind)
    flat = (losses[1:] - losses[0]) / EPS
    grads, at = [], 0
    for l in range(0, len(params), 2):  # losses are ordered W (row-major) then b per layer
        W, b = params[l], params[l + 1]
        grads += [flat[at:at + W.size].reshape(W.shape), flat[at + W.size:at + W.size + b.size]]
        at += W.size + b.size
    return grads


# ---------------------------------------------------------------- timing
METHODS = {"numpy-loop": grad_loop, "numpy-vectorized": grad_vectorized, "numpy-reuse": grad_reuse}


def step(method, params, x, y, kind="mse"):
    for p, g in zip(params, METHODS[method](params, x, y, kind)):
        p -= LR * g


def estimate_loop(params, x, y, kind):
    """Seconds for one numpy-loop step: (P + 1) times the median time of one forward pass."""
    for _ in range(3):
        loss(params, x, y, kind)
    times, start = [], time.perf_counter()
    while len(times) < 20 or time.perf_counter() - start < 0.05:
        t = time.perf_counter()
        loss(params, x, y, kind)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * (sum(p.size for p in params) + 1)


def time_row(name, method, kind, max_seconds):
    params, x, y = make_size(name, kind)
    n_params, batch = sum(p.size for p in params), x.shape[0]
    row = {"size": name, "params": int(n_params), "samples": int(batch), "method": method, "loss": kind}
    if name == "book" and kind != "mse":
        row["skipped"] = "cross-entropy over one output is 0 for every parameter"
        return row
    if method in ("numpy-loop", "numpy-vectorized"):
        if method == "numpy-loop":
            est, how = estimate_loop(params, x, y, kind), f"{n_params + 1} forward passes"
        else:
            est, how = estimate_vectorized(params, x, y, kind), "from timed chunks of every parameter array"
        if 2 * est > max_seconds:  # warm-up plus one timed step would not fit
            row["skipped"] = (f"estimated {est:.1f} s per step ({how}), over --max-seconds {max_seconds:g}")
            return row
    start = time.perf_counter()
    step(method, params, x, y, kind)  # warm-up
    times = []
    while len(times) < 5 or sum(times) < 1.0:
        last = times[-1] if times else time.perf_counter() - start
        if time.perf_counter() - start + last > max_seconds:
            break
        t = time.perf_counter()
        step(method, params, x, y, kind)
        times.append(time.perf_counter() - t)
    if not times:  # even the warm-up ran past the budget: report it as the only run
        times, row["note"] = [time.perf_counter() - start], "warm-up step only"
    med = float(np.median(times))
    row.update(median_seconds=med, runs=len(times), evals_per_second=(n_params + 1) * batch / med)
    return row


def agreement(name, method, kind="mse"):
    """Compares method's gradients with numpy-loop's on one step of size name."""
    params, x, y = make_size(name, kind)
    g_loop = np.concatenate([g.ravel() for g in grad_loop(params, x, y, kind)])
    g_other = np.concatenate([g.ravel() for g in METHODS[method](params, x, y, kind)])
    diff, scale = float(np.max(np.abs(g_other - g_loop))), float(np.max(np.abs(g_loop)))
    rel = diff / max(scale, 1e-12)
    # A float32 forward difference resolves steps of one ULP of the loss over eps; summing in another
    # order moves a loss by a few ULP, so the gradients may differ by a few of those steps.
    resolution = float(np.spacing(F32(loss(params, x, y, kind)))) / float(EPS)
    ok = rel < 1e-2 or diff <= 4 * resolution
    if not ok:
        print(f"WARNING: {name}: {method} and numpy-loop gradients differ: max |diff| {diff:.3g}, "
              f"{rel:.3g} of max |grad| {scale:.3g}", file=sys.stderr)
    return {"size": name, "method": method, "loss": kind, "max_abs_diff": diff, "max_abs_grad": scale, "relative": rel,
            "fd_resolution": resolution, "ok": ok}


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
    ap.add_argument("--methods", default="numpy-loop,numpy-vectorized,numpy-reuse")
    ap.add_argument("--losses", default="mse")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args()
    sizes, methods, kinds = args.sizes.split(","), args.methods.split(","), args.losses.split(",")
    for k in kinds:
        if k not in ("mse", "cross-entropy"):
            ap.error(f"unknown loss {k!r}")
    for s in sizes:
        if s != "book" and s not in SIZES:
            ap.error(f"unknown size {s!r}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}")
    result = {"numpy_version": np.__version__, "machine": machine(), "blas": blas(),
              "cpu_count": os.cpu_count(), "load_average_before": list(os.getloadavg()),
              "agreement": [agreement(s, m, k) for k in kinds for s in ("book", "small")
                            for m in ("numpy-vectorized", "numpy-reuse") if s != "book" or k == "mse"],
              "rows": [time_row(s, m, k, args.max_seconds) for s in sizes for k in kinds for m in methods]}
    print(json.dumps(result, indent=1))
