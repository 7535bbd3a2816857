#!/usr/bin/python3
"""Golden SSIM and PSNR values for tests/test_metrics.cpp, from scikit-image.

Writes tests/data/ssim_golden.txt. Run by hand when the cases change (CI never runs it):
    apt-get install -y python3-skimage      # Debian's scikit-image, numpy, scipy
    /usr/bin/python3 tools/pytorch/make_ssim_golden.py

Per volume b of a case [B, D, H, W] the file holds, computed in float64 from the float32 inputs:
  per-slice SSIM   skimage.metrics.structural_similarity(pred[b, d], target[b, d],
                   gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                   data_range=R) for every axial slice d
  per-volume SSIM  the mean of those over d
  MSE, PSNR        skimage.metrics.mean_squared_error / peak_signal_noise_ratio(pred[b],
                   target[b], data_range=R) over the whole volume

Inputs are not stored: they come from an integer recipe that the C++ test repeats bit for bit.
  lcg(state) = (state * 1664525 + 1013904223) mod 2^32; draw = state >> 8  (24 bits)
  One stream for pred (seeded with `seed`) and one for the noise (seeded with `noise_seed`), each
  drawn once per element in C order over [B, D, H, W]. Values are integers v in [-2^23, 2^23]
  standing for v / 2^23 in [-1, 1] (scale "pm1"), or (v + 2^23) / 2^24 in [0, 1] (scale "01");
  both are exact in float32.
  pattern "uniform":  pred = draw_p - 2^23
  pattern "smooth":   pred = ((h + 2 w + 3 d + 5 b) mod 64) * 2^18 - 2^23 + (draw_p >> 10) - 2^13
                      (a ramp of 1/32 per pixel that wraps every 64, plus +-2^-10 of noise)
  pattern "blocks":   pred = -2^23 (air) where w < W / 2; else 2^21 (0.25) where h < H / 2;
                      else draw_p - 2^23  (integer divisions)
  noise  = (draw_n >> noise_shift) - (2^23 >> noise_shift)
  target = clamp(pred + noise, -2^23, 2^23), except for pattern "blocks", where slices with even
           d keep target = pred (constant regions compared with themselves)
"""

import os
import sys

import numpy as np
import skimage
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

ONE = 1 << 23

# name, [B, D, H, W], data_range, scale, pattern, seed, noise_seed, noise_shift
CASES = [
    ("uniform_1x3x23x17", (1, 3, 23, 17), 2.0, "pm1", "uniform", 11, 12, 3),
    ("uniform_2x5x16x16", (2, 5, 16, 16), 2.0, "pm1", "uniform", 21, 22, 2),
    ("smooth_2x3x33x40", (2, 3, 33, 40), 2.0, "pm1", "smooth", 31, 32, 6),
    ("blocks_1x4x20x24", (1, 4, 20, 24), 2.0, "pm1", "blocks", 41, 42, 5),
    ("blocks_range1_1x3x20x24", (1, 3, 20, 24), 1.0, "01", "blocks", 51, 52, 4),
    ("smallest_range1_3x2x11x11", (3, 2, 11, 11), 1.0, "01", "uniform", 61, 62, 3),
    ("smooth_range1_1x2x47x35", (1, 2, 47, 35), 1.0, "01", "smooth", 71, 72, 7),
]


def lcg_draws(seed, count):
    state = seed & 0xFFFFFFFF
    out = []
    for _ in range(count):
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        out.append(state >> 8)
    return out


def make_inputs(shape, scale, pattern, seed, noise_seed, noise_shift):
    B, D, H, W = shape
    n = B * D * H * W
    draws_p = lcg_draws(seed, n)
    draws_n = lcg_draws(noise_seed, n)
    pred = np.empty(n, dtype=np.int64)
    target = np.empty(n, dtype=np.int64)
    i = 0
    for b in range(B):
        for d in range(D):
            for h in range(H):
                for w in range(W):
                    dp = draws_p[i]
                    if pattern == "uniform":
                        p = dp - ONE
                    elif pattern == "smooth":
                        p = ((h + 2 * w + 3 * d + 5 * b) % 64) * (1 << 18) - ONE + (dp >> 10) - (1 << 13)
                    elif pattern == "blocks":
                        if w < W // 2:
                            p = -ONE
                        elif h < H // 2:
                            p = 1 << 21
                        else:
                            p = dp - ONE
                    else:
                        raise ValueError(pattern)
                    noise = (draws_n[i] >> noise_shift) - (ONE >> noise_shift)
                    t = min(max(p + noise, -ONE), ONE)
                    if pattern == "blocks" and d % 2 == 0:
                        t = p
                    pred[i] = p
                    target[i] = t
                    i += 1

    def to_float(v):
        if scale == "pm1":
            f = v.astype(np.float64) / ONE
        elif scale == "01":
            f = (v + ONE).astype(np.float64) / (2 * ONE)
        else:
            raise ValueError(scale)
        f32 = f.astype(np.float32)
        assert np.array_equal(f32.astype(np.float64), f), "inputs must be exact in float32"
        return f32.reshape(shape)

    return to_float(pred), to_float(target)


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                            "ssim_golden.txt")
    lines = [
        "# SSIM / PSNR golden data for tests/test_metrics.cpp: written by tools/pytorch/make_ssim_golden.py",
        f"# scikit-image {skimage.__version__}, numpy {np.__version__}; the input recipe is in that script.",
        "# case name B D H W data_range scale pattern seed noise_seed noise_shift",
        "# then: per_slice (B*D values), per_sample (B), mse (B), psnr (B), end",
    ]
    for name, shape, data_range, scale, pattern, seed, noise_seed, noise_shift in CASES:
        pred, target = make_inputs(shape, scale, pattern, seed, noise_seed, noise_shift)
        B, D = shape[0], shape[1]
        per_slice, per_sample, mse, psnr = [], [], [], []
        for b in range(B):
            # float64 copies of the float32 values: the exact-arithmetic result to ~1e-16.
            x = pred[b].astype(np.float64)
            y = target[b].astype(np.float64)
            values = [
                structural_similarity(x[d], y[d], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=data_range) for d in range(D)
            ]
            per_slice += values
            per_sample.append(float(np.mean(values)))
            mse.append(mean_squared_error(x, y))
            psnr.append(peak_signal_noise_ratio(x, y, data_range=data_range))
        lines.append(f"case {name} {' '.join(map(str, shape))} {data_range!r} {scale} {pattern} {seed} "
                     f"{noise_seed} {noise_shift}")
        lines.append("per_slice " + fmt(per_slice))
        lines.append("per_sample " + fmt(per_sample))
        lines.append("mse " + fmt(mse))
        lines.append("psnr " + fmt(psnr))
        lines.append("end")
        print(f"{name}: ssim {per_sample} psnr {psnr}", file=sys.stderr)
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out_path + ".tmp", out_path)
    print(f"wrote {os.path.normpath(out_path)}", file=sys.stderr)


if __name__ == "__main__":
    main()
