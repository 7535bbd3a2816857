#!/usr/bin/python3
"""Weight-file fixtures for tests/test_torch_checkpoint.cpp, test_zip_archive.cpp, test_pickle.cpp
and test_safetensors.cpp, written by independent writers (torch.save, Python's zipfile and pickle,
and safetensors bytes assembled here by hand) so the C++ readers are not only tested against
themselves.

Writes tests/data/checkpoints/. Run by hand when the cases change (CI never runs it):
    apt-get install -y python3-torch         # Debian's PyTorch (CPU)
    /usr/bin/python3 tools/pytorch/make_checkpoint_fixtures.py

Files (all a few KB):
  lightning.ckpt        a Lightning-style torch.save checkpoint (pickle protocol 2): "state_dict"
                        (a real module's state dict, so the OrderedDict carries _metadata and
                        pickles with BUILD, plus float16 / bfloat16 / float64 / int64 / int32 /
                        uint8 tensors, a transposed view, an expanded view (stride 0), two views of
                        one storage at different offsets, a Parameter, a 0-d and an empty tensor)
                        and foreign objects the reader must skip: optimizer_states, lr_schedulers,
                        callbacks, hyper_parameters (an instance of a class defined here, which
                        pickles as a GLOBAL the reader does not know), loops, epoch, ...
  bare_state_dict.pt    a plain {name: tensor} dict, pickle protocol 5 (FRAME, MEMOIZE,
                        SHORT_BINUNICODE, STACK_GLOBAL)
  bare_state_dict_zip64.pt  the same archive rewritten by hand with ZIP64 fields everywhere
                        (0xFFFFFFFF in the 32-bit fields, zip64 extras, EOCD64 record and locator)
                        and data.pkl deflated
  legacy.pt             torch.save(..., _use_new_zipfile_serialization=False): must be refused (its
                        bytes change from run to run: the legacy format records object ids)
  misc.zip              Python's zipfile: a stored entry, a deflated entry, an archive comment
  pickle_p2.pkl .. pickle_p5.pkl   one plain Python value pickled with protocols 2, 3, 4, 5
  reference.safetensors safetensors bytes assembled here (header keys not in data order, no
                        padding of the header to 8 bytes, __metadata__ last)
  expected.txt          every tensor of every file: name, dtype, shape and all element values
                        (as the float64 / int value, printed exactly), and the skipped keys

expected.txt lines:
  file <name>
  tensor <name> <dtype> <ndim> <dims...> <values...>
  skipped <key>
  metadata <key> <value>        (safetensors __metadata__; value has no spaces)
  entry <name> <size> <crc32>   (zip entries of misc.zip)
"""

import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict

import torch

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "checkpoints")


class HParams:
    """Stands in for OmegaConf's DictConfig / Lightning's AttributeDict: a class the C++ reader
    has never heard of, pickled as GLOBAL '__main__ HParams' + NEWOBJ/REDUCE + BUILD."""

    def __init__(self):
        self.lr = 2.5e-4
        self.channels = (8, 16, 32)
        self.name = "vqae-3d"
        self.schedule = {"warmup": 500, "decay": "cosine", "flags": {True, False}}


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 3, kernel_size=(3, 1, 2), bias=True)
        self.norm = torch.nn.GroupNorm(1, 3)
        self.bn = torch.nn.BatchNorm1d(5)  # running_mean/var and an int64 0-d num_batches_tracked


def values_of(t):
    if t.dtype in (torch.int64, torch.int32, torch.uint8):
        return [str(int(v)) for v in t.reshape(-1).tolist()]
    # float16/bfloat16/float32 widen to float64 exactly; repr prints the shortest exact decimal.
    return [repr(float(v)) for v in t.to(torch.float64).reshape(-1).tolist()]


DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
               torch.bfloat16: "bfloat16", torch.int64: "int64", torch.int32: "int32", torch.uint8: "uint8"}


def tensor_line(name, t):
    return " ".join(["tensor", name, DTYPE_NAMES[t.dtype], str(t.dim())] + [str(d) for d in t.shape] + values_of(t))


def lightning_checkpoint(g):
    net = TinyNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        net.bn.running_mean.copy_(torch.randn(5, generator=g))
        net.bn.running_var.copy_(torch.rand(5, generator=g) + 0.5)
        net.bn.num_batches_tracked.fill_(17)
    state = net.state_dict()  # OrderedDict with _metadata
    base = torch.randn(3, 7, generator=g)
    state["decoder.proj.weight_t"] = base.t()                      # stride (1, 7): saved as-is
    state["decoder.gate"] = torch.randn(3, 1, generator=g).expand(3, 4)  # stride (1, 0)
    shared = torch.randn(23, generator=g)
    state["shared.head"] = shared[2:8]                             # offset 2 in one storage
    state["shared.tail"] = shared[11:20].view(3, 3)                # offset 11 in the same storage
    state["mixed.half"] = torch.randn(2, 3, generator=g).half()
    state["mixed.bf16"] = torch.randn(3, 2, generator=g).bfloat16()
    state["mixed.double"] = torch.randn(5, generator=g).double()
    state["mixed.index"] = torch.tensor([3, -1, 1 << 40, 0, 7], dtype=torch.int64)
    state["mixed.int32"] = torch.tensor([[-5, 6], [2147483647, -2147483648]], dtype=torch.int32)
    state["mixed.bytes"] = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    state["mixed.param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    state["mixed.empty"] = torch.zeros(0, 3)

    params = list(net.parameters())[:2]  # two are enough to show that optimizer storages are never read
    optimizer_state = {
        "state": {i: {"step": torch.tensor(3.0), "exp_avg": torch.randn(p.shape, generator=g),
                      "exp_avg_sq": torch.rand(p.shape, generator=g)} for i, p in enumerate(params)},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                          "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                          "params": list(range(len(params)))}],
    }
    checkpoint = {
        "epoch": 7,
        "global_step": 4242,
        "pytorch-lightning_version": "1.9.4",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.125), "best_model_path": "/runs/epoch=6.ckpt",
            "kth_value": torch.tensor(float("inf")), "dirpath": "/runs"}},
        "optimizer_states": [optimizer_state],
        "lr_schedulers": [{"last_epoch": 4242, "_last_lr": [0.001], "base_lrs": [0.001]}],
        "hparams_name": "kwargs",
        "hyper_parameters": HParams(),
        "random_state": 123456789012345678901234567890,  # LONG1 beyond 64 bits
        "raw": b"\x00\x01\xff",
    }
    skipped = [k for k in checkpoint if k != "state_dict"]
    return checkpoint, state, skipped


def bare_state_dict(g):
    state = OrderedDict()
    state["encoder.0.weight"] = torch.randn(4, 3, 1, 1, 2, generator=g)
    state["encoder.0.bias"] = torch.randn(4, generator=g)
    state["codebook.embeddings"] = torch.randn(5, 3, generator=g)
    state["codebook.N"] = torch.arange(5, dtype=torch.int64)
    state["decoder.scale"] = torch.randn(1, generator=g).double()
    return state


def rewrite_as_zip64(src_bytes):
    """Rewrites a stored zip with every size and offset moved into ZIP64 fields, data.pkl deflated."""
    src = zipfile.ZipFile(io.BytesIO(src_bytes))
    out = bytearray()
    central = []
    for info in src.infolist():
        data = src.read(info.filename)
        name = info.filename.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        method = 0
        payload = data
        if info.filename.endswith("/data.pkl"):
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
            method = 8
        offset = len(out)
        local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), len(local_extra)) + name + local_extra + payload
        central.append((name, method, crc, len(data), len(payload), offset))
    cd_start = len(out)
    for name, method, crc, usize, csize, offset in central:
        extra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0x21, crc, 0xFFFFFFFF,
                           0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name + extra
    cd_size = len(out) - cd_start
    eocd64_offset = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(central), len(central), cd_size, cd_start)
    out += struct.pack("<IIQI", 0x07064B50, 0, eocd64_offset, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def safetensors_bytes(g):
    """Bytes of a safetensors file, assembled by hand from the format's definition."""
    tensors = [
        ("alpha", torch.randn(3, 5, generator=g), "F32"),
        ("beta", torch.randn(7, generator=g).double(), "F64"),
        ("gamma", torch.randn(2, 3, generator=g).half(), "F16"),
        ("delta", torch.randn(5, generator=g).bfloat16(), "BF16"),
        ("epsilon", torch.tensor([-3, 9, 2147483647], dtype=torch.int32), "I32"),
        ("zeta", torch.tensor([[1, -(1 << 50)], [5, 6]], dtype=torch.int64), "I64"),
        ("eta", torch.tensor([7, 0, 255], dtype=torch.uint8), "U8"),
        ("theta", torch.randn(1, generator=g), "F32"),
    ]
    data = bytearray()
    header = {}
    for name, t, code in tensors:
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    metadata = {"format": "pt", "source": "make_checkpoint_fixtures.py"}
    # Header keys in an order unrelated to the data order; __metadata__ last; no padding.
    ordered = {name: header[name] for name in sorted(header, reverse=True)}
    ordered["__metadata__"] = metadata
    text = json.dumps(ordered, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data), tensors, metadata


def pickle_value():
    shared = [1, 2, 3]
    return {
        "none": None, "true": True, "false": False,
        "ints": [0, 1, -1, 255, 256, 65535, 65536, -129, 2147483647, -2147483648, 1 << 40, -(1 << 62),
                 1 << 63, 1 << 100],
        "floats": (0.5, -2.25, 1e300, 3.141592653589793),
        "text": "héllo wörld", "bytes": b"\x00\xffab",
        "nested": {"a": (1, ("b", [shared, shared])), 7: "seven"},
        "ordered": OrderedDict([("z", 1), ("y", 2)]),
        "set": {5},
        "object": HParams(),
        "empty": ((), [], {}),
    }


def write(name, data):
    path = os.path.join(OUT_DIR, name)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def saved(obj, **kwargs):
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(20240611)
    os.makedirs(OUT_DIR, exist_ok=True)
    lines = [
        "# Expected contents of the fixtures in this directory: written by tools/pytorch/make_checkpoint_fixtures.py",
        f"# torch {torch.__version__}; line formats are in that script's docstring.",
    ]

    checkpoint, state, skipped = lightning_checkpoint(g)
    write("lightning.ckpt", saved(checkpoint))
    lines.append("file lightning.ckpt")
    lines += [tensor_line(k, v) for k, v in state.items()]
    lines += [f"skipped {k}" for k in skipped]

    bare = bare_state_dict(g)
    bare_bytes = saved(bare, pickle_protocol=5)
    write("bare_state_dict.pt", bare_bytes)
    write("bare_state_dict_zip64.pt", rewrite_as_zip64(bare_bytes))
    for name in ("bare_state_dict.pt", "bare_state_dict_zip64.pt"):
        lines.append(f"file {name}")
        lines += [tensor_line(k, v) for k, v in bare.items()]

    write("legacy.pt", saved({"w": torch.ones(2)}, _use_new_zipfile_serialization=False))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        stored = b"stored bytes, read as a byte range\n"
        deflated = b"".join(b"line %d of a text that deflate shrinks well\n" % i for i in range(60))
        z.writestr(zipfile.ZipInfo("dir/stored.txt"), stored, compress_type=zipfile.ZIP_STORED)
        z.writestr(zipfile.ZipInfo("dir/deflated.txt"), deflated, compress_type=zipfile.ZIP_DEFLATED)
        z.comment = b"an archive comment"
    write("misc.zip", buf.getvalue())
    lines.append("file misc.zip")
    lines.append(f"entry dir/stored.txt {len(stored)} {zlib.crc32(stored)}")
    lines.append(f"entry dir/deflated.txt {len(deflated)} {zlib.crc32(deflated)}")

    for protocol in (2, 3, 4, 5):
        write(f"pickle_p{protocol}.pkl", pickle.dumps(pickle_value(), protocol=protocol))

    st_bytes, st_tensors, st_metadata = safetensors_bytes(g)
    write("reference.safetensors", st_bytes)
    lines.append("file reference.safetensors")
    lines += [tensor_line(name, t) for name, t, _ in st_tensors]
    lines += [f"metadata {k} {v}" for k, v in st_metadata.items()]

    path = os.path.join(OUT_DIR, "expected.txt")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {os.path.normpath(OUT_DIR)}", file=sys.stderr)


if __name__ == "__main__":
    main()
