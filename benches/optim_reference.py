#!/usr/bin/env python3
"""Independent NumPy transcription of perturb's optimisers (src/optim.rs) and mini-batch order
(src/batches.rs), written from their documented formulas, to produce the fixture that
tests/optim.rs compares the Rust code against bit for bit.

    python3 benches/optim_reference.py tests/fixtures/optim_case.json > tests/fixtures/optim_reference.json

The case JSON holds the float32 start parameters, one gradient vector per step, the learning rate
and the optimisers (in the serde form of perturb::optim::Optimizer). For each optimiser the
parameter trajectory is computed twice: R = f64 (float64 arithmetic, float32 storage, the book's
NumPy precision) and R = f32 (float32 arithmetic throughout, gradients rounded to float32 first).

Semantics (PyTorch's torch.optim.SGD / Adam, with perturb's documented operation order):
  sgd       w = fl32(w - g*lr)
  momentum  vel = fl32(mu*vel + g);  w = fl32(w - lr*vel)
  adam      t += 1; p1 = beta1^t, p2 = beta2^t by binary exponentiation in float64;
            bc1 = R(1 - p1); bc2 = R(1 - p2); c1 = R(1 - beta1); c2 = R(1 - beta2)
            m = fl32(R(beta1)*m + c1*g);  v = fl32(R(beta2)*v + c2*(g*g))
            m_hat = m / bc1;  v_hat = v / bc2;  d = sqrt(v_hat) + R(eps)
            w = fl32(w - (lr*m_hat) / d)
"""

import json
import sys

import numpy as np

F32, F64 = np.float32, np.float64


def power(base, exp):
    """base**exp in float64 by right-to-left binary exponentiation (the order src/optim.rs uses)."""
    r, b, e = 1.0, float(base), exp
    while e > 0:
        if e & 1:
            r = r * b
        e >>= 1
        if e > 0:
            b = b * b
    return r


def trajectory(opt, params, grads, lr, R):
    """Parameters after each step, as float32 lists; R is np.float32 or np.float64."""
    w = np.array(params, dtype=F32)
    n = len(w)
    vel = np.zeros(n, dtype=F32)
    m = np.zeros(n, dtype=F32)
    v = np.zeros(n, dtype=F32)
    t = 0
    lr = R(lr)
    out = []
    for step_grads in grads:
        g_all = [R(F32(g)) if R is F32 else R(g) for g in step_grads]
        if opt["name"] == "adam":
            t += 1
            bc1 = R(1.0 - power(opt["beta1"], t))
            bc2 = R(1.0 - power(opt["beta2"], t))
            b1, c1 = R(opt["beta1"]), R(1.0 - opt["beta1"])
            b2, c2 = R(opt["beta2"]), R(1.0 - opt["beta2"])
            eps = R(opt["eps"])
        for i in range(n):
            g = g_all[i]
            wi = R(w[i])
            if opt["name"] == "sgd":
                w[i] = F32(wi - g * lr)
            elif opt["name"] == "momentum":
                vel[i] = F32(R(opt["momentum"]) * R(vel[i]) + g)
                w[i] = F32(wi - lr * R(vel[i]))
            elif opt["name"] == "adam":
                m[i] = F32(b1 * R(m[i]) + c1 * g)
                v[i] = F32(b2 * R(v[i]) + c2 * (g * g))
                m_hat = R(m[i]) / bc1
                v_hat = R(v[i]) / bc2
                d = np.sqrt(v_hat) + eps
                w[i] = F32(wi - (lr * m_hat) / d)
            else:
                raise ValueError(opt["name"])
            assert type(wi - g * lr) is R, "arithmetic left the precision"
        out.append([float(x) for x in w])
    return out


M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF
ORDER_DOMAIN = 0x42415443


def philox(counter, key):
    """Philox4x32-10 (Salmon et al.), Python integers."""
    c, k = list(counter), list(key)
    for rnd in range(10):
        if rnd > 0:
            k = [(k[0] + W0) & MASK, (k[1] + W1) & MASK]
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
    return c


def epoch_order(n, seed, epoch):
    """Fisher-Yates (i = n-1 down to 1, j uniform in 0..=i by Lemire's method with rejection),
    words from philox([block, epoch lo, epoch hi, ORDER_DOMAIN], [seed lo, seed hi])."""
    key = [seed & MASK, seed >> 32]

    def words():
        block = 0
        while True:
            yield from philox([block, epoch & MASK, epoch >> 32, ORDER_DOMAIN], key)
            block += 1

    stream = words()
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        s = i + 1
        mm = next(stream) * s
        if mm & MASK < s:
            threshold = (2**32 - s) % s
            while mm & MASK < threshold:
                mm = next(stream) * s
        j = mm >> 32
        order[i], order[j] = order[j], order[i]
    return order


ORDER_CASES = [
    (100, 0, 0),
    (7, 0, 0),
    (7, 0, 1),
    (7, 1, 0),
    (2, 5, 3),
    (33, 2**40 + 5, 2**33 + 7),
]


def main():
    case = json.load(open(sys.argv[1]))
    trajectories = {}
    for opt in case["optimizers"]:
        trajectories[opt["name"]] = {
            name: trajectory(opt, case["params"], case["grads"], case["lr"], R)
            for name, R in (("f32", F32), ("f64", F64))
        }
    orders = [
        {"n": n, "seed": seed, "epoch": epoch, "order": epoch_order(n, seed, epoch)}
        for n, seed, epoch in ORDER_CASES
    ]
    json.dump(
        {
            "generated_by": "python3 benches/optim_reference.py tests/fixtures/optim_case.json"
            f" > tests/fixtures/optim_reference.json (NumPy {np.__version__})",
            "case": case,
            "trajectories": trajectories,
            "epoch_orders": orders,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
