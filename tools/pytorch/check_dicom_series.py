"""Reads a DICOM series that ctsr wrote with pydicom, an independent reader, and checks it.

    /usr/bin/python3 tools/pytorch/check_dicom_series.py RESULT_DIR [--source SOURCE [--geometry-only]]

Every file must parse as CT Image Storage with its file meta; the series must have one new
SeriesInstanceUID, distinct SOPInstanceUIDs, ImageType DERIVED\\SECONDARY, one orientation,
positions evenly spaced along the normal with the written spacing. With --source (the series or
multi-frame file ctsr read), the patient, study and frame of reference must be the source's, the
series UID new, the geometry the same and the HU values within half a rescale step of the
source's (the result of `ctsr_vqae`/`ctsr_infer` differs, so compare with a plain read-write
round trip; --geometry-only skips the values, for a ctsr_infer result). Prints one line per finding and exits 1 on any; not a CI dependency (tests/test_dicom.cpp
runs it where pydicom exists).
"""
import argparse
import os
import sys

import numpy as np
import pydicom


def frames_of(path):
    """(position, orientation, spacing, hu image, dataset) per frame, sorted along the normal."""
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in sorted(os.listdir(path))]
    frames = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except pydicom.errors.InvalidDicomError:
            continue
        if getattr(ds, "NumberOfFrames", 1) and int(getattr(ds, "NumberOfFrames", 1)) > 1:
            shared = ds.SharedFunctionalGroupsSequence[0]
            orient = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
            spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
            vt = shared.PixelValueTransformationSequence[0]
            pixels = ds.pixel_array.astype(np.float64) * float(vt.RescaleSlope) + float(vt.RescaleIntercept)
            for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
                pos = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
                frames.append((pos, orient, spacing, pixels[i], ds))
        else:
            hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            frames.append(([float(v) for v in ds.ImagePositionPatient],
                           [float(v) for v in ds.ImageOrientationPatient],
                           [float(v) for v in ds.PixelSpacing], hu, ds))
    if not frames:
        raise SystemExit(f"{path}: no DICOM files")
    o = np.array(frames[0][1])
    normal = np.cross(o[:3], o[3:])
    frames.sort(key=lambda fr: float(np.dot(fr[0], normal)))
    return frames, normal


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result")
    parser.add_argument("--source")
    parser.add_argument("--geometry-only", action="store_true")
    args = parser.parse_args()
    problems = []

    def check(ok, message):
        if not ok:
            problems.append(message)

    frames, normal = frames_of(args.result)
    datasets = [fr[4] for fr in frames]
    for ds in datasets:
        name = os.path.basename(ds.filename)
        check(ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2", f"{name}: not CT Image Storage")
        check(ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID, f"{name}: SOP class differs from the file meta")
        check(ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID, f"{name}: SOP instance differs from the file meta")
        check(list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"], f"{name}: ImageType {list(ds.ImageType)}")
        check(ds.Modality == "CT", f"{name}: Modality {ds.Modality}")
    check(len({ds.SeriesInstanceUID for ds in datasets}) == 1, "more than one SeriesInstanceUID")
    check(len({ds.SOPInstanceUID for ds in datasets}) == len(datasets), "SOPInstanceUIDs repeat")
    check(len({tuple(fr[1]) for fr in frames}) == 1, "more than one orientation")
    z = [float(np.dot(fr[0], normal)) for fr in frames]
    if len(z) > 1:
        steps = np.diff(z)
        check(np.allclose(steps, steps[0], rtol=1e-4, atol=1e-4), f"uneven slice positions: {steps}")
        thickness = float(datasets[0].SliceThickness)
        check(abs(thickness - steps[0]) < 1e-3, f"SliceThickness {thickness} is not the spacing {steps[0]}")

    if args.source:
        src, src_normal = frames_of(args.source)
        s0 = src[0][4]
        r0 = datasets[0]
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                        "StudyDate", "StudyID", "AccessionNumber", "FrameOfReferenceUID"):
            check(str(getattr(s0, keyword, "")) == str(getattr(r0, keyword, "")),
                  f"{keyword}: {getattr(r0, keyword, None)!r}, source {getattr(s0, keyword, None)!r}")
        check(r0.SeriesInstanceUID != s0.SeriesInstanceUID, "the series UID is the source's")
        check(len(src) == len(frames), f"{len(frames)} slices, source {len(src)}")
        check(np.allclose(normal, src_normal, atol=1e-6), f"normal {normal}, source {src_normal}")
        for k, (a, b) in enumerate(zip(frames, src)):
            check(np.allclose(a[0], b[0], atol=1e-4), f"slice {k}: position {a[0]}, source {b[0]}")
            check(np.allclose(a[1], b[1], atol=1e-6), f"slice {k}: orientation {a[1]}, source {b[1]}")
            check(np.allclose(a[2], b[2], atol=1e-9), f"slice {k}: pixel spacing {a[2]}, source {b[2]}")
            step = float(getattr(r0, "RescaleSlope", 1))
            if args.geometry_only:
                check(a[3].shape == b[3].shape, f"slice {k}: shape {a[3].shape}, source {b[3].shape}")
                continue
            check(a[3].shape == b[3].shape and np.max(np.abs(a[3] - b[3])) <= step / 2,
                  f"slice {k}: HU differ by up to {np.max(np.abs(a[3] - b[3])) if a[3].shape == b[3].shape else 'shape'}")

    for p in problems:
        print(f"check_dicom_series: {args.result}: {p}")
    print(f"check_dicom_series: {args.result}: {len(frames)} slices, "
          f"{'ok' if not problems else str(len(problems)) + ' problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
