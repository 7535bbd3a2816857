#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses, fuzz/corpus/<harness>/ (FUZZING.md).

Each corpus holds small valid files, as ctsr's writers and PyTorch / NumPy / nibabel write them,
and near misses (one thing wrong) that reach the readers' checks. Deterministic: rerunning it
rewrites the same bytes (torch.save's serialization id aside, which it replaces).

    python3 fuzz/make_corpus.py            # needs numpy, nibabel and torch

The DICOM seeds are copies and byte patches of tests/data/dicom/ (tools/pytorch/make_dicom_fixtures.py).
"""
import gzip
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
import zlib
from collections import OrderedDict

import nibabel as nib
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(harness, name, data):
    folder = os.path.join(CORPUS, harness)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- safetensors -------------------------------------------------------------------------------
SAFETENSORS_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I32": "<i4", "I64": "<i8", "U8": "u1"}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype code, shape, bytes). Laid out as ctsr's writer does."""
    header, blobs, offset = OrderedDict(), [], 0
    for name, code, shape, data in tensors:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def array_bytes(code, shape, start=0):
    n = int(np.prod(shape)) if shape else 1
    if code == "BF16":
        return (np.arange(start, start + n, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.arange(start, start + n).astype(SAFETENSORS_DTYPES[code]).tobytes()


def make_safetensors():
    h = "safetensors"
    put(h, "checkpoint", safetensors(
        [("model/conv.weight", "F32", [2, 1, 1, 1, 2], array_bytes("F32", [2, 1, 1, 1, 2])),
         ("model/conv.bias", "F32", [2], array_bytes("F32", [2], 5)),
         ("adam_m/conv.bias", "F32", [2], array_bytes("F32", [2]))],
        {"format": "ctsr-train-checkpoint/1", "kind": "diffusion", "state.step": "10", "rng.seed": "1234"}))
    put(h, "cache_entry", safetensors(
        [("ld_latent", "F32", [2, 1, 2, 2], array_bytes("F32", [2, 1, 2, 2])),
         ("hd_latent", "F32", [2, 1, 2, 2], array_bytes("F32", [2, 1, 2, 2], 3))],
        {"format": "ctsr-latent-pair/1", "id": "p1", "hu_window": "-200,200", "patch_size": "0",
         "latent_min": "-1.5", "latent_max": "2.25", "weights": "vqae.safetensors"}))
    put(h, "every_dtype", safetensors(
        [(code.lower(), code, [3], array_bytes(code, [3])) for code in ["F64", "BF16", "F16", "I32", "I64", "U8"]]))
    put(h, "scalar_and_empty", safetensors(
        [("scalar", "F32", [], array_bytes("F32", [])), ("empty", "F32", [0, 3], b""),
         ("six_dims", "U8", [1, 1, 1, 1, 2, 1], b"\x01\x02")]))
    put(h, "empty_header", safetensors([], pad=False))
    put(h, "metadata_only", safetensors([], {"a": "b", "": "", "unicode": "\u00e9\u4e2d"}))
    # Near misses.
    good = safetensors([("x", "F32", [2], array_bytes("F32", [2]))])
    put(h, "header_longer_than_file", struct.pack("<Q", 1 << 40) + good[8:])
    put(h, "truncated_data", good[:-3])
    put(h, "bad_dtype", safetensors([("x", "F8", [2], b"\x00" * 2)]))
    put(h, "bytes_not_shape", safetensors([("x", "F32", [3], array_bytes("F32", [2]))]))
    overlap = json.dumps({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                          "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}).encode()
    put(h, "overlapping", struct.pack("<Q", len(overlap)) + overlap + bytes(range(6)))
    put(h, "metadata_not_string", safetensors([], {"step": 3}))
    put(h, "seven_dims", safetensors([("x", "U8", [1] * 7, b"\x00")]))
    huge = json.dumps({"x": {"dtype": "F32", "shape": [4294967296, 4294967296],
                             "data_offsets": [0, 0]}}).encode()
    put(h, "huge_shape", struct.pack("<Q", len(huge)) + huge)
    put(h, "not_json", struct.pack("<Q", 5) + b"{abc}")
    put(h, "nested", struct.pack("<Q", 24) + b'{"x":[[[[[[[[[1]]]]]]]]]}')


# ---- .npy --------------------------------------------------------------------------------------
def npy(array, version=None):
    f = io.BytesIO()
    if version is None:
        np.save(f, array)
    else:
        np.lib.format.write_array(f, array, version=version)
    return f.getvalue()


def npy_header(header_text, data, version=1):
    """A hand-made .npy: magic, version, header length, the dict text padded, then data."""
    text = header_text.encode()
    length_size = 2 if version == 1 else 4
    pad = -(6 + 2 + length_size + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    length = struct.pack("<H" if version == 1 else "<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + length + text + data


def make_npy():
    h = "npy"
    put(h, "f4_3d", npy(np.arange(24, dtype="<f4").reshape(2, 3, 4) / 7))
    put(h, "f8_3d", npy(np.linspace(-1, 1, 8).reshape(2, 2, 2)))
    put(h, "f2_latent_4d", npy(np.ones((2, 1, 2, 2), dtype="<f2")))
    put(h, "i4_2d", npy(np.arange(6, dtype="<i4").reshape(2, 3)))
    put(h, "i8_1d", npy(np.array([-(2 ** 62), 0, 7], dtype="<i8")))
    put(h, "u1_3d", npy(np.arange(8, dtype="u1").reshape(2, 2, 2)))
    put(h, "scalar", npy(np.float32(3.5)))
    put(h, "empty", npy(np.zeros((0, 3, 4), dtype="<f4")))
    put(h, "version2", npy(np.ones((1, 2, 2), dtype="<f4"), version=(2, 0)))
    put(h, "version3", npy(np.ones((2, 1, 1), dtype="<f4"), version=(3, 0)))
    # Near misses.
    put(h, "fortran_order", npy(np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3))))
    put(h, "big_endian", npy(np.arange(4, dtype=">f4").reshape(1, 2, 2)))
    put(h, "int16", npy(np.arange(8, dtype="<i2").reshape(2, 2, 2)))
    put(h, "truncated", npy(np.arange(8, dtype="<f4").reshape(2, 2, 2))[:-5])
    put(h, "trailing_bytes", npy(np.arange(8, dtype="<f4").reshape(2, 2, 2)) + b"\x00" * 4)
    put(h, "seven_dims", npy(np.zeros((1,) * 7, dtype="u1")))
    put(h, "key_twice", npy_header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                                   b"\x00" * 4))
    put(h, "negative_dim", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 2), }", b""))
    put(h, "large_shape", npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536, 65536), }",
                                     b"\x00" * 16))
    put(h, "no_shape", npy_header("{'descr': '<f4', 'fortran_order': False, }", b"\x00" * 4))
    put(h, "bad_magic", b"\x93NUMPX" + npy(np.zeros(2, dtype="<f4"))[6:])


# ---- NIfTI -------------------------------------------------------------------------------------
def nifti(array, version=1, slope=None, inter=None, affine=None, zooms=None):
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = cls(array, np.diag([1.5, 2.0, 0.5, 1.0]) if affine is None else affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    return img.to_bytes()


def make_nifti():
    h = "nifti"
    put(h, "n1_f4", nifti(np.arange(24, dtype="<f4").reshape(4, 3, 2) * 10 - 100))
    put(h, "n1_i2_scaled", nifti(np.arange(8, dtype="<i2").reshape(2, 2, 2), slope=0.5, inter=-1024))
    put(h, "n1_u1", nifti(np.arange(8, dtype="u1").reshape(2, 2, 2)))
    put(h, "n1_f8_4d_one", nifti(np.ones((2, 2, 1, 1), dtype="<f8")))
    rotated = np.array([[0, -1.0, 0, 10], [1.0, 0, 0, -5], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    put(h, "n1_i4_rotated", nifti(np.arange(8, dtype="<i4").reshape(2, 2, 2), affine=rotated))
    put(h, "n2_f4", nifti(np.arange(8, dtype="<f4").reshape(2, 2, 2), version=2))
    put(h, "n2_u2", nifti(np.arange(12, dtype="<u2").reshape(3, 2, 2), version=2))
    put(h, "n1_f4.gz", gzip.compress(nifti(np.arange(8, dtype="<f4").reshape(2, 2, 2)), mtime=0))
    put(h, "n2_i2.gz", gzip.compress(nifti(np.arange(8, dtype="<i2").reshape(2, 2, 2), version=2), mtime=0))
    # Near misses.
    put(h, "series_4d", nifti(np.zeros((2, 2, 2, 2), dtype="u1")))
    put(h, "two_d", nifti(np.zeros((2, 2), dtype="u1")))
    put(h, "complex", nifti(np.zeros((2, 2, 2), dtype=np.complex64)))
    put(h, "truncated", nifti(np.arange(27, dtype="<f4").reshape(3, 3, 3))[:-10])
    put(h, "truncated.gz", gzip.compress(nifti(np.arange(27, dtype="<f4").reshape(3, 3, 3)), mtime=0)[:-20])
    big_endian = bytearray(nifti(np.arange(8, dtype=">i2").reshape(2, 2, 2)))
    put(h, "n1_big_endian", bytes(big_endian))
    low_offset = bytearray(nifti(np.arange(8, dtype="u1").reshape(2, 2, 2)))
    struct.pack_into("<f", low_offset, 108, 100.0)  # vox_offset inside the header
    put(h, "vox_offset_in_header", bytes(low_offset))
    analyze = nib.AnalyzeHeader()
    analyze.set_data_shape((2, 2, 2))
    analyze.set_data_dtype(np.uint8)
    put(h, "analyze", analyze.binaryblock + bytes(8))
    put(h, "short", b"\x5c\x01\x00")


# ---- torch.save --------------------------------------------------------------------------------
def torch_bytes(obj, **kwargs):
    f = io.BytesIO()
    torch.save(obj, f, **kwargs)
    data = f.getvalue()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return data  # the legacy format
    # Replace the random serialization id (torch >= 2.2) so the file is the same every run.
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    if any(n.endswith("/.data/serialization_id") for n in names):
        data = rezip(data, lambda name, content: b"0" * len(content) if name.endswith("serialization_id") else content,
                     zipfile.ZIP_STORED)
    return data


def rezip(data, change, method, add=(), **kwargs):
    """The archive again with `method`, each entry's bytes through change(name, bytes), plus `add`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", method, **kwargs) as dst:
        entries = [(info.filename, change(info.filename, src.read(info.filename))) for info in src.infolist()]
        for name, content in entries + list(add):
            new = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            new.compress_type = method
            dst.writestr(new, content)
    return out.getvalue()


def storage_tensors():
    """Tensors whose storages hold 64 bytes each, the storages fuzz/torch_pickle.cpp supplies."""
    base = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    return OrderedDict([
        ("conv.weight", base),
        ("conv.weight_t", base.t()),
        ("row_expanded", base[1].expand(3, 4)),
        ("f64", torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(2, 4)),
        ("f16", torch.ones(32, dtype=torch.float16)),
        ("bf16", torch.zeros(4, 8, dtype=torch.bfloat16)),
        ("i64", torch.arange(8)),
        ("u8", torch.arange(64, dtype=torch.uint8).reshape(4, 4, 4)),
        ("i32", torch.arange(16, dtype=torch.int32)),
    ])


def make_torch():
    torch.manual_seed(0)
    h = "torch_checkpoint"
    linear = torch.nn.Linear(3, 2)
    put(h, "state_dict", torch_bytes(linear.state_dict()))
    lightning = {"epoch": 3, "global_step": 30, "pytorch-lightning_version": "2.1.0",
                 "state_dict": OrderedDict((k, v) for k, v in storage_tensors().items() if k != "bf16"),
                 "hyper_parameters": {"lr": 1e-4, "layers": [1, 2]}, "optimizer_states": [{"state": {}}]}
    put(h, "lightning", torch_bytes(lightning))
    put(h, "parameter", torch_bytes({"w": torch.nn.Parameter(torch.ones(2, 2))}))
    put(h, "deflated", rezip(torch_bytes({"x": torch.arange(6.0)}), lambda n, c: c, zipfile.ZIP_DEFLATED))
    put(h, "zip64", rezip(torch_bytes({"x": torch.arange(4.0)}), lambda n, c: c, zipfile.ZIP_STORED,
                          allowZip64=True))
    # Near misses.
    # The start of a legacy (pre-1.6) torch.save file: its pickled magic number, protocol version and
    # system info (what torch writes; the rest names storages by object id, so it differs per run).
    put(h, "legacy", b"".join(pickle.dumps(x, protocol=2) for x in [
        0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True,
                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}]))
    put(h, "no_pickle", rezip(torch_bytes({"x": torch.zeros(2)}),
                              lambda n, c: c, zipfile.ZIP_STORED).replace(b"data.pkl", b"data.pkx"))
    put(h, "little_endian", rezip(torch_bytes({"x": torch.zeros(2)}), lambda n, c: c, zipfile.ZIP_STORED,
                                  add=[("archive/byteorder", b"little")]))
    put(h, "big_endian", rezip(torch_bytes({"x": torch.zeros(2)}), lambda n, c: c, zipfile.ZIP_STORED,
                               add=[("archive/byteorder", b"big")]))
    put(h, "not_a_dict", torch_bytes([torch.zeros(2)]))
    put(h, "empty_zip", b"PK\x05\x06" + b"\x00" * 18)
    bad_crc = bytearray(torch_bytes({"x": torch.arange(4.0)}))
    where = bad_crc.find(b"\x00\x00\x80\x3f")  # the float 1.0 in the storage
    bad_crc[where + 3] ^= 0x01
    put(h, "bad_crc", bytes(bad_crc))

    h = "torch_pickle"
    # data.pkl of checkpoints whose storages are keys 0.. of 64 bytes each.
    def pickle_of(obj):
        with zipfile.ZipFile(io.BytesIO(torch_bytes(obj))) as z:
            return z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
    put(h, "state_dict.pkl", pickle_of(storage_tensors()))
    put(h, "lightning.pkl", pickle_of({"state_dict": OrderedDict(list(storage_tensors().items())[:3]),
                                       "epoch": 1, "callbacks": {"ModelCheckpoint": {"best": None}}}))
    put(h, "parameters.pkl", pickle_of(OrderedDict(
        [("w", torch.nn.Parameter(torch.arange(16.0))), ("b", torch.nn.Parameter(torch.ones(8, dtype=torch.float64)))])))
    # Plain pickles of every protocol: not checkpoints, but every opcode family.
    plain = {"int": 7, "neg": -300000, "big": 2 ** 70, "float": 0.25, "str": "\u00e9x", "bytes": b"\x00\xff",
             "list": [1, [2, (3, None)], True, False], "set": {1, 2}, "frozen": frozenset([3]), "tuple": (1, 2, 3, 4)}
    for protocol in range(0, 6):
        put(h, f"plain_protocol{protocol}.pkl", pickle.dumps(plain, protocol=protocol))
    put(h, "reduce_os_system.pkl", b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    put(h, "memo_cycle.pkl", pickle.dumps((lambda l: (l.append(l), l)[1])([]), protocol=2))


# ---- ctsr_train's configuration ----------------------------------------------------------------
def make_train_config():
    h = "train_config"
    root = os.path.join(HERE, "..", "configs")
    with open(os.path.join(root, "tiny.yaml")) as f:
        tiny = f.read()
    put(h, "tiny.yaml", tiny)
    put(h, "tiny_with_overrides.yaml", tiny + "#--set\ntraining.max_steps=200\nmodel.channel_mult=[1, 2]\n"
        "model.attention_levels=[false, true]\ndiffusion.beta_schedule=cosine\ntraining.learning_rate=2e-4\n")
    put(h, "minimal.yaml", "training:\n  max_steps: 10\n")
    put(h, "empty.yaml", "")
    put(h, "overrides_only.yaml", "#--set\nseed=7\nvalidation.use_ema=false\noutput.dir=runs/x\nkernels.conv=cudnn\n")
    put(h, "flow_and_anchors.yaml", "model: {model_channels: &w 32, norm_groups: 8, channel_mult: [1, 2],\n"
        "        attention_levels: [false, true], head_channels: *w}\ndiffusion: {sampler: ddpm, timesteps: 50}\n")
    put(h, "all_sections.yaml", "seed: 1\nmodel:\n  dropout: 0.1\n  norm_eps: 1.0e-6\ndiffusion:\n"
        "  prediction_type: v\n  clip_sample: true\ndata:\n  cache_dir: c\n  prefetch_batches: 1\ntraining:\n"
        "  batch_size: 4\n  gradient_accumulation_steps: 2\n  lr_scheduler: cosine\n  latent_crop: 8\n"
        "optimizer:\n  beta1: 0.8\nema:\n  decay: 0.99\n  warmup: false\nvalidation:\n  light_every: 0\n"
        "  full_every: 0\noutput:\n  dir: out\ndistributed:\n  zero1: true\n  bucket_mb: 4\nkernels:\n  conv: custom\n")
    # Near misses.
    put(h, "unknown_key.yaml", "training:\n  max_step: 10\n")
    put(h, "wrong_type.yaml", "training:\n  batch_size: [1, 2]\n")
    put(h, "not_a_map.yaml", "- a\n- b\n")
    put(h, "bad_combination.yaml", "training:\n  batch_size: 5\n  gradient_accumulation_steps: 2\n")
    put(h, "bad_override.yaml", "#--set\ntraining.max_steps\nmodel.channel_mult=[1, [2]]\n")
    put(h, "tabs_and_quotes.yaml", "output:\n  dir: 'a: b'\ndata: {cache_dir: \"x\\ty\"}\n")


# ---- pairs lists -------------------------------------------------------------------------------
def make_pairs_csv():
    h = "pairs_csv"
    put(h, "phantom.csv", "id,ld,hd\n" + "".join(
        f"phantom_{i:04d},ld/phantom_{i:04d}.nii.gz,hd/phantom_{i:04d}.nii.gz\n" for i in range(4)))
    put(h, "with_split.csv", "id,ld,hd,split\na,ld/a.nii.gz,hd/a.nii.gz,train\nb,ld/b.npy,hd/b.npy,val\n"
        "c,/abs/ld/c.nii,/abs/hd/c.nii,\n")
    put(h, "no_id.csv", "ld,hd\nld/x.nii.gz,hd/x.nii.gz\nld/y.npy,hd/y.npy\n")
    put(h, "crlf_spaces.csv", "hd , ld ,id\r\n hd/1.nii , ld/1.nii , one \r\n\r\nhd/2.nii,ld/2.nii,two\r\n")
    # Near misses.
    put(h, "no_hd_column.csv", "id,ld\na,ld/a.nii\n")
    put(h, "repeated_id.csv", "id,ld,hd\na,l1,h1\na,l2,h2\n")
    put(h, "bad_split.csv", "ld,hd,split\nl,h,test\n")
    put(h, "field_count.csv", "id,ld,hd\na,l,h,extra\n")
    put(h, "id_with_slash.csv", "id,ld,hd\n../x,l,h\n")
    put(h, "header_only.csv", "id,ld,hd\n")
    put(h, "empty.csv", "")


# ---- cache entry and checkpoint metadata -------------------------------------------------------
def lines(pairs):
    return "".join(f"{k}={v}\n" for k, v in pairs)


def make_metadata():
    h = "cache_entry"
    entry = [("format", "ctsr-latent-pair/1"), ("id", "phantom_0001"), ("ld_path", "data/ld/phantom_0001.nii.gz"),
             ("hd_path", "data/hd/phantom_0001.nii.gz"), ("volume_shape", "64,64,64"),
             ("spacing_xyz", "0.69999999999999996,0.69999999999999996,1.25"),
             ("affine", "-0.7,0,0,22.05,0,-0.7,0,22.05,0,0,1.25,-39.375,0,0,0,1"), ("normalized", "true"),
             ("latent_min", "-3.1234567890123457"), ("latent_max", "2.5"), ("hu_window", "-200,200"),
             ("patch_size", "64"), ("weights", "vqae_phantom_4x.safetensors"),
             ("weights_digest", "0123456789abcdef"), ("split", "train"), ("n_codes", "512")]
    put(h, "full_entry", lines(entry))
    put(h, "required_only", lines(entry[8:13]) + "format=ctsr-latent-pair/1\n")
    put(h, "checkpoint_extras", lines([("cache.latent_shape", "[8, 16, 16, 16]"), ("cache.hu_window", "-1000,1000"),
                                       ("cache.patch_size", "0"), ("cache.latent_min", "-1"),
                                       ("cache.latent_max", "1"), ("cache.weights", "w.safetensors")]))
    put(h, "old_extras", lines([("cache.hu_window", ""), ("cache.weights", "w.safetensors")]))
    # Near misses.
    put(h, "window_reversed", lines(entry[:10] + [("hu_window", "200,-200")] + entry[11:]))
    put(h, "bounds_equal", lines(entry[:8] + [("latent_min", "1"), ("latent_max", "1")] + entry[10:]))
    put(h, "affine_short", lines(entry[:6] + [("affine", "1,0,0,0")] + entry[7:]))
    put(h, "shape_zero", lines(entry[:4] + [("volume_shape", "64,0,64")] + entry[5:]))
    put(h, "wrong_format", lines([("format", "ctsr-latent-pair/2")] + entry[1:]))
    put(h, "extras_half_bounds", lines([("cache.latent_min", "-1"), ("cache.latent_shape", "[8,16,16]")]))

    h = "checkpoint_info"
    checkpoint = [("format", "ctsr-train-checkpoint/1"), ("kind", "diffusion"), ("state.step", "1000"),
                  ("state.optimizer_updates", "1000"), ("state.ema_updates", "1000"), ("state.skipped_steps", "0"),
                  ("state.consecutive_skips", "0"), ("state.best_ssim", "0.87654321012345678"),
                  ("state.best_step", "500"), ("rng.scheme", "philox4x32-10"), ("rng.seed", "1234"),
                  ("config", "training: {max_steps: 1000}"), ("extra.cache.hu_window", "-200,200")]
    put(h, "diffusion", lines(checkpoint))
    put(h, "vqae_never_validated", lines([("kind", "vqae"), ("state.best_ssim", "-inf")] +
                                         [kv for kv in checkpoint if kv[0] not in ("kind", "state.best_ssim")]))
    put(h, "redcnn", lines([("kind", "redcnn")] + [kv for kv in checkpoint if kv[0] != "kind"]))
    # Near misses.
    put(h, "no_format", lines(checkpoint[1:]))
    put(h, "step_not_int", lines([("state.step", "10x")] + [kv for kv in checkpoint if kv[0] != "state.step"]))
    put(h, "config_bad_yaml", lines([kv for kv in checkpoint if kv[0] != "config"] + [("config", "a: [")]))


# ---- DICOM -------------------------------------------------------------------------------------
DICOM_FIXTURES = os.path.join(HERE, "..", "tests", "data", "dicom")


def dicom_fixture(name):
    with open(os.path.join(DICOM_FIXTURES, name), "rb") as f:
        return f.read()


def dicom_patch(data, group, element, vr, old, new):
    """The file with one explicit-VR element's value `old` replaced by `new` (the same length)."""
    assert len(old) == len(new)
    head = struct.pack("<HH", group, element) + vr.encode() + struct.pack("<H", len(old))
    at = data.find(head + old)
    assert at >= 0 and data.find(head + old, at + 1) < 0, (group, element, old)
    return data[:at + len(head)] + new + data[at + len(head) + len(old):]


def make_dicom():
    """Single files from tests/data/dicom (tools/pytorch/make_dicom_fixtures.py, pydicom and
    gdcmconv), as read_volume reads one .dcm: valid slices and the Enhanced CT file, the refused
    ones, and same-length byte patches of them that reach the header checks."""
    h = "dicom"
    axial = dicom_fixture("axial_ascending/IM0000")
    multiframe = dicom_fixture("multiframe.dcm")
    put(h, "axial_slice.dcm", axial)
    put(h, "multiframe.dcm", multiframe)
    put(h, "unsigned_rescale_slice.dcm", dicom_fixture("unsigned_rescale/IM0000"))
    put(h, "oblique_slice.dcm", dicom_fixture("oblique/IM0000"))
    put(h, "jpegls_slice.dcm", dicom_fixture("axial_jpegls/IM0000"))
    put(h, "j2k_slice.dcm", dicom_fixture("axial_j2k/IM0000"))
    put(h, "jpeg_lossy_slice.dcm", dicom_fixture("jpeg_lossy/IM0000"))
    put(h, "truncated_slice.dcm", dicom_fixture("truncated/IM0005"))
    put(h, "non_orthogonal_slice.dcm", dicom_fixture("non_orthogonal/IM0000"))
    put(h, "mr_slice.dcm", dicom_fixture("mr_modality/IM0000"))
    # Near misses: one value changed, the length kept.
    put(h, "rows_zero.dcm", dicom_patch(axial, 0x0028, 0x0010, "US", b"\x0b\x00", b"\x00\x00"))
    put(h, "bits_allocated_8.dcm", dicom_patch(axial, 0x0028, 0x0100, "US", b"\x10\x00", b"\x08\x00"))
    put(h, "high_bit_14.dcm", dicom_patch(axial, 0x0028, 0x0102, "US", b"\x0f\x00", b"\x0e\x00"))
    put(h, "rescale_slope_zero.dcm", dicom_patch(axial, 0x0028, 0x1053, "DS", b"1 ", b"0 "))
    put(h, "syntax_rle_but_raw.dcm", dicom_patch(axial, 0x0002, 0x0010, "UI", b"1.2.840.10008.1.2.1\x00",
                                                 b"1.2.840.10008.1.2.5\x00"))
    put(h, "syntax_big_endian.dcm", dicom_patch(axial, 0x0002, 0x0010, "UI", b"1.2.840.10008.1.2.1\x00",
                                                b"1.2.840.10008.1.2.2\x00"))
    put(h, "multiframe_8_frames.dcm", dicom_patch(multiframe, 0x0028, 0x0008, "IS", b"7 ", b"8 "))
    put(h, "multiframe_uneven.dcm", dicom_patch(multiframe, 0x0020, 0x0032, "DS", b"-120.5\\-98.25\\39.25 ",
                                                b"-120.5\\-98.25\\39.75 "))


if __name__ == "__main__":
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    make_safetensors()
    make_npy()
    make_nifti()
    make_torch()
    make_train_config()
    make_pairs_csv()
    make_metadata()
    make_dicom()
    for harness in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, harness))
        size = sum(os.path.getsize(os.path.join(CORPUS, harness, f)) for f in files)
        print(f"{harness}: {len(files)} files, {size} bytes")
