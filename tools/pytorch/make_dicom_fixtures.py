#!/usr/bin/python3
"""Small DICOM CT series for the DICOM reader's tests, with the volume each one must read as
(or the one reason it must be refused).

Writes tests/data/dicom/<case>/IM0000 ... (no extension), tests/data/dicom/multiframe.dcm and
tests/data/dicom/expected.json. Run by hand when the fixtures change (CI never runs it; the files
are committed):
    apt-get install -y --no-install-recommends python3-pydicom python3-numpy libgdcm-tools
    /usr/bin/python3 tools/pytorch/make_dicom_fixtures.py

The output is byte-identical from run to run: UIDs are a fixed root plus counters, dates are
fixed and nothing is random. libgdcm-tools (gdcmconv) is only needed for the JPEG-LS and
JPEG 2000 cases, which pydicom 2.3 cannot encode; without gdcmconv those folders are kept as
committed (or, if absent, skipped with a message) and everything else is still written.

The volume: D = 7 slices, H = 11 rows, W = 13 columns. The HU value at slice k, row j, column i
is 3 i + 40 j + 150 k - 900 (-900 to 436), where k counts slices in ascending order along the
slice normal cross(row direction, column direction) of ImageOrientationPatient. Slices are
1.25 mm apart (from ImagePositionPatient; SliceThickness says 2.0 on purpose and there is no
SpacingBetweenSlices), PixelSpacing is [0.7, 0.8] (row spacing, column spacing) and the k = 0
slice is at [-120.5, -98.25, 33.0]. Stored int16 with RescaleSlope 1, RescaleIntercept -1024.
File names are a shuffled order of the slices, so a reader that sorts by name gets them wrong.

Valid cases:
  axial_ascending/     IOP [1, 0, 0, 0, 1, 0]; InstanceNumber rises along the normal
  axial_descending/    the same volume; InstanceNumber 1 is the top slice
  unsigned_rescale/    uint16, RescaleSlope 0.5, RescaleIntercept -1024
  with_other_file/     the axial series and a README.txt that is not DICOM
  oblique/             rotated 30 degrees in plane about z
  multiframe.dcm       one Enhanced CT file, 7 frames stored in descending position order
  axial_jpegls/        the axial series as JPEG-LS lossless       (needs gdcmconv)
  axial_j2k/           the axial series as JPEG 2000 lossless     (needs gdcmconv)
  axial_rle/           the axial series as RLE lossless           (needs gdcmconv)
Refused cases (one defect each): two_series/, missing_slice/, duplicate_slice/, gantry_tilt/,
mixed_rows/, mr_modality/, jpeg_lossy/, truncated/, non_orthogonal/.

expected.json, per case name:
  "shape_dhw"      [D, H, W]
  "pixel_spacing"  PixelSpacing in DICOM order: [row spacing, column spacing]
  "slice_spacing"  distance between neighbouring slices along the normal
  "orientation"    ImageOrientationPatient (row direction, then column direction)
  "normal"         cross(row direction, column direction), unit length
  "origin"         ImagePositionPatient of the k = 0 slice
  "positions"      ImagePositionPatient per k
  "files"          file names (relative to the case folder) per k; multiframe.dcm also has
                   "frame_of_k", the frame index (0-based) that holds slice k
  "hu"             the HU values, C order over [D, H, W]
Refused cases are under "refused": the tag involved and why. two_series also records its two
SeriesInstanceUIDs and, under "series", what each reads as when picked with --series-uid.
"""

import json
import math
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "data", "dicom")

D, H, W = 7, 11, 13
PIXEL_SPACING = (0.7, 0.8)  # DICOM order: between rows, between columns
SLICE_STEP = 1.25
SLICE_THICKNESS = 2.0  # not the slice spacing: a reader must use the positions
ORIGIN = (-120.5, -98.25, 33.0)
SLOPE, INTERCEPT = 1.0, -1024.0
HU_FORMULA = "hu[k][j][i] = 3*i + 40*j + 150*k - 900 (k: slice along the normal, j: row, i: column)"

UID_ROOT = "1.2.826.0.1.3680043.10.1011."
STUDY_UID = UID_ROOT + "1"
IMPLEMENTATION_UID = UID_ROOT + "0.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
READABLE_SYNTAXES = (EXPLICIT_LE, "1.2.840.10008.1.2", JPEG_LS_LOSSLESS, J2K_LOSSLESS, RLE_LOSSLESS)

# Slice k of a 7-slice series is written to file IM{NAME_ORDER[k]:04d}: neither name order nor
# InstanceNumber order is position order.
NAME_ORDER = (3, 0, 5, 1, 6, 2, 4)

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
COMPRESSED = (("axial_jpegls", "--jpegls", JPEG_LS_LOSSLESS), ("axial_j2k", "--j2k", J2K_LOSSLESS),
              ("axial_rle", "--rle", RLE_LOSSLESS))


def hu_volume():
    k, j, i = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing="ij")
    return (3 * i + 40 * j + 150 * k - 900).astype(np.int64)  # [D, H, W]


def ds_str(v):
    """A DS string (at most 16 characters) for v; the value a reader sees is float(ds_str(v))."""
    s = "%.10g" % v
    if float(s) == 0.0:
        s = "0"
    assert len(s) <= 16, s
    return s


def as_read(v):
    return float(ds_str(v))


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def orientation_of(row, col):
    """The IOP as written (rounded to DS) and its unit normal."""
    iop = [as_read(v) for v in list(row) + list(col)]
    return iop, unit(np.cross(iop[:3], iop[3:]))


def series_uid(case_no, sub=1):
    return "%s3.%d.%d" % (UID_ROOT, case_no, sub)


def frame_uid(case_no):
    return "%s2.%d" % (UID_ROOT, case_no)


def sop_uid(case_no, n):
    return "%s4.%d.%d" % (UID_ROOT, case_no, n)


def file_meta(sop_class, sop_instance, syntax=EXPLICIT_LE):
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CTSR_FIXTURES"
    return meta


def common_dataset(sop_class, sop_instance, case_no, description, modality="CT", sub=1):
    """Patient, study, series and equipment attributes shared by every file of a case."""
    ds = Dataset()
    ds.file_meta = file_meta(sop_class, sop_instance)
    ds.preamble = b"\x00" * 128
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = "CTSR0001"
    ds.Modality = modality
    ds.Manufacturer = "ctsr fixtures"
    ds.StudyDescription = "ctsr DICOM reader fixtures"
    ds.SeriesDescription = description
    ds.PatientName = "Phantom^Fixture"
    ds.PatientID = "CTSR-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    if modality == "CT":
        ds.KVP = "120"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid(case_no, sub)
    ds.StudyID = "1"
    ds.SeriesNumber = case_no * 10 + sub
    ds.FrameOfReferenceUID = frame_uid(case_no)
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = H
    ds.Columns = W
    ds.PixelSpacing = [ds_str(v) for v in PIXEL_SPACING]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def stored_pixels(hu, unsigned=False):
    """The stored values for HU array hu: int16 (HU + 1024), or uint16 (HU + 1024) / 0.5."""
    if unsigned:
        return ((hu + 1024) * 2).astype("<u2")
    return (hu + 1024).astype("<i2")


def slice_dataset(case_no, n, description, hu2d, position, iop, instance, unsigned=False, modality="CT", sub=1):
    sop_class = CT_IMAGE if modality == "CT" else MR_IMAGE
    ds = common_dataset(sop_class, sop_uid(case_no, n), case_no, description, modality, sub)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance
    ds.SliceThickness = ds_str(SLICE_THICKNESS)
    ds.ImagePositionPatient = [ds_str(v) for v in position]
    ds.ImageOrientationPatient = [ds_str(v) for v in iop]
    ds.Rows = hu2d.shape[0]
    ds.PixelRepresentation = 0 if unsigned else 1
    ds.RescaleIntercept = ds_str(INTERCEPT)
    ds.RescaleSlope = ds_str(0.5 if unsigned else SLOPE)
    if modality == "CT":
        ds.RescaleType = "HU"
    ds.add_new(0x7FE00010, "OW", stored_pixels(hu2d, unsigned).tobytes())
    return ds


def save(ds, path):
    ds.save_as(path, write_like_original=False)
    return path


def fresh_dir(name):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def positions_along(normal, step=SLICE_STEP, count=D, first=ORIGIN):
    """ImagePositionPatient of slices 0 .. count-1, as a reader sees them (rounded to DS)."""
    return [[as_read(first[a] + k * step * normal[a]) for a in range(3)] for k in range(count)]


def write_series(case_no, name, description, row=AXIAL[0], col=AXIAL[1], descending=False, unsigned=False,
                 modality="CT", slices=None, positions=None):
    """Writes slices (k values, default all) of the volume; returns (folder, per-k records)."""
    folder = fresh_dir(name)
    iop, normal = orientation_of(row, col)
    positions = positions if positions is not None else positions_along(normal)
    hu = hu_volume()
    slices = list(range(D)) if slices is None else slices
    records = []
    for k in slices:
        instance = (D - k) if descending else (k + 1)
        fname = "IM%04d" % NAME_ORDER[k]
        ds = slice_dataset(case_no, k + 1, description, hu[k], positions[k], iop, instance, unsigned, modality)
        save(ds, os.path.join(folder, fname))
        records.append({"k": k, "file": fname, "position": positions[k]})
    return folder, records


def describe(records, iop, normal, hu=None):
    """The expected.json entry for a valid series, from its per-k records (sorted by k)."""
    hu = hu_volume() if hu is None else hu
    ks = [r["k"] for r in records]
    return {
        "shape_dhw": [len(ks), H, W],
        "pixel_spacing": [as_read(v) for v in PIXEL_SPACING],
        "slice_spacing": SLICE_STEP,
        "orientation": iop,
        "normal": [float(v) + 0.0 for v in normal],
        "origin": records[0]["position"],
        "positions": [r["position"] for r in records],
        "files": [r["file"] for r in records],
        "hu": [int(v) for v in hu[ks].ravel()],
    }


def write_multiframe(case_no):
    """Enhanced CT Image Storage: 7 frames, frame f holds slice k = D - 1 - f."""
    iop, normal = orientation_of(*AXIAL)
    positions = positions_along(normal)
    hu = hu_volume()
    frame_of_k = [D - 1 - k for k in range(D)]
    ds = common_dataset(ENHANCED_CT_IMAGE, sop_uid(case_no, 1), case_no, "multiframe")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = D
    ds.PixelRepresentation = 1

    measures = Dataset()
    measures.PixelSpacing = [ds_str(v) for v in PIXEL_SPACING]
    measures.SliceThickness = ds_str(SLICE_THICKNESS)
    orientation = Dataset()
    orientation.ImageOrientationPatient = [ds_str(v) for v in iop]
    transform = Dataset()
    transform.RescaleIntercept = ds_str(INTERCEPT)
    transform.RescaleSlope = ds_str(SLOPE)
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    per_frame = []
    for f in range(D):
        k = D - 1 - f
        position = Dataset()
        position.ImagePositionPatient = [ds_str(v) for v in positions[k]]
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        item = Dataset()
        item.PlanePositionSequence = Sequence([position])
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.add_new(0x7FE00010, "OW", stored_pixels(hu[::-1]).tobytes())
    save(ds, os.path.join(OUT, "multiframe.dcm"))

    records = [{"k": k, "file": "multiframe.dcm", "position": positions[k]} for k in range(D)]
    e = describe(records, iop, normal)
    e["files"] = ["multiframe.dcm"]
    e["frame_of_k"] = frame_of_k
    return e


def compress(src_folder, name, flag, syntax):
    """gdcmconv each file of src_folder into OUT/name; checks that gdcmconv --raw gives back the
    same pixels. Returns False when gdcmconv is not installed."""
    if shutil.which("gdcmconv") is None:
        return False
    folder = fresh_dir(name)
    with tempfile.TemporaryDirectory() as tmp:
        for fname in sorted(os.listdir(src_folder)):
            dst = os.path.join(folder, fname)
            subprocess.run(["gdcmconv", flag, os.path.join(src_folder, fname), dst], check=True)
            assert pydicom.dcmread(dst).file_meta.TransferSyntaxUID == syntax, dst
            raw = os.path.join(tmp, fname)
            subprocess.run(["gdcmconv", "--raw", dst, raw], check=True)
            a = pydicom.dcmread(os.path.join(src_folder, fname))
            b = pydicom.dcmread(raw)
            assert np.array_equal(a.pixel_array, b.pixel_array), dst
    return True


class Refused(Exception):
    def __init__(self, tag, why):
        super().__init__("%s %s" % (tag, why))
        self.tag = tag


def read_volume(path, pick_series=None):
    """An independent reader for the self-check: (volume in HU [D, H, W], positions, IOP,
    files per k). Raises Refused on the first problem it finds."""
    names = [os.path.basename(path)] if os.path.isfile(path) else sorted(os.listdir(path))
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    tmp = tempfile.TemporaryDirectory()
    frames = []  # (position, iop, rows, cols, stored 2-D array, slope, intercept, file)
    series, modalities = set(), set()
    with tmp:
        for name in names:
            full = os.path.join(folder, name)
            try:
                ds = pydicom.dcmread(full)
            except InvalidDicomError:
                continue  # not DICOM (README.txt)
            except Exception:
                raise Refused("(7FE0,0010)", "%s: unreadable" % name)
            syntax = ds.file_meta.TransferSyntaxUID
            if syntax not in READABLE_SYNTAXES:
                raise Refused("(0002,0010)", "%s: transfer syntax %s" % (name, syntax))
            if pick_series is not None and ds.SeriesInstanceUID != pick_series:
                continue
            series.add(ds.SeriesInstanceUID)
            modalities.add(ds.Modality)
            if syntax in (JPEG_LS_LOSSLESS, J2K_LOSSLESS, RLE_LOSSLESS):
                raw = os.path.join(tmp.name, name)
                subprocess.run(["gdcmconv", "--raw", full, raw], check=True)
                ds = pydicom.dcmread(raw)
            want = ds.Rows * ds.Columns * 2 * int(getattr(ds, "NumberOfFrames", 1) or 1)
            if len(ds.get("PixelData", b"")) != want:
                raise Refused("(7FE0,0010)", "%s: %d pixel bytes, want %d" % (name, len(ds.PixelData), want))
            dtype = "<i2" if ds.PixelRepresentation == 1 else "<u2"
            if "PerFrameFunctionalGroupsSequence" in ds:
                shared = ds.SharedFunctionalGroupsSequence[0]
                iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
                tr = shared.PixelValueTransformationSequence[0]
                pixels = np.frombuffer(ds.PixelData, dtype).reshape(-1, ds.Rows, ds.Columns)
                for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
                    ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
                    frames.append((ipp, iop, ds.Rows, ds.Columns, pixels[f], float(tr.RescaleSlope),
                                   float(tr.RescaleIntercept), name))
            else:
                pixels = np.frombuffer(ds.PixelData, dtype).reshape(ds.Rows, ds.Columns)
                frames.append(([float(v) for v in ds.ImagePositionPatient],
                               [float(v) for v in ds.ImageOrientationPatient], ds.Rows, ds.Columns, pixels,
                               float(ds.RescaleSlope), float(ds.RescaleIntercept), name))
    if len(series) > 1:
        raise Refused("(0020,000E)", "%d series" % len(series))
    if modalities != {"CT"}:
        raise Refused("(0008,0060)", "modality %s" % sorted(modalities))
    if len({(f[2], f[3]) for f in frames}) != 1:
        raise Refused("(0028,0010)", "slices of different sizes")
    iop = frames[0][1]
    if any(np.abs(np.subtract(f[1], iop)).max() > 1e-6 for f in frames):
        raise Refused("(0020,0037)", "orientation differs between slices")
    row, col = np.array(iop[:3]), np.array(iop[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-4 or abs(np.linalg.norm(col) - 1) > 1e-4 or abs(row @ col) > 1e-4:
        raise Refused("(0020,0037)", "row and column directions not orthonormal")
    normal = unit(np.cross(row, col))
    frames.sort(key=lambda f: float(np.dot(f[0], normal)))
    steps = np.diff(np.array([f[0] for f in frames]), axis=0)
    along = steps @ normal
    if np.any(along < 1e-3):
        raise Refused("(0020,0032)", "two slices at the same position")
    if np.abs(steps - np.outer(along, normal)).max() > 1e-3:
        raise Refused("(0020,0032)", "positions do not advance along the normal (gantry tilt)")
    if np.abs(along - along.mean()).max() > 1e-3:
        raise Refused("(0020,0032)", "uneven slice spacing (a missing slice)")
    volume = np.stack([f[4].astype(np.float64) * f[5] + f[6] for f in frames])
    return volume, [f[0] for f in frames], iop, [f[7] for f in frames], float(along.mean())


def check_valid(path, e, pick_series=None):
    volume, positions, iop, files, spacing = read_volume(path, pick_series)
    assert list(volume.shape) == e["shape_dhw"], path
    assert np.array_equal(volume.ravel(), np.array(e["hu"], dtype=np.float64)), path
    assert np.allclose(positions, e["positions"]) and np.allclose(iop, e["orientation"]), path
    assert abs(spacing - e["slice_spacing"]) < 1e-6, path
    if os.path.isdir(path):
        assert files == e["files"], path
        assert files != sorted(files), path  # name order is not position order


def main():
    os.makedirs(OUT, exist_ok=True)
    expected = {
        "notes": {
            "hu_formula": HU_FORMULA,
            "stored": "int16 = HU + 1024 (RescaleSlope 1, RescaleIntercept -1024), except unsigned_rescale: "
                      "uint16 = (HU + 1024) / 0.5 (RescaleSlope 0.5, RescaleIntercept -1024)",
            "slice_spacing": "from ImagePositionPatient; SliceThickness is 2.0 and differs on purpose",
            "file_names": "shuffled: neither name order nor InstanceNumber order is position order",
        },
        "refused": {},
    }
    valid_paths = {}
    iop_axial, normal_axial = orientation_of(*AXIAL)

    # Valid cases.
    folder, records = write_series(1, "axial_ascending", "axial ascending")
    expected["axial_ascending"] = describe(records, iop_axial, normal_axial)
    axial_folder = folder

    _, records = write_series(2, "axial_descending", "axial descending", descending=True)
    expected["axial_descending"] = describe(records, iop_axial, normal_axial)

    _, records = write_series(3, "unsigned_rescale", "uint16 rescale 0.5", unsigned=True)
    expected["unsigned_rescale"] = describe(records, iop_axial, normal_axial)

    folder, records = write_series(4, "with_other_file", "axial with a text file")
    with open(os.path.join(folder, "README.txt"), "w") as f:
        f.write("Not a DICOM file: a reader of this folder must skip it.\n")
    expected["with_other_file"] = describe(records, iop_axial, normal_axial)

    c30, s30 = math.cos(math.radians(30)), math.sin(math.radians(30))
    rot_row, rot_col = (c30, s30, 0.0), (-s30, c30, 0.0)
    iop, normal = orientation_of(rot_row, rot_col)
    _, records = write_series(5, "oblique", "oblique 30 degrees about z", row=rot_row, col=rot_col)
    expected["oblique"] = describe(records, iop, normal)

    expected["multiframe.dcm"] = write_multiframe(6)

    for name, flag, syntax in COMPRESSED:
        if compress(axial_folder, name, flag, syntax):
            print("%s: written with gdcmconv %s" % (name, flag))
        elif os.path.isdir(os.path.join(OUT, name)):
            print("%s: gdcmconv not installed; keeping the committed files" % name)
        else:
            print("%s: gdcmconv not installed; SKIPPED" % name)
            continue
        e = dict(expected["axial_ascending"])
        e["transfer_syntax"] = syntax
        expected[name] = e

    for name in list(expected):
        if name not in ("notes", "refused"):
            valid_paths[name] = os.path.join(OUT, name)

    # Refused cases.
    refused = expected["refused"]

    # Two series of 4 slices in one folder: k = 0..3 and k = 3..6 of the volume.
    folder = fresh_dir("two_series")
    hu = hu_volume()
    positions = positions_along(normal_axial)
    series = {}
    n = 0
    for sub, ks in ((1, range(0, 4)), (2, range(3, 7))):
        records = []
        for idx, k in enumerate(ks):
            fname = "IM%04d" % ((n * 5 + 3) % 8)  # 3, 0, 5, 2, 7, 4, 1, 6
            n += 1
            ds = slice_dataset(7, sub * 100 + idx + 1, "two series, part %d" % sub, hu[k], positions[k],
                               iop_axial, idx + 1, sub=sub)
            save(ds, os.path.join(folder, fname))
            records.append({"k": k, "file": fname, "position": positions[k]})
        series[series_uid(7, sub)] = describe(records, iop_axial, normal_axial)
    refused["two_series"] = {
        "tag": "(0020,000E)", "why": "two SeriesInstanceUIDs in one folder (4 slices each); pick one with "
        "--series-uid", "series_uids": sorted(series), "series": series}

    folder, _ = write_series(8, "missing_slice", "missing slice", slices=[0, 1, 2, 4, 5, 6])
    refused["missing_slice"] = {"tag": "(0020,0032)",
                                "why": "slice k=3 removed: a 2.5 mm gap among 1.25 mm steps"}

    folder, _ = write_series(9, "duplicate_slice", "duplicate slice")
    dup = slice_dataset(9, 100, "duplicate slice", hu[2], positions[2], iop_axial, D + 1)
    save(dup, os.path.join(folder, "IM0007"))
    refused["duplicate_slice"] = {"tag": "(0020,0032)", "why": "IM0007 is a second slice at the position of k=2 "
                                  "(new SOPInstanceUID)"}

    c15, s15 = math.cos(math.radians(15)), math.sin(math.radians(15))
    write_series(10, "gantry_tilt", "gantry tilt 15 degrees", col=(0.0, c15, s15), positions=positions)
    refused["gantry_tilt"] = {"tag": "(0020,0032)", "why": "positions advance straight along z while the "
                              "columns are tilted 15 degrees about x: not along the normal (gantry tilt)"}

    folder, _ = write_series(11, "mixed_rows", "mixed rows")
    odd = slice_dataset(11, 5, "mixed rows", hu[4][:H - 1], positions[4], iop_axial, 5)
    save(odd, os.path.join(folder, "IM%04d" % NAME_ORDER[4]))
    refused["mixed_rows"] = {"tag": "(0028,0010)",
                             "why": "IM%04d (k=4) has Rows 10, the others 11" % NAME_ORDER[4]}

    write_series(12, "mr_modality", "MR series", modality="MR")
    refused["mr_modality"] = {"tag": "(0008,0060)", "why": "Modality MR (MR Image Storage): not CT"}

    folder, records = write_series(13, "jpeg_lossy", "JPEG baseline")
    for r in records:
        path = os.path.join(folder, r["file"])
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEG_BASELINE
        # A placeholder, not a decodable JPEG: SOI, a comment segment, EOI.
        frame = b"\xff\xd8\xff\xfe\x00\x0eplaceholder\x00\xff\xd9"
        ds.add_new(0x7FE00010, "OB", encapsulate([frame]))
        ds["PixelData"].is_undefined_length = True
        save(ds, path)
    refused["jpeg_lossy"] = {"tag": "(0002,0010)", "why": "TransferSyntaxUID 1.2.840.10008.1.2.4.50 "
                             "(JPEG Baseline, lossy); the pixel data is a placeholder fragment"}

    folder, _ = write_series(14, "truncated", "truncated")
    cut = os.path.join(folder, "IM%04d" % NAME_ORDER[2])
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:len(data) - H * W])  # half of the 2*H*W pixel bytes
    refused["truncated"] = {"tag": "(7FE0,0010)", "why": "IM%04d (k=2) ends half way through its pixel data"
                            % NAME_ORDER[2]}

    s11, c11 = math.sin(math.radians(11.5)), math.cos(math.radians(11.5))
    write_series(15, "non_orthogonal", "non-orthogonal", col=(s11, c11, 0.0), positions=positions)
    refused["non_orthogonal"] = {"tag": "(0020,0037)", "why": "row [1,0,0] and column [sin 11.5, cos 11.5, 0] "
                                 "directions are not perpendicular (dot 0.199)"}

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        # One case per line: a diff shows which fixture changed.
        f.write("{\n" + ",\n".join(json.dumps(k) + ": " + json.dumps(expected[k]) for k in sorted(expected))
                + "\n}\n")

    # Self-check: every valid case reads back as expected.json says, and every refused case is
    # refused for its tag.
    with open(os.path.join(OUT, "expected.json")) as f:
        expected = json.load(f)
    for name, path in valid_paths.items():
        if name in [c[0] for c in COMPRESSED] and shutil.which("gdcmconv") is None:
            continue
        check_valid(path, expected[name])
    for uid, e in expected["refused"]["two_series"]["series"].items():
        check_valid(os.path.join(OUT, "two_series"), e, pick_series=uid)
    for name, e in expected["refused"].items():
        try:
            read_volume(os.path.join(OUT, name))
        except Refused as r:
            assert r.tag == e["tag"], (name, str(r))
            print("%-18s refused: %s" % (name, r))
        else:
            raise AssertionError("%s was not refused" % name)
    print("checked %d valid cases" % len(valid_paths))


if __name__ == "__main__":
    main()
