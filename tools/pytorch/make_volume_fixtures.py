#!/usr/bin/python3
"""Tiny NIfTI and .npy files for tests/test_volume.cpp and tests/test_npy.cpp, with the values
an independent reader (nibabel, numpy) sees in them.

Writes tests/data/volumes/*.nii, *.nii.gz, *.npy and tests/data/volumes/expected.json. Run by
hand when the fixtures change (CI never runs it; the files are committed):
    apt-get install -y python3-nibabel      # Debian's nibabel and numpy
    /usr/bin/python3 tools/pytorch/make_volume_fixtures.py

NIfTI files are written byte by byte from nibabel's header classes (header, 4 zero bytes of
extension flag, data in x-fastest order) rather than through Nifti1Image.to_filename, because
nibabel recomputes scl_slope / scl_inter on save and these files need the stated ones. Each one
is then read back with nib.load, and what nibabel sees is what expected.json records.

The int16 volume's raw value at voxel (i = x, j = y, k = z) is i + 10 j + 100 k + 400, so a test
can tell the axes apart from one voxel; with scl_slope 2 and scl_inter -1024 that is HU
2 (i + 10 j + 100 k + 400) - 1024, from -224 to 268, across the default window [-200, 200].
It is written three times: .nii, .nii.gz and a big-endian .nii.

Files:
  int16_oblique.nii(.gz), int16_bigendian.nii   NIfTI-1 int16, scl_slope 2, scl_inter -1024,
                         spacing (0.7, 0.8, 2.5), an oblique sform and a different qform
  nifti2_qform.nii       NIfTI-2 float64, a left-handed qform only (sform_code 0)
  uint8_noxform.nii      NIfTI-1 uint8, no transform, scl_slope 0 (no scaling) with scl_inter 5
  float32_4d_singleton.nii   dims (7, 5, 3, 1): still a 3-D volume
  float32_4d.nii, float32_2d.nii                  refused: not 3-D
  vol_{f4,f8,i4,i8,u1}.npy, vol_f4_v2.npy, vol_f4_v3.npy   [3, 5, 7] in each dtype / header version
  image_f4_2d.npy        a valid .npy that is not a volume
  fortran_f4.npy, bigendian_f4.npy, int8.npy      refused by read_npy

expected.json, per file name:
  "shape_dhw"    the tensor shape [D = nz, H = ny, W = nx] (DESIGN.md, Conventions)
  "values"       the values after scaling, C order over [D, H, W] (x fastest)
  "spacing_xyz"  pixdim[1..3]                                          (NIfTI only)
  "affine"       voxel (i, j, k, 1) -> world, 4 x 4: the sform when sform_code > 0, else the
                 qform, else diag(spacing) with no offset. The last case is ctsr's convention,
                 not nibabel's (nibabel centres the volume and flips x), so it is written here
                 from the spacing, not from nibabel.                    (NIfTI only)
  "dtype"        the numpy dtype of a .npy file                         (.npy only)
Files a reader must refuse are listed under "refused" with the reason.
"""

import gzip
import json
import os

import nibabel as nib
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "data", "volumes")

NX, NY, NZ = 7, 5, 3
SPACING = (0.7, 0.8, 2.5)


def rotation(ax, ay, az):
    """Rotation matrix from angles (radians) about x, then y, then z."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def affine_from(rot, spacing, offset):
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = offset
    return a


def write_nifti(name, header_class, data_xyz, dtype, spacing, sform=None, qform=None, slope=None, inter=None,
                endianness="<"):
    """data_xyz: numpy array indexed [x, y, z, ...]; written x fastest (Fortran order)."""
    hdr = header_class(endianness=endianness)
    dtype = np.dtype(dtype).newbyteorder(endianness)
    hdr.set_data_shape(data_xyz.shape)
    hdr.set_data_dtype(dtype)
    # set_qform rewrites pixdim from the affine's column norms, so the spacing comes after it.
    hdr.set_qform(qform, code=1 if qform is not None else 0)
    hdr.set_sform(sform, code=1 if sform is not None else 0)
    zooms = tuple(spacing[: min(3, data_xyz.ndim)]) + (1.0,) * max(0, data_xyz.ndim - 3)
    hdr.set_zooms(zooms)
    hdr.set_xyzt_units("mm")
    offset = hdr.sizeof_hdr + 4
    offset = (offset + 15) // 16 * 16
    hdr.set_data_offset(offset)
    if slope is not None:
        hdr["scl_slope"] = slope
        hdr["scl_inter"] = inter
    else:
        hdr["scl_slope"] = np.nan
        hdr["scl_inter"] = np.nan
    payload = hdr.binaryblock + b"\x00" * (offset - hdr.sizeof_hdr)
    payload += np.asarray(data_xyz, dtype=dtype).tobytes(order="F")
    path = os.path.join(OUT, name)
    if name.endswith(".gz"):
        # mtime 0: the same bytes on every run, so regenerating does not churn the repository.
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)
    return path


def describe_nifti(path, affine_override=None):
    img = nib.load(path)
    data = np.asarray(img.get_fdata(dtype=np.float64))
    assert data.ndim == 3, path
    spacing = [float(z) for z in img.header.get_zooms()[:3]]
    affine = affine_override if affine_override is not None else img.affine
    return {
        "shape_dhw": [int(data.shape[2]), int(data.shape[1]), int(data.shape[0])],
        "spacing_xyz": spacing,
        "affine": [[float(v) for v in row] for row in np.asarray(affine)],
        "values": [float(v) for v in data.transpose(2, 1, 0).ravel()],
    }


def write_npy(name, array, version=None):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version, allow_pickle=False)
    return path


def describe_npy(path):
    a = np.load(path, allow_pickle=False)
    return {"shape": list(a.shape), "dtype": a.dtype.str, "values": [float(v) for v in np.ascontiguousarray(a).ravel()]}


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {"refused": {}}
    i, j, k = np.meshgrid(np.arange(NX), np.arange(NY), np.arange(NZ), indexing="ij")
    raw = (i + 10 * j + 100 * k + 400).astype(np.int16)  # [x, y, z]

    # int16, scl_slope 2, scl_inter -1024, an oblique sform and a different (axis-aligned)
    # qform, so a reader that takes the qform when the sform is set is caught.
    sform = affine_from(rotation(0.3, -0.2, 0.5), SPACING, (-12.5, 30.25, 7.0))
    qform = affine_from(np.eye(3), SPACING, (1.0, 2.0, 3.0))
    # The big-endian copy: header and data byte-swapped, which libnifti undoes on reading.
    for name, endianness in (("int16_oblique.nii", "<"), ("int16_oblique.nii.gz", "<"), ("int16_bigendian.nii", ">")):
        path = write_nifti(name, nib.Nifti1Header, raw, np.int16, SPACING, sform=sform, qform=qform, slope=2.0,
                           inter=-1024.0, endianness=endianness)
        e = describe_nifti(path)
        assert np.allclose(np.array(e["affine"]), sform, atol=1e-5)
        assert e["values"][0] == 2 * 400 - 1024
        expected[name] = e

    # NIfTI-2, float64, qform only (a left-handed one: qfac -1), no scaling.
    q2 = affine_from(rotation(-0.4, 0.1, 0.25) @ np.diag([1, 1, -1]), (1.25, 0.9, 3.0), (5.0, -7.5, 11.0))
    vals = (np.sin(i * 0.9 + j * 0.37 - k * 1.3) * 300.0 + k * 0.125).astype(np.float64)
    path = write_nifti("nifti2_qform.nii", nib.Nifti2Header, vals, np.float64, (1.25, 0.9, 3.0), qform=q2)
    expected["nifti2_qform.nii"] = describe_nifti(path)
    assert nib.load(path).header["sform_code"] == 0 and nib.load(path).header["qform_code"] == 1
    assert nib.load(path).header.sizeof_hdr == 540

    # uint8, no transform at all, scl_slope 0 (means: no scaling, whatever scl_inter says).
    u8 = ((i * 31 + j * 7 + k * 50) % 256).astype(np.uint8)
    spacing_u8 = (2.0, 1.5, 1.0)
    path = write_nifti("uint8_noxform.nii", nib.Nifti1Header, u8, np.uint8, spacing_u8, slope=0.0, inter=5.0)
    expected["uint8_noxform.nii"] = describe_nifti(path, affine_override=np.diag(list(spacing_u8) + [1.0]))
    assert expected["uint8_noxform.nii"]["values"][1] == 31.0  # nibabel ignores scl_inter too

    # float32 [7, 5, 3, 1]: a fourth dimension of 1 is still a 3-D volume.
    f32 = (raw.astype(np.float32) * 0.5 - 100.0)
    path = write_nifti("float32_4d_singleton.nii", nib.Nifti1Header, f32[..., None], np.float32, SPACING,
                       sform=sform)
    img = nib.load(path)
    expected["float32_4d_singleton.nii"] = {
        "shape_dhw": [NZ, NY, NX],
        "spacing_xyz": [float(z) for z in img.header.get_zooms()[:3]],
        "affine": [[float(v) for v in row] for row in img.affine],
        "values": [float(v) for v in np.asarray(img.get_fdata())[..., 0].transpose(2, 1, 0).ravel()],
    }

    # Refused: a real 4-D NIfTI and a 2-D one.
    write_nifti("float32_4d.nii", nib.Nifti1Header, np.stack([f32, f32 + 1], axis=3), np.float32, SPACING,
                sform=sform)
    expected["refused"]["float32_4d.nii"] = "dims [7, 5, 3, 2]: a 4-D series, not a 3-D volume"
    write_nifti("float32_2d.nii", nib.Nifti1Header, f32[:, :, 0], np.float32, SPACING[:2])
    expected["refused"]["float32_2d.nii"] = "dims [7, 5]: a 2-D image, not a 3-D volume"

    # .npy: [D, H, W] = [3, 5, 7] volumes in every supported dtype and header version.
    # raw.transpose is Fortran-contiguous, and np.save would store it with fortran_order True.
    raw_dhw = np.ascontiguousarray(raw.transpose(2, 1, 0))  # [D, H, W], C order
    base = raw_dhw.astype(np.float64) * 0.25 - 150.0
    for name, array, version in [
        ("vol_f4.npy", base.astype("<f4"), (1, 0)),
        ("vol_f8.npy", base.astype("<f8") + 1e-9, (1, 0)),
        ("vol_i4.npy", raw_dhw.astype("<i4") - 500, (1, 0)),
        ("vol_i8.npy", raw_dhw.astype("<i8") * 1000003 - 7, (1, 0)),
        ("vol_u1.npy", (raw_dhw % 256).astype("|u1"), (1, 0)),
        ("vol_f4_v2.npy", base.astype("<f4"), (2, 0)),
        ("vol_f4_v3.npy", base.astype("<f4"), (3, 0)),
    ]:
        assert array.flags.c_contiguous
        expected[name] = describe_npy(write_npy(name, array, version))
    # A 2-D array is a valid .npy (read_npy takes it) but not a volume (read_volume refuses it).
    expected["image_f4_2d.npy"] = describe_npy(write_npy("image_f4_2d.npy", base[0].astype("<f4")))

    # Refused by read_npy.
    write_npy("fortran_f4.npy", np.asfortranarray(base.astype("<f4")))
    expected["refused"]["fortran_f4.npy"] = "fortran_order True"
    write_npy("bigendian_f4.npy", base.astype(">f4"))
    expected["refused"]["bigendian_f4.npy"] = "descr '>f4': big-endian"
    write_npy("int8.npy", (raw_dhw % 100).astype("|i1"))
    expected["refused"]["int8.npy"] = "descr '|i1': no int8 tensors"

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        # One file per line: small, and a diff shows which fixture changed.
        f.write("{\n" + ",\n".join(json.dumps(k) + ": " + json.dumps(expected[k]) for k in sorted(expected)) + "\n}\n")


if __name__ == "__main__":
    main()
