#!/usr/bin/python3
"""PyTorch eager baseline for ctsr_bench's vqae_decode: the released architecture (n_hiddens 48,
GroupNorm 24 groups, 8192 codes, random weights) decoding a [1, 8, 25, 16, 16] latent to
200 x 128 x 128, timed after a warm-up, with torch.cuda.max_memory_allocated as the peak.
The model is tools/pytorch/make_vqae_golden.py's, at production width.
    /usr/bin/python3 tools/pytorch/bench_vqae_decode.py [--device cuda] [--latent 25,16,16] [--repeats 5]
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_vqae_golden as ref  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--latent", default="25,16,16")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    ref.N_HIDDENS, ref.GROUPS, ref.CODES = 48, 24, 8192
    model = ref.VQAE().to(a.device).eval()
    d, h, w = (int(v) for v in a.latent.split(","))
    z = torch.rand(1, 8, d, h, w, device=a.device) * 2 - 1
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        model.decode(z)
        sync()
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            model.decode(z)
        sync()
        ms = (time.perf_counter() - t0) / a.repeats * 1e3
    peak = torch.cuda.max_memory_allocated() / 2**20 if a.device.startswith("cuda") else float("nan")
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"pytorch {torch.__version__} eager on {name}: decode [1,8,{d},{h},{w}] -> [{8*d},{8*h},{8*w}]: "
          f"{ms:.1f} ms, peak allocated {peak:.0f} MiB")


if __name__ == "__main__":
    main()
