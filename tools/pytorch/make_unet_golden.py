#!/usr/bin/python3
"""Golden data for tests/test_unet_golden.cpp: the UNet's output, input gradient and every
parameter gradient, computed in float64 by the independent PyTorch model of unet_model.py.

Two configurations (tests/data/unet/<case>/):
  parity      test_unet.cpp's parity_config(): in 16, out 8, model_channels 16, channel_mult [1, 2],
              1 block, attention [false, true], head_channels 32, time_embed_dim 24, norm_groups 4
  two_blocks  in 16, out 8, model_channels 32, channel_mult [1, 2], 2 blocks, attention on both
              levels (one head of 32 at level 0, two at level 1), time_embed_dim 40, norm_groups 8
Both: batch 2 on a 5 x 3 x 7 grid, t = [3, 917], dropout off (eval), every parameter random and
non-zero (the spec's zero-initialised layers included: zeros there would hide most of the graph),
L = sum(y * dy) for a given dy.

Weights, x and dy are not stored: they come from an integer recipe that the C++ test repeats
exactly (the weights of these networks alone would be several megabytes):
  fnv1a64(s)      64-bit FNV-1a of the UTF-8 bytes of s
  bits(key, i)    the i-th output (i = 0, 1, ...) of splitmix64 seeded with key:
                  z = key + (i + 1) * 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
                  z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^ z >> 31   (all mod 2^64)
  value(key, i)   (2 * (bits >> 48) - 65535) / 65536: in (-1, 1), never 0, 16 significant bits
  a parameter named p (ctsr's name and layout, C order): element i is, with v = value(fnv1a64(p), i),
                  GroupNorm weight (any 1-D ".weight"): 1 + v / 4;  GroupNorm bias: v / 4;
                  conv and linear weights and biases: v * 2^-e, e = floor(log2(fan_in)) // 2,
                  fan_in = numel(weight) / weight.shape[0] (so about 1/sqrt(fan_in), PyTorch's scale)
  x  [N, D, H, W, in_channels] (channels-last, C order): value(fnv1a64("x"), i)
  dy [N, D, H, W, out_channels]:                         value(fnv1a64("dy"), i)
Every one of these numbers is exact in float32, so the float32 and float64 runs see the same inputs.

Files:
  y.npy, dx.npy       float64, channels-last [N, D, H, W, C]
  grads.safetensors   written here (8-byte LE header length, JSON header, raw bytes), float64:
                      grad/<name>    the whole gradient, ctsr's layout, for tensors of <= 1024 elements
                      sketch/<name>  [32] for larger ones: sum_i s_k(i) g_i, k < 32, with the signs
                                     s_k(i) = +1 when bits(fnv1a64(name + "#" + str(k)), i) >> 63 is 1,
                                     else -1, over the gradient in ctsr's layout, C order
                      norm/<name>    [1] its L2 norm
                      Random-sign sketches preserve squared norms in expectation (E <e, s>^2 = |e|^2),
                      so sqrt(mean_k (sketch_k(g) - sketch_k(g_ref))^2) / |g_ref| estimates the
                      relative L2 error of a gradient g without storing g_ref (exactly, for an error
                      in one element; within about 30% with 32 projections otherwise).
                      __metadata__: config (JSON, the spec's keys), grid, timesteps, projections,
                      full_max_elements, torch version.
  ../cost.json        parameter counts and forward multiply-adds (COST_CASES below), for bench/unet_cost.h
  ../README.txt       the figures of the last run
Optionally --full DIR also writes DIR/<case>/weights.safetensors (float32, ctsr's names and layout)
and DIR/<case>/grads_full.safetensors (every gradient, float64) for investigating a mismatch.

Run by hand when the model or the recipe changes (CI never runs it):
    apt-get install -y python3-torch python3-numpy
    /usr/bin/python3 tools/pytorch/make_unet_golden.py [--full DIR]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_unet_step  # noqa: E402
import unet_model as ref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "data", "unet")

GRID = (2, 5, 3, 7)  # N, D, H, W
TIMESTEPS = [3, 917]
PROJECTIONS = 32
FULL_MAX_ELEMENTS = 1024

CASES = {
    "parity": ref.UNetConfig(in_channels=16, out_channels=8, model_channels=16, channel_mult=[1, 2], num_blocks=1,
                             attention_levels=[False, True], head_channels=32, time_embed_dim=24, dropout=0.1,
                             norm_groups=4),
    "two_blocks": ref.UNetConfig(in_channels=16, out_channels=8, model_channels=32, channel_mult=[1, 2], num_blocks=2,
                                 attention_levels=[True, True], head_channels=32, time_embed_dim=40, dropout=0.1,
                                 norm_groups=8),
}

# Configurations whose parameter count and forward multiply-adds (per sample, from the forward
# hooks of unet_model.count_forward_macs on the meta device) go to cost.json, for the
# analytic count of bench/unet_cost.h: the production network, ctsr_bench's tiny case, and the
# network the C++ test also counts by hand.
COST_CASES = {
    "production": (ref.UNetConfig(), (25, 16, 16)),
    "bench_tiny": (ref.UNetConfig(**bench_unet_step.TINY), (5, 4, 4)),
    "hand": (ref.UNetConfig(in_channels=2, out_channels=1, model_channels=4, channel_mult=[1, 2], num_blocks=1,
                            attention_levels=[False, True], head_channels=4, time_embed_dim=6, norm_groups=2), (3, 2, 2)),
}

# ---- the integer recipe ---------------------------------------------------------------------------

MASK64 = (1 << 64) - 1


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def bits(key, n):
    """splitmix64 outputs 0..n-1 for the seed key, as uint64 (numpy wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def values(key, n):
    u = (bits(key, n) >> np.uint64(48)).astype(np.int64)
    return (2 * u - 65535).astype(np.float64) / 65536.0


def signs(key, n):
    return np.where((bits(key, n) >> np.uint64(63)) == 1, 1.0, -1.0)


def recipe_tensor(key_text, shape):
    return values(fnv1a64(key_text), int(np.prod(shape))).reshape(shape)


def recipe_parameters(shapes):
    """{name: float64 array in ctsr's layout} for {name: shape (ctsr's layout)}."""
    out = {}
    for name, shape in shapes.items():
        v = recipe_tensor(name, shape)
        owner = name.rsplit(".", 1)[0]
        weight_shape = shapes[owner + ".weight"]
        if len(weight_shape) == 1:  # GroupNorm affine
            out[name] = 1.0 + v / 4.0 if name.endswith(".weight") else v / 4.0
        else:
            fan_in = int(np.prod(weight_shape)) // weight_shape[0]
            exponent = (fan_in.bit_length() - 1) // 2
            out[name] = v * 2.0 ** -exponent
    return out


def sketch(name, g):
    flat = g.reshape(-1)
    return np.array([np.dot(signs(fnv1a64(f"{name}#{k}"), flat.size), flat) for k in range(PROJECTIONS)])


# ---- files ------------------------------------------------------------------------------------------

DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32"}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, numpy array); little-endian, data in list order, header padded to 8."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors:
        array = np.ascontiguousarray(array)
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def save_npy(path, array):
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


# ---- the golden run ---------------------------------------------------------------------------------

def channels_first(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 4, 1, 2, 3)


def channels_last(t):
    return t.detach().permute(0, 2, 3, 4, 1).contiguous().numpy()


def check_reference(cfg):
    """What the model's pieces must satisfy, independent of the golden numbers."""
    # The spec's nearest rule is PyTorch's 'nearest' at the sizes the up path meets.
    x = torch.randn(1, 2, 3, 2, 4, dtype=torch.float64)
    assert torch.equal(ref.nearest_resize(x, (5, 3, 7)), F.interpolate(x, size=(5, 3, 7), mode="nearest"))
    # Zero initialisation makes the untrained network output zeros.
    zero = ref.UNet3D(cfg).double().eval()
    y = zero(torch.randn(1, cfg.in_channels, 3, 3, 3, dtype=torch.float64), torch.tensor([5]))
    assert torch.count_nonzero(y) == 0


def run_case(case, cfg, full_dir):
    check_reference(cfg)
    model = ref.UNet3D(cfg, zero_init=False).double().eval()
    shapes = {name: tuple(ref.to_ctsr_layout(name, p.detach()).shape) for name, p in model.named_parameters()}
    weights = recipe_parameters(shapes)
    ref.import_state_dict(model, {k: torch.from_numpy(v) for k, v in weights.items()})
    for name, p in ref.export_state_dict(model).items():  # the round trip is the identity
        assert np.array_equal(p.numpy(), weights[name]), name
        assert np.array_equal(p.numpy().astype(np.float32).astype(np.float64), weights[name]), name + " not exact in float32"

    n, d, h, w = GRID
    x_last = recipe_tensor("x", (n, d, h, w, cfg.in_channels))
    dy_last = recipe_tensor("dy", (n, d, h, w, cfg.out_channels))
    x = channels_first(x_last).clone().requires_grad_(True)
    dy = channels_first(dy_last)
    t = torch.tensor(TIMESTEPS, dtype=torch.int64)
    model.zero_grad()
    y = model(x, t)
    (y * dy).sum().backward()
    grads = {name: g.numpy() for name, g in ref.export_state_dict(model, grads=True).items()}

    tensors, full_count, sketched = [], 0, 0
    for name, g in grads.items():
        assert np.linalg.norm(g) > 0, f"{name}: the gradient is zero"
        if g.size <= FULL_MAX_ELEMENTS:
            tensors.append(("grad/" + name, g))
            full_count += 1
        else:
            tensors.append(("sketch/" + name, sketch(name, g)))
            tensors.append(("norm/" + name, np.array([np.linalg.norm(g)])))
            sketched += 1
    metadata = {
        "config": json.dumps({k: v for k, v in vars(cfg).items()}),
        "grid": json.dumps(list(GRID)),
        "timesteps": json.dumps(TIMESTEPS),
        "projections": str(PROJECTIONS),
        "full_max_elements": str(FULL_MAX_ELEMENTS),
        "torch": torch.__version__,
    }
    out = os.path.join(OUT, case)
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "grads.safetensors"), tensors, metadata)
    save_npy(os.path.join(out, "y.npy"), channels_last(y))
    save_npy(os.path.join(out, "dx.npy"), channels_last(x.grad))
    if full_dir:
        os.makedirs(os.path.join(full_dir, case), exist_ok=True)
        write_safetensors(os.path.join(full_dir, case, "weights.safetensors"),
                          [(k, v.astype(np.float32)) for k, v in weights.items()], {"case": case})
        write_safetensors(os.path.join(full_dir, case, "grads_full.safetensors"), list(grads.items()), {"case": case})
    summary = (f"{case}: {ref.count_parameters(model)} parameters in {len(grads)} tensors ({full_count} stored whole, "
               f"{sketched} as sketches); |y| {np.linalg.norm(y.detach().numpy()):.6g}, "
               f"|dx| {np.linalg.norm(x.grad.numpy()):.6g}")
    print(summary)
    return summary


def write_costs():
    costs = {}
    for case, (cfg, (d, h, w)) in COST_CASES.items():
        model = ref.UNet3D(cfg, zero_init=False).to("meta")
        x = torch.empty(1, cfg.in_channels, d, h, w, device="meta")
        macs = ref.count_forward_macs(model, x, torch.zeros(1, dtype=torch.int64, device="meta"))
        costs[case] = {"config": vars(cfg), "grid": [d, h, w], "parameters": ref.count_parameters(model),
                       "forward_macs_per_sample": macs}
        print(f"{case}: {costs[case]['parameters']} parameters, {macs} multiply-adds per sample forward")
    tmp = os.path.join(OUT, "cost.json.tmp")
    with open(tmp, "w") as f:
        json.dump(costs, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(OUT, "cost.json"))
    return costs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", metavar="DIR", help="also write the weights and every whole gradient under DIR")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    lines = [run_case(case, cfg, args.full) for case, cfg in CASES.items()]
    costs = write_costs()
    with open(os.path.join(OUT, "README.txt"), "w") as f:
        f.write(f"Made by tools/pytorch/make_unet_golden.py (torch {torch.__version__}); the recipe and the file\n"
                f"layout are described there. Batch {GRID[0]}, grid {GRID[1]} x {GRID[2]} x {GRID[3]}, t = {TIMESTEPS}, float64.\n")
        for line in lines:
            f.write(line + "\n")
        f.write("cost.json: parameters and forward multiply-adds per sample (forward hooks) of: " +
                ", ".join(f"{k} {v['parameters']} / {v['forward_macs_per_sample']}" for k, v in costs.items()) + "\n")


if __name__ == "__main__":
    main()
