#!/usr/bin/python3
"""Golden AdamW states for tests/test_optimizer.cpp, from torch.optim.AdamW.

Writes tests/data/adamw_golden.txt. Run by hand when the cases change (CI never runs it):
    apt-get install -y python3-torch         # Debian's PyTorch (CPU)
    /usr/bin/python3 tools/pytorch/make_adamw_golden.py

For every configuration, a few float32 parameter tensors take `steps` AdamW steps from zero
state (steps 1, 2, ...); the file holds each tensor's parameters, exp_avg and exp_avg_sq after
the last step, printed exactly (the shortest decimal that reads back as the float32).

Inputs come from an integer recipe that the C++ test repeats bit for bit:
  lcg(state) = (state * 1664525 + 1013904223) mod 2^32; draw = state >> 8  (24 bits)
  value(draw) = (draw - 2^23) / 2^23, in [-1, 1), exact in float32
  a tensor's parameters: value of the draws of a stream seeded with param_seed, in C order
  its gradients: a stream seeded with grad_seed; step s (1-based) takes the next numel draws,
  g = value(draw) * 2^-grad_exp (exact), so small gradients make eps matter
"""

import os
import sys

import torch

ONE = 1 << 23

# name, lr, (beta1, beta2), eps, weight_decay, steps
CONFIGS = [
    ("default", 2e-4, (0.9, 0.999), 1e-8, 0.01, 5),
    ("other", 1e-3, (0.8, 0.95), 1e-6, 0.1, 4),
    ("large_lr_no_decay", 0.05, (0.5, 0.9), 1e-4, 0.0, 3),
]

# shape, param_seed, grad_seed, grad_exp
TENSORS = [
    ((7,), 101, 201, 0),
    ((3, 5), 102, 202, 3),
    ((2, 3, 4), 103, 203, 10),
    ((1,), 104, 204, 0),
    ((4, 1, 3), 105, 205, 20),
]


class Lcg:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def values(self, count):
        out = []
        for _ in range(count):
            self.state = (self.state * 1664525 + 1013904223) & 0xFFFFFFFF
            out.append(((self.state >> 8) - ONE) / ONE)
        return out


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def fmt(t):
    return " ".join(repr(float(v)) for v in t.reshape(-1).tolist())


def main():
    torch.set_num_threads(1)
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                            "adamw_golden.txt")
    lines = [
        "# AdamW golden data for tests/test_optimizer.cpp: written by tools/pytorch/make_adamw_golden.py",
        f"# torch {torch.__version__} (torch.optim.AdamW, float32, CPU); the input recipe is in that script.",
        "# config name lr beta1 beta2 eps weight_decay steps tensors",
        "# tensor ndim dims... param_seed grad_seed grad_exp, then param, exp_avg, exp_avg_sq after the last step",
    ]
    for name, lr, betas, eps, weight_decay, steps in CONFIGS:
        params = []
        grad_streams = []
        for shape, param_seed, grad_seed, grad_exp in TENSORS:
            values = Lcg(param_seed).values(numel(shape))
            params.append(torch.nn.Parameter(torch.tensor(values, dtype=torch.float32).reshape(shape)))
            grad_streams.append((Lcg(grad_seed), 2.0 ** -grad_exp))
        optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for _ in range(steps):
            for p, (stream, scale) in zip(params, grad_streams):
                g = torch.tensor(stream.values(p.numel()), dtype=torch.float32).reshape(p.shape)
                p.grad = g * scale  # exact: a power of two
            optimizer.step()
        lines.append(f"config {name} {lr!r} {betas[0]!r} {betas[1]!r} {eps!r} {weight_decay!r} {steps} "
                     f"{len(TENSORS)}")
        for p, (shape, param_seed, grad_seed, grad_exp) in zip(params, TENSORS):
            state = optimizer.state[p]
            lines.append(f"tensor {len(shape)} {' '.join(map(str, shape))} {param_seed} {grad_seed} {grad_exp}")
            lines.append("param " + fmt(p.detach()))
            lines.append("exp_avg " + fmt(state["exp_avg"]))
            lines.append("exp_avg_sq " + fmt(state["exp_avg_sq"]))
        lines.append("end")
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out_path + ".tmp", out_path)
    print(f"wrote {os.path.normpath(out_path)}", file=sys.stderr)


if __name__ == "__main__":
    main()
