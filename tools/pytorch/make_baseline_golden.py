#!/usr/bin/python3
"""Golden outputs of the classical baselines for tests/test_baselines.cpp, from SciPy and scikit-image.

Writes tests/data/baselines/: the float32 input volumes (.npy), the outputs of
  scipy.ndimage.gaussian_filter(x, sigma, mode="nearest")
  skimage.restoration.denoise_tv_chambolle(x, weight[, max_num_iter=N])
  scipy.ndimage.median_filter(x, 3, mode="nearest")
on them (.npy, float32, as the libraries return for a float32 input), and cases.json, which lists
every case: its operation, parameter, input and output files, and for TV the number of iterations
scikit-image ran (the smallest max_num_iter that gives the same array: the early stop at
iteration i returns that iteration's image, as max_num_iter = i + 1 does). Run by hand when the
cases change (CI never runs it):
    apt-get install -y python3-skimage python3-scipy
    /usr/bin/python3 tools/pytorch/make_baseline_golden.py

Inputs: uniform values in [-1, 1] with no zeros (the noise the baselines face at its worst), at
sizes that are odd, unequal per axis and, for the 7-deep one, shorter than the widest Gaussian
(sigma 1.5: radius 6), so the "nearest" edge repeats several times; and a piecewise-constant
volume with mild noise, where the median meets many equal values and TV runs to its early stop
on structure rather than noise.
"""

import json
import os
import sys

import numpy as np
import scipy
import skimage
from scipy.ndimage import gaussian_filter, median_filter
from skimage.restoration import denoise_tv_chambolle

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "baselines")


def uniform_nonzero(rng, shape):
    x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    x[x == 0] = 0.5
    return x


def blocks(rng, shape):
    d, h, w = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    x = np.where(w < shape[2] // 2, -1.0, np.where(h < shape[1] // 2, 0.25, 0.75))
    x = x + np.where((d + h) % 5 == 0, 0.0, rng.uniform(-0.05, 0.05, shape))
    return np.clip(x, -1, 1).astype(np.float32)


def tv_iterations(x, weight, result, cap):
    for k in range(1, cap + 1):
        if np.array_equal(denoise_tv_chambolle(x, weight=weight, max_num_iter=k), result):
            return k
    sys.exit(f"no max_num_iter up to {cap} reproduces the TV result (weight {weight})")


def main():
    rng = np.random.default_rng(20261201)
    inputs = {
        "uniform_7x11x13": uniform_nonzero(rng, (7, 11, 13)),
        "uniform_25x16x16": uniform_nonzero(rng, (25, 16, 16)),
        "blocks_10x12x9": blocks(rng, (10, 12, 9)),
    }
    # (input, gaussian sigmas, TV (weight, max_num_iter) pairs)
    plan = [
        ("uniform_7x11x13", [0.5, 0.75, 1.0, 1.25, 1.5], [(0.05, 200), (0.2, 200), (0.1, 5)]),
        ("uniform_25x16x16", [0.5, 1.5], [(0.1, 200), (0.15, 200)]),
        ("blocks_10x12x9", [1.0], [(0.1, 200)]),
    ]
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for name, sigmas, tvs in plan:
        x = inputs[name]
        assert x.dtype == np.float32 and (np.all(x != 0) or name.startswith("blocks"))
        np.save(os.path.join(OUT, f"{name}.npy"), x)
        for sigma in sigmas:
            y = gaussian_filter(x, sigma, mode="nearest")
            assert y.dtype == np.float32
            out = f"{name}_gaussian_{sigma}.npy"
            np.save(os.path.join(OUT, out), y)
            cases.append({"op": "gaussian", "input": f"{name}.npy", "sigma": sigma, "output": out})
        for weight, cap in tvs:
            y = denoise_tv_chambolle(x, weight=weight, max_num_iter=cap)
            assert y.dtype == np.float32
            out = f"{name}_tv_{weight}_{cap}.npy"
            np.save(os.path.join(OUT, out), y)
            cases.append({"op": "tv", "input": f"{name}.npy", "weight": weight, "max_num_iter": cap,
                          "iterations": tv_iterations(x, weight, y, cap), "output": out})
        y = median_filter(x, 3, mode="nearest")
        out = f"{name}_median.npy"
        np.save(os.path.join(OUT, out), y)
        cases.append({"op": "median", "input": f"{name}.npy", "output": out})
    manifest = {"generator": "tools/pytorch/make_baseline_golden.py", "numpy": np.__version__,
                "scipy": scipy.__version__, "skimage": skimage.__version__, "cases": cases}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
