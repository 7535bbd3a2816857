#!/usr/bin/env python3
"""Compares two records of RunLoop.RecordsRunsForComparisonBetweenBuilds (tests/test_run.cpp): the
diffusion and VQ-AE tasks trained straight and stopped-and-resumed by two builds, to show that a
change left training bit for bit the same. Standard library only.

    CTSR_RUN_RECORD_DIR=/tmp/rec_old old-build/tests/ctsr_tests --gtest_filter='RunLoop.Records*'
    CTSR_RUN_RECORD_DIR=/tmp/rec_new build/tests/ctsr_tests --gtest_filter='RunLoop.Records*'
    python3 scripts/compare_run_records.py /tmp/rec_old /tmp/rec_new [--renamed-scores]

Every tensor of every checkpoint and weights file must have the same bytes, every metadata entry
the same value (the resolved configuration excepted: a new key changes its text; a tensor's
checksum "crc32.<name>" is compared only when both builds record it), and every
metrics.jsonl line the same values (the timing field samples_per_s excepted). --renamed-scores maps
the full tier's score names from before issue 17 (ssim, psnr, ssim_ld, psnr_ld) to today's.
Exit status 1 when anything differs.
"""
import glob
import json
import os
import struct
import sys

RENAMED = {
    "diffusion": {"ssim": "ssim_sr", "psnr": "psnr_sr", "ssim_ld": "ssim_input_roundtrip",
                  "psnr_ld": "psnr_input_roundtrip"},
    "vqae": {"ssim": "ssim_roundtrip", "psnr": "psnr_roundtrip"},
}
UNTIMED = {"samples_per_s"}


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors = {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
               for k, v in header.items()}
    return tensors, meta


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    renamed = "--renamed-scores" in sys.argv
    if len(args) != 2:
        sys.exit(__doc__)
    old, new = args
    differences = files = tensors = lines = 0

    def differ(*what):
        nonlocal differences
        differences += 1
        print("differs:", *what)

    for task in ("diffusion", "vqae"):
        for path in sorted(glob.glob(f"{old}/{task}/**/*.safetensors", recursive=True)):
            if "/cache/" in path:
                continue
            other = new + path[len(old):]
            if not os.path.exists(other):
                differ(other, "missing")
                continue
            a, meta_a = read_safetensors(path)
            b, meta_b = read_safetensors(other)
            files += 1
            for name in sorted(set(a) | set(b)):
                tensors += 1
                if a.get(name) != b.get(name):
                    differ(other, "tensor", name)
            for key in sorted(set(meta_a) | set(meta_b)):
                if key.startswith("crc32.") and (key not in meta_a or key not in meta_b):
                    continue  # a tensor's checksum, recorded since issue 22: the tensors are compared above
                if "config" not in key and meta_a.get(key) != meta_b.get(key):
                    differ(other, "metadata", key)
        for path in sorted(glob.glob(f"{old}/{task}/**/metrics.jsonl", recursive=True)):
            other = new + path[len(old):]
            a = [json.loads(line) for line in open(path)]
            b = [json.loads(line) for line in open(other)] if os.path.exists(other) else []
            if len(a) != len(b):
                differ(other, f"{len(a)} lines against {len(b)}")
                continue
            for x, y in zip(a, b):
                lines += 1
                if renamed and x.get("tier") == "full":
                    x = {RENAMED[task].get(k, k): v for k, v in x.items()}
                for key in sorted((set(x) | set(y)) - UNTIMED):
                    if x.get(key) != y.get(key):
                        differ(other, "step", x.get("step"), key, x.get(key), y.get(key))
    print(f"{files} checkpoint and weights files ({tensors} tensors), {lines} metrics lines compared: "
          f"{differences} differences")
    sys.exit(1 if differences or not files else 0)


if __name__ == "__main__":
    main()
