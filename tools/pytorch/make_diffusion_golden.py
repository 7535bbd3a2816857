#!/usr/bin/python3
"""Golden diffusion-process values for tests/test_diffusion.cpp, from an independent NumPy
implementation written from the formulas (DDPM: Ho et al. 2020; DDIM: Song et al. 2021; cosine
schedule and respacing: Nichol & Dhariwal 2021). Everything is computed in float64.

Writes tests/data/diffusion/golden.txt. Run by hand when the cases change (CI never runs it):
    apt-get install -y python3-numpy
    /usr/bin/python3 tools/pytorch/make_diffusion_golden.py

Inputs are not stored: they come from an integer recipe that the C++ test repeats.
  pattern(mult, add, mod, div)[i] = ((mult * i + add) mod mod - (mod - 1) / 2) / div
  for the flat (C-order) index i of the tensor; mod is odd and div a power of two, so every
  value is exact in float32. The tensors:
    x0     = pattern(7, 3, 17, 8)       in [-1, 1]
    noise  = pattern(5, 1, 13, 4)       in [-1.5, 1.5]
    x_t    = pattern(3, 2, 19, 8)       in [-1.125, 1.125]  (also x_T of the trajectories)
    output = pattern(11, 5, 23, 8)      in [-1.375, 1.375]  (the model output of single steps)
    step_noise = pattern(13, 7, 29, 16) in [-0.875, 0.875]  (the noise of single stochastic steps)
  The fake denoiser of the trajectories: output = 0.5 * x_t + c * t (c per trajectory).

File format: one record per line, `name count v1 v2 ...`, values printed exactly (repr of the
float64); `#` lines are comments.
"""

import math
import os
import sys

import numpy as np

PATTERNS = {
    "x0": (7, 3, 17, 8),
    "noise": (5, 1, 13, 4),
    "x_t": (3, 2, 19, 8),
    "output": (11, 5, 23, 8),
    "step_noise": (13, 7, 29, 16),
}


def pattern(name, shape):
    mult, add, mod, div = PATTERNS[name]
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((mult * i + add) % mod) - (mod - 1) // 2).astype(np.float64).reshape(shape) / div


# ---- schedules -----------------------------------------------------------------------------------

def betas_for(kind, T, beta_start=1e-4, beta_end=0.02):
    if kind == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2
    if kind == "cosine":
        s = 0.008

        def f(u):
            return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

        return np.array([min(1 - f(t + 1) / f(t), 0.999) for t in range(T)], dtype=np.float64)
    raise ValueError(kind)


def alphas_cumprod(kind, T):
    return np.cumprod(1.0 - betas_for(kind, T))


def abar_at(abar, t):
    return 1.0 if t < 0 else float(abar[t])


def per_sample(values, ndim):
    return np.asarray(values, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


# ---- forward process and predictions -------------------------------------------------------------

def q_sample(abar, x0, noise, t):
    a = per_sample([abar[ti] for ti in t], x0.ndim)
    return np.sqrt(a) * x0 + np.sqrt(1 - a) * noise


def target(abar, kind, x0, noise, t):
    a = per_sample([abar[ti] for ti in t], x0.ndim)
    if kind == "epsilon":
        return noise
    if kind == "v":
        return np.sqrt(a) * noise - np.sqrt(1 - a) * x0
    return x0


def predict(abar, kind, clip, x_t, out, t):
    """x0 and eps from a model output; with clip (range 1) eps is re-derived from the clipped x0."""
    a = per_sample([abar[ti] for ti in t], x_t.ndim)
    if kind == "epsilon":
        eps = out
        x0 = (x_t - np.sqrt(1 - a) * eps) / np.sqrt(a)
    elif kind == "v":
        x0 = np.sqrt(a) * x_t - np.sqrt(1 - a) * out
        eps = np.sqrt(1 - a) * x_t + np.sqrt(a) * out
    else:
        x0 = out
        eps = (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)
    if clip:
        x0 = np.clip(x0, -1.0, 1.0)
        eps = (x_t - np.sqrt(a) * x0) / np.sqrt(1 - a)
    return x0, eps


# ---- reverse steps -------------------------------------------------------------------------------

def ddim_step(abar, kind, clip, eta, x_t, out, t, t_prev, noise):
    n = x_t.shape[0]
    x0, eps = predict(abar, kind, clip, x_t, out, [t] * n)
    a_t, a_prev = abar_at(abar, t), abar_at(abar, t_prev)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(0.0, 1 - a_prev - sigma ** 2)) * eps
    if sigma > 0:
        x_prev = x_prev + sigma * noise
    return x_prev


def ddpm_step(abar, kind, clip, x_t, out, t, t_prev, noise):
    n = x_t.shape[0]
    x0, _ = predict(abar, kind, clip, x_t, out, [t] * n)
    a_t, a_prev = abar_at(abar, t), abar_at(abar, t_prev)
    beta = 1 - a_t / a_prev
    mean = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x_t
    variance = beta * (1 - a_prev) / (1 - a_t)
    if t_prev < 0:
        return mean
    return mean + math.sqrt(variance) * noise


def leading_timesteps(T, steps):
    stride = T // steps
    return [i * stride for i in reversed(range(steps))]


# ---- the cases (the C++ test lists the same ones) --------------------------------------------------

SCHEDULE_T = [1000, 37]
SCHEDULE_PROBES_1000 = [0, 1, 2, 250, 499, 500, 777, 998, 999]

FORWARD_SHAPE = (3, 2, 3, 5, 2)
# name, schedule, T, per-sample t
FORWARD_CASES = [
    ("linear1000", "linear", 1000, [0, 417, 999]),
    ("cosine37", "cosine", 37, [36, 5, 17]),
]
# name, schedule, T, prediction type, clip, per-sample t
INTERPRET_CASES = [
    ("eps_clip", "linear", 1000, "epsilon", True, [3, 417, 250]),
    ("eps_noclip", "linear", 1000, "epsilon", False, [3, 417, 250]),
    ("v_clip", "linear", 1000, "v", True, [999, 417, 3]),
    ("v_noclip", "cosine", 37, "v", False, [30, 2, 17]),
    ("sample_clip", "scaled_linear", 1000, "sample", True, [3, 500, 900]),
]

STEP_SHAPE = (2, 3, 5, 2, 3)
# name, sampler, schedule, T, prediction type, clip, eta, t, t_prev
STEP_CASES = [
    ("ddim_eta0", "ddim", "linear", 1000, "epsilon", True, 0.0, 500, 480),
    ("ddim_eta05", "ddim", "linear", 1000, "epsilon", True, 0.5, 500, 480),
    ("ddim_v_eta05", "ddim", "cosine", 37, "v", False, 0.5, 24, 18),
    ("ddim_final", "ddim", "linear", 1000, "epsilon", True, 0.5, 20, -1),
    ("ddpm_respaced", "ddpm", "linear", 1000, "epsilon", True, 0.0, 500, 480),
    ("ddpm_plain", "ddpm", "scaled_linear", 1000, "sample", True, 0.0, 10, 9),
    ("ddpm_v", "ddpm", "cosine", 37, "v", False, 0.0, 12, 6),
    ("ddpm_final", "ddpm", "linear", 1000, "epsilon", True, 0.0, 20, -1),
]

# name, schedule, T, steps, prediction type, clip, denoiser's c (output = 0.5 x_t + c t)
TRAJECTORY_CASES = [
    ("linear_eps", "linear", 1000, 5, "epsilon", True, 0.001),
    ("cosine_v", "cosine", 37, 6, "v", False, 0.01),
    ("scaled_sample", "scaled_linear", 1000, 4, "sample", True, 0.001),
]


def fmt(name, values):
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return f"{name} {values.size} " + " ".join(repr(float(v)) for v in values)


def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "diffusion",
                            "golden.txt")
    lines = [
        "# Diffusion golden data for tests/test_diffusion.cpp: written by tools/pytorch/make_diffusion_golden.py",
        f"# NumPy {np.__version__}, float64; the input recipe and the cases are in that script.",
    ]
    for kind in ("linear", "scaled_linear", "cosine"):
        for T in SCHEDULE_T:
            probes = SCHEDULE_PROBES_1000 if T == 1000 else list(range(T))
            betas = betas_for(kind, T)
            abar = np.cumprod(1.0 - betas)
            lines.append(fmt(f"schedule/{kind}/{T}/t", probes))
            lines.append(fmt(f"schedule/{kind}/{T}/betas", betas[probes]))
            lines.append(fmt(f"schedule/{kind}/{T}/alphas_cumprod", abar[probes]))

    x0 = pattern("x0", FORWARD_SHAPE)
    noise = pattern("noise", FORWARD_SHAPE)
    for name, kind, T, t in FORWARD_CASES:
        abar = alphas_cumprod(kind, T)
        lines.append(fmt(f"forward/{name}/q_sample", q_sample(abar, x0, noise, t)))
        # The epsilon and sample targets are the noise and x0 themselves; the test checks that.
        lines.append(fmt(f"forward/{name}/target_v", target(abar, "v", x0, noise, t)))

    x_t = pattern("x_t", FORWARD_SHAPE)
    out = pattern("output", FORWARD_SHAPE)
    for name, kind, T, prediction, clip, t in INTERPRET_CASES:
        x0_hat, eps_hat = predict(alphas_cumprod(kind, T), prediction, clip, x_t, out, t)
        lines.append(fmt(f"interpret/{name}/x0", x0_hat))
        lines.append(fmt(f"interpret/{name}/eps", eps_hat))

    x_t = pattern("x_t", STEP_SHAPE)
    out = pattern("output", STEP_SHAPE)
    step_noise = pattern("step_noise", STEP_SHAPE)
    for name, sampler, kind, T, prediction, clip, eta, t, t_prev in STEP_CASES:
        abar = alphas_cumprod(kind, T)
        if sampler == "ddim":
            x_prev = ddim_step(abar, prediction, clip, eta, x_t, out, t, t_prev, step_noise)
        else:
            x_prev = ddpm_step(abar, prediction, clip, x_t, out, t, t_prev, step_noise)
        lines.append(fmt(f"step/{name}", x_prev))

    for name, kind, T, steps, prediction, clip, c in TRAJECTORY_CASES:
        abar = alphas_cumprod(kind, T)
        x = pattern("x_t", STEP_SHAPE)
        timesteps = leading_timesteps(T, steps)
        lines.append(fmt(f"trajectory/{name}/timesteps", timesteps))
        for k, t in enumerate(timesteps):
            t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
            x = ddim_step(abar, prediction, clip, 0.0, x, 0.5 * x + c * t, t, t_prev, None)
            lines.append(fmt(f"trajectory/{name}/after_step{k}", x))

    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out_path + ".tmp", out_path)
    print(f"wrote {os.path.normpath(out_path)} ({len(lines)} lines)", file=sys.stderr)


if __name__ == "__main__":
    main()
