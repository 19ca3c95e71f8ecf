"""Golden values for the book example ("Modern Computer Vision with PyTorch", Chapter01/Back_propagation.ipynb).

A 2-3-1 network (sigmoid hidden, identity output, MSE) trained on x=[1,1], y=[0] for 100 epochs by
finite-difference gradients (eps=1e-4, lr=0.01), exactly as the notebook does. See /work/shared/BOOK.md.

Two runs:
  * explicit: parameters stored as float32; the three rules of BOOK.md applied by hand, independently of
    NumPy's promotion rules:
      nudge   w' = fl32(w + fl32(0.0001))
      loss    float64 forward pass (sums left to right), grad = (L' - L) / 0.0001 in float64
      update  new = fl32(w - grad * 0.01), computed in float64
  * literal: the notebook's own code, run under whatever NumPy is installed.
Prints one JSON object; "literal_notebook_matches" says whether both runs agree bit for bit
(losses, trained parameters and prediction).

Run: python3 benches/numpy_book.py
"""
import json
from copy import deepcopy

import numpy as np

F32, F64 = np.float32, np.float64
EPS, LR, EPOCHS = 0.0001, 0.01, 100

# W1 as [inputs][outputs] (the notebook's transposed 3x2), b1, W2 (3x1), b2: 13 float32 values.
W1 = [[-0.0053, -0.5820, -0.2723], [0.3793, -0.5204, 0.1896]]
B1 = [-0.0140, 0.5607, -0.0628]
W2 = [0.1528, -0.1745, -0.1135]
B2 = -0.5516
INIT = [F32(v) for v in (*W1[0], *W1[1], *B1, *W2, B2)]


# ---------------------------------------------------------------- explicit semantics
def loss_f64(p, x=(1.0, 1.0), y=0.0):
    """MSE of the single output, all in float64; p is the flat list of 13 float32 params."""
    w = [F64(v) for v in p]
    # np.dot(x, W1) + b1: dot first, then bias.
    pre = [(F64(x[0]) * w[j] + F64(x[1]) * w[3 + j]) + w[6 + j] for j in range(3)]
    hid = 1.0 / (1.0 + np.exp(-np.array(pre, dtype=F64)))
    out = (hid[0] * w[9] + hid[1] * w[10] + hid[2] * w[11]) + w[12]
    return F64((out - y) ** 2), F64(out)


def train_explicit():
    p, losses = list(INIT), []
    for _ in range(EPOCHS):
        L = loss_f64(p)[0]
        new = []
        for k in range(len(p)):
            q = list(p)
            q[k] = F32(p[k] + F32(EPS))          # float32 + float32 -> float32
            grad = (loss_f64(q)[0] - L) / F64(EPS)  # float64
            new.append(F32(F64(p[k]) - grad * F64(LR)))  # float64 math, float32 storage
        p, losses = new, losses + [L]
    return losses, p, loss_f64(p)[1]


# ---------------------------------------------------------------- literal notebook code
def train_literal():
    x = np.array([[1, 1]]); y = np.array([[0]])
    W = [np.array([[-0.0053, 0.3793], [-0.5820, -0.5204], [-0.2723, 0.1896]], dtype=np.float32).T,
         np.array([-0.0140, 0.5607, -0.0628], dtype=np.float32),
         np.array([[0.1528, -0.1745, -0.1135]], dtype=np.float32).T,
         np.array([-0.5516], dtype=np.float32)]

    def feed_forward(inputs, outputs, weights):
        pre_hidden = np.dot(inputs, weights[0]) + weights[1]
        hidden = 1 / (1 + np.exp(-pre_hidden))
        pred_out = np.dot(hidden, weights[2]) + weights[3]
        mean_squared_error = np.mean(np.square(pred_out - outputs))
        return mean_squared_error

    def update_weights(inputs, outputs, weights, lr):
        original_weights = deepcopy(weights); temp_weights = deepcopy(weights); updated_weights = deepcopy(weights)
        original_loss = feed_forward(inputs, outputs, original_weights)
        for i, layer in enumerate(original_weights):
            for index, weight in np.ndenumerate(layer):
                temp_weights = deepcopy(weights)
                temp_weights[i][index] += 0.0001
                _loss_plus = feed_forward(inputs, outputs, temp_weights)
                grad = (_loss_plus - original_loss) / (0.0001)
                updated_weights[i][index] -= grad * lr
        return updated_weights, original_loss

    losses = []
    for _ in range(EPOCHS):
        W, loss = update_weights(x, y, W, 0.01)
        losses.append(F64(loss))
    pre_hidden = np.dot(x, W[0]) + W[1]
    hidden = 1 / (1 + np.exp(-pre_hidden))
    pred = F64((np.dot(hidden, W[2]) + W[3])[0, 0])
    assert all(w.dtype == np.float32 for w in W)
    return losses, [F32(v) for w in W for v in w.ravel()], pred


def bits(v):
    return int(np.array(v, dtype=F32).view(np.uint32))


def f64bits(v):
    return int(np.array(v, dtype=F64).view(np.uint64))


if __name__ == "__main__":
    losses, params, pred = train_explicit()
    l_losses, l_params, l_pred = train_literal()
    matches = ([f64bits(v) for v in losses] == [f64bits(v) for v in l_losses]
               and [bits(v) for v in params] == [bits(v) for v in l_params]
               and f64bits(pred) == f64bits(l_pred))
    print(json.dumps({
        "numpy_version": np.__version__,
        "losses": [float(v) for v in losses],
        "params_f32_bits": [bits(v) for v in params],
        "params": [float(v) for v in params],
        "prediction": float(pred),
        "literal_notebook_matches": matches,
    }, indent=1))
