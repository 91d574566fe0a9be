"""Folder datasets (docs/data-format.md): export then load gives identical arrays, the readers, the size policy,
rater consensus, the clinical rules, the cache, and each kind of bad input named by file and line."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lusbench.api.plugins import load_plugins
from lusbench.data.folder import FolderDatasetError, load_folder
from lusbench.data.folder.export import export_folder
from lusbench.data.folder.manifest import FORMAT, MANIFEST_FILE
from lusbench_builtins.tasks import SFChangeTask, SFRatioTask

SMALL = "synthetic-lus:patients=3,zones=2,size=32"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache (never the user's ~/.cache)."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("LUSBENCH_CACHE_DIR", str(directory))
    return directory


@pytest.fixture(scope="module")
def raters3():
    return load_plugins().datasets.create(SMALL + ",raters=3")


def problems_of(path: Path, **kwargs) -> list[str]:
    with pytest.raises(FolderDatasetError) as info:
        load_folder(path, **kwargs)
    assert str(info.value).count("\n") == 0
    return [str(p) for p in info.value.problems]


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_csv(path: Path, rows: list[list[object]]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def manifest(root: Path, **fields_: object) -> None:
    data = {"format": FORMAT, "name": "hand-made", "classes": ["b_lines", "effusion"], "confidence_scale": 4, **fields_}
    (root / MANIFEST_FILE).write_text(json.dumps(data))


def hand_made(root: Path, n: int = 4, size: int = 16) -> Path:
    """n frames of 2 patients, confidence maps on a scale of 4 for two classes, no clinical tables."""
    rng = np.random.default_rng(0)
    rows = [["frame", "patient", "visit", "zone", "image", "confidence.b_lines", "confidence.effusion"]]
    for i in range(n):
        write_png(root / f"images/f{i}.png", rng.integers(0, 256, (size, size), dtype=np.uint8))
        level = np.zeros((size, size), np.uint8)
        level[:, : i + 1] = 4
        level[0, 0] = 2
        write_png(root / f"confidence/b_lines/f{i}.png", level)
        rows.append([f"f{i}", i % 2, 1 + i // 2, 0, f"images/f{i}.png", f"confidence/b_lines/f{i}.png", ""])
    write_csv(root / "frames.csv", rows)
    manifest(root)
    return root


def test_export_then_load_gives_identical_arrays_and_content_hash(tmp_path, raters3):
    export_folder(raters3, tmp_path / "ds")
    loaded = load_folder(tmp_path / "ds")
    assert not loaded.cached and loaded.notices == []
    got = loaded.dataset
    assert raters3.true_masks is not None and raters3.rater_masks.shape[1] == 3
    for field in fields(raters3):
        if field.name == "name":
            continue
        assert got.content_hash([field.name]) == raters3.content_hash([field.name]), field.name
    assert np.array_equal(got.rater_masks, raters3.rater_masks) and got.rater_masks.dtype == bool
    assert got.content_hash() == raters3.content_hash()


def test_a_second_load_reads_the_cache_and_a_corrupt_entry_is_rebuilt(tmp_path, raters3, cache_dir):
    export_folder(raters3, tmp_path / "ds")
    first = load_folder(tmp_path / "ds")
    second = load_folder(tmp_path / "ds")
    assert second.cached and second.dataset.content_hash() == first.dataset.content_hash()
    (entry,) = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    images = next(f for f, spec in json.loads((entry / "meta.json").read_text())["arrays"].items() if f == "images")
    spec = json.loads((entry / "meta.json").read_text())["arrays"][images]
    data = bytearray((entry / spec["file"]).read_bytes())
    data[-1] ^= 0xFF  # one flipped pixel: same size, same header
    (entry / spec["file"]).write_bytes(bytes(data))
    third = load_folder(tmp_path / "ds")
    assert not third.cached and third.dataset.content_hash() == first.dataset.content_hash()
    assert load_folder(tmp_path / "ds").cached  # rebuilt
    (entry / "meta.json").write_text("{not json")
    assert not load_folder(tmp_path / "ds").cached


def test_the_cache_key_is_the_files_content(tmp_path, cache_dir):
    root = hand_made(tmp_path / "ds")
    before = load_folder(root).dataset
    assert load_folder(root).cached
    write_png(root / "images/f0.png", np.full((16, 16), 7, np.uint8))  # same path, other bytes
    after = load_folder(root)
    assert not after.cached and (after.dataset.images[0] == 7).all()
    assert after.dataset.content_hash() != before.content_hash()


def test_the_cache_can_be_switched_off(tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("LUSBENCH_CACHE_DIR", "off")
    root = hand_made(tmp_path / "ds")
    load_folder(root)
    assert not load_folder(root).cached and not cache_dir.exists()


def test_hand_made_folder_reads_levels_blank_maps_and_defaults(tmp_path):
    got = load_folder(hand_made(tmp_path / "ds")).dataset
    assert got.images.shape == (4, 16, 16) and got.confidence.shape == (4, 2, 16, 16)
    assert got.confidence_scale == 4 and got.classes == ("b_lines", "effusion")
    assert got.confidence[2, 0, 5, 2] == 4 and got.confidence[2, 0, 0, 0] == 2 and got.confidence[2, 0, 5, 3] == 0
    assert not got.confidence[:, 1].any()  # blank cells: empty maps
    assert got.patient.tolist() == [0, 1, 0, 1] and got.visit.tolist() == [1, 1, 2, 2]
    assert got.visits is None and got.patients is None and got.true_masks is None and got.rater_masks is None
    assert SFRatioTask().skip_reason(got) == "dataset has no visits.sf_ratio"


def test_16_bit_png_tiff_float_tiff_npy_and_multipage_tiff(tmp_path):
    root = tmp_path / "ds"
    grey16 = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535 in steps of 257
    expected = np.arange(256, dtype=np.uint8).reshape(16, 16)
    (root / "images").mkdir(parents=True)
    Image.fromarray(grey16).save(root / "images/a.png")
    Image.fromarray(grey16).save(root / "images/b.tif")
    Image.fromarray(expected.astype(np.float32) / 255).save(root / "images/c.tif")
    np.save(root / "images/d.npy", expected)
    pages = [Image.fromarray(np.full((16, 16), 10 * k, np.uint8)) for k in range(3)]
    pages[0].save(root / "images/e.tif", save_all=True, append_images=pages[1:])
    level = np.zeros((2, 16, 16), np.float32)
    level[0, :4] = 0.75
    np.save(root / "stack.npy", level)
    rows = [["frame", "patient", "image", "image_frame", "confidence"]]
    rows += [[name, 0, f"images/{name}.{ext}", "", "stack.npy"] for name, ext in (("a", "png"), ("b", "tif"),
                                                                                  ("c", "tif"), ("d", "npy"))]
    rows.append(["e", 1, "images/e.tif", 2, "stack.npy"])
    write_csv(root / "frames.csv", rows)
    manifest(root)
    got = load_folder(root).dataset
    for i in range(4):
        assert np.array_equal(got.images[i], expected), i
    assert (got.images[4] == 20).all()
    assert got.confidence[:, 0, :4].min() == 3 and got.confidence[:, 0, 4:].max() == 0  # 0.75 on a scale of 4


def _dicom(path: Path, pixels: np.ndarray, bits: int, photometric: str = "MONOCHROME2") -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # ultrasound multi-frame image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_single_and_multi_frame_with_the_stored_bit_depth(tmp_path):
    pytest.importorskip("pydicom")
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    twelve = np.full((16, 16), 4095, np.uint16)
    twelve[:8] = 0
    _dicom(root / "images/single.dcm", twelve, bits=12)
    cine = np.stack([np.full((16, 16), 16 * 257 * k // 257, np.uint16) for k in range(3)])  # 0, 16, 32 of 8 bits
    _dicom(root / "images/cine.dcm", cine, bits=8)
    _dicom(root / "images/inverted.dcm", twelve, bits=12, photometric="MONOCHROME1")
    rows = [["frame", "patient", "image", "image_frame", "confidence.b_lines", "confidence.effusion"],
            ["s", 0, "images/single.dcm", "", "", ""], ["c2", 1, "images/cine.dcm", 2, "", ""],
            ["c1", 1, "images/cine.dcm", 1, "", ""], ["inv", 2, "images/inverted.dcm", "", "", ""]]
    write_csv(root / "frames.csv", rows)
    manifest(root)
    got = load_folder(root).dataset
    assert got.images[0, :8].max() == 0 and got.images[0, 8:].min() == 255  # 12-bit 4095 -> 255
    assert (got.images[1] == 32).all() and (got.images[2] == 16).all()
    assert got.images[3, :8].min() == 255 and got.images[3, 8:].max() == 0  # MONOCHROME1: 0 is white
    rows[2][3] = ""
    write_csv(root / "frames.csv", rows)
    (problem,) = problems_of(root)
    assert problem.startswith("frames.csv:3: frame 'c2': image 'images/cine.dcm': multi-frame DICOM with 3 frames")


def test_the_size_policy_resizes_images_by_area_and_maps_by_nearest(tmp_path):
    root = tmp_path / "ds"
    rows = [["frame", "patient", "image", "confidence.b_lines", "confidence.effusion"]]
    for i, size in enumerate((16, 32)):
        image = np.zeros((size, size), np.uint8)
        image[:, ::2] = 200  # stripes: area averaging gives 100, nearest would give 0 or 200
        write_png(root / f"images/{i}.png", image)
        level = np.zeros((size, size), np.uint8)
        level[: size // 2] = 3
        level[size // 2:, : size // 2] = 1
        write_png(root / f"conf/{i}.png", level)
        rows.append([str(i), i, f"images/{i}.png", f"conf/{i}.png", ""])
    write_csv(root / "frames.csv", rows)
    manifest(root)
    (problem,) = problems_of(root)
    assert problem.startswith("frames.csv:3: frame '1': image 'images/1.png' is 32x32, the first frame is 16x16")
    manifest(root, image_size=[8, 8])
    got = load_folder(root).dataset
    assert got.images.shape == (2, 8, 8) and (got.images == 100).all()
    assert set(np.unique(got.confidence).tolist()) == {0, 1, 3}  # only levels that were there
    assert (got.confidence[:, 0, :4] == 3).all() and (got.confidence[:, 0, 4:, :4] == 1).all()
    assert load_folder(root, size=(4, 6)).dataset.images.shape == (2, 4, 6)  # the spec's size wins


def test_rater_masks_only_give_the_fraction_of_raters_or_staple(tmp_path):
    root = tmp_path / "ds"
    rows = [["frame", "patient", "image"] + [f"rater{r}.{c}" for r in (1, 2, 3) for c in ("b_lines", "effusion")]]
    for i in range(2):
        write_png(root / f"images/{i}.png", np.full((8, 8), 50, np.uint8))
        cells = []
        for r in range(3):
            mask = np.zeros((8, 8), np.uint8)
            mask[: 2 + 2 * r] = 255  # rows 0-1: 3 raters, 2-3: 2 raters, 4-5: 1 rater
            write_png(root / f"raters/{r}/{i}.png", mask)
            cells += [f"raters/{r}/{i}.png", ""]
        rows.append([str(i), i, f"images/{i}.png", *cells])
    write_csv(root / "frames.csv", rows)
    manifest(root, confidence_scale=3)
    got = load_folder(root).dataset
    assert got.rater_masks.shape == (2, 3, 2, 8, 8)
    assert got.confidence[0, 0, :, 0].tolist() == [3, 3, 2, 2, 1, 1, 0, 0]
    manifest(root, confidence_scale=10)
    assert load_folder(root).dataset.confidence[0, 0, :, 0].tolist() == [10, 10, 7, 7, 3, 3, 0, 0]  # 2/3 -> 6.67 -> 7
    pytest.importorskip("lusbench.data.staple")
    manifest(root, confidence_scale=10, consensus="staple")
    staple = load_folder(root).dataset.confidence[0, 0, :, 0]
    assert staple[0] == 10 and staple[-1] == 0 and (np.diff(staple.astype(int)) <= 0).all()


def _clinical(root: Path, visits: list[list[object]], patients: list[list[object]] | None) -> None:
    write_csv(root / "visits.csv", visits)
    if patients is not None:
        write_csv(root / "patients.csv", patients)
    manifest(root, visits="visits.csv", **({"patients": "patients.csv"} if patients is not None else {}))


def test_sf_ratio_from_spo2_and_fio2_and_the_sf_change_rule(tmp_path):
    root = hand_made(tmp_path / "ds")  # patient 0: visits 1, 2; patient 1: visits 1, 2
    _clinical(root, [["patient", "visit", "spo2", "fio2", "sf_ratio"], [0, 1, 90, 0.5, ""], [0, 2, 95, 0.21, ""],
                     [1, 1, 96, 0.4, 240], [1, 2, 96, 0.4, ""]], None)
    got = load_folder(root).dataset
    assert np.allclose(got.visits["sf_ratio"], [180, 95 / 0.21, 240, 240])
    # Derived: patient 0 rose by 272 >= 20 -> improved; patient 1 did not change -> 0.
    assert got.patients["patient"].tolist() == [0, 1] and got.patients["sf_change"].tolist() == [1, 0]
    _clinical(root, [["patient", "visit", "spo2", "fio2", "sf_ratio"], [0, 1, 90, 0.5, 300]], None)
    assert problems_of(root) == ["visits.csv:2: sf_ratio 300 disagrees with spo2/fio2 = 180"]


def test_a_patient_without_a_clinical_row_is_a_notice_and_the_tasks_skip_it(tmp_path):
    root = hand_made(tmp_path / "ds", n=12)  # patients 0 and 1, visits 1..6
    visits = [["patient", "visit", "sf_ratio"]] + [[p, v, 200 + 10 * v + p] for p in (0,) for v in range(1, 7)]
    _clinical(root, visits, [["patient", "readmission_30d"], [0, 1], [7, 0]])
    loaded = load_folder(root)
    assert any("visits.csv: no row for 6 visit(s) with frames (patient 1 visit 1" in n for n in loaded.notices)
    assert any("patients.csv: no row for 1 patient(s) with frames (patient 1)" in n and "skip them" in n
               for n in loaded.notices)
    assert any("patients.csv: 1 row(s) have no frames and are ignored (patient 7)" in n for n in loaded.notices)
    got = loaded.dataset
    assert got.patients["patient"].tolist() == [0, 1] and np.isnan(got.patients["readmission_30d"][1])
    y, patient, _ = SFRatioTask().targets(got)
    assert set(patient.tolist()) == {0} and len(y) == 6  # patient 1's visits are left out
    assert SFChangeTask().targets(got)[1].tolist() == [0]  # derived for patient 0 only


def test_every_problem_is_listed_with_file_and_line(tmp_path):
    root = hand_made(tmp_path / "ds", n=6)
    rows = list(csv.reader((root / "frames.csv").open()))
    rows[1][5] = "../outside.png"  # escapes the folder
    rows[2][0] = "f0"  # duplicate id
    rows[3][4] = "images/missing.png"
    rows[4][1] = "x"  # non-numeric patient
    (root / "images/f4.png").write_bytes((root / "images/f4.png").read_bytes()[:60])  # truncated
    write_png(root / "confidence/b_lines/f5.png", np.full((16, 16), 9, np.uint8))  # off the scale of 4
    write_csv(root / "frames.csv", rows)
    _clinical(root, [["patient", "visit", "sf_ratio"], [0, 1, "NaN"], [0, 2, "abc"], [1, 1, 300], [1, 1, 310]], None)
    problems = problems_of(root)
    expected = [
        "frames.csv:3: duplicate frame id 'f0' (first on line 2)",
        "frames.csv:5: patient: 'x' is not an integer",
        "frames.csv:2: frame 'f0': confidence.b_lines '../outside.png': path '../outside.png' escapes the dataset folder",
        "frames.csv:4: frame 'f2': image 'images/missing.png': file 'images/missing.png' does not exist",
        "frames.csv:6: frame 'f4': image 'images/f4.png': cannot decode image",
        "frames.csv:7: frame 'f5': confidence.b_lines 'confidence/b_lines/f5.png': confidence levels 9..9 lie outside "
        "the declared scale 0..4",
        "visits.csv:2: sf_ratio: 'NaN' is not a finite number",
        "visits.csv:3: sf_ratio: 'abc' is not a number",
        "visits.csv:5: duplicate row for patient 1 visit 1 (first on line 4)",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda root: (root / MANIFEST_FILE).write_text("{"), "lusbench.json:1: not valid JSON"),
    (lambda root: manifest(root, classes=[]), "lusbench.json: 'classes' must be a non-empty list"),
    (lambda root: manifest(root, confidence_scale=0), "lusbench.json: 'confidence_scale' must be an integer in 1..255"),
    (lambda root: manifest(root, colour="x"), "lusbench.json: unknown key 'colour'"),
    (lambda root: (root / MANIFEST_FILE).unlink(), "lusbench.json: no manifest"),
    (lambda root: write_csv(root / "frames.csv", [["frame", "patient", "image", "confidence.b_lines", "confidence.effusion"]]),
     "frames.csv: the dataset is empty"),
    (lambda root: write_csv(root / "frames.csv", [["frame", "patient", "image", "confidence.b_lines", "confidence.pleura"]]),
     "frames.csv:1: column 'confidence.pleura': unknown class 'pleura'"),
    (lambda root: write_csv(root / "frames.csv", [["frame", "patient", "image", "confidance.b_lines"], ["a", 0, "x.png", ""]]),
     "frames.csv:1: unknown column 'confidance.b_lines'"),
])
def test_manifest_and_table_problems(tmp_path, edit, problem):
    root = hand_made(tmp_path / "ds", n=2)
    edit(root)
    problems = problems_of(root)
    assert problems[0].startswith(problem), problems


def test_a_map_of_another_shape_and_a_non_binary_mask(tmp_path):
    root = hand_made(tmp_path / "ds", n=2)
    write_png(root / "confidence/b_lines/f1.png", np.zeros((16, 12), np.uint8))
    rows = list(csv.reader((root / "frames.csv").open()))
    rows[0].append("true.b_lines")
    rows[0].append("true.effusion")
    write_png(root / "t.png", np.full((16, 16), 128, np.uint8))
    rows[1] += ["t.png", ""]
    rows[2] += ["", ""]
    write_csv(root / "frames.csv", rows)
    problems = problems_of(root)
    assert problems == ["frames.csv:2: frame 'f0': true.b_lines 't.png': a mask must be binary (0/1 or 0/255), got values 128",
                        "frames.csv:3: frame 'f1': confidence.b_lines 'confidence/b_lines/f1.png' is 16x12, its image is 16x16"]


def test_export_refuses_to_overwrite_and_replaces_only_a_folder_dataset_with_force(tmp_path, raters3):
    from lusbench.errors import UserError

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(UserError, match="exists and is not"):
            export_folder(raters3, other, force=force)
    assert (other / "notes.txt").read_text() == "keep me"
    export_folder(raters3, tmp_path / "ds")
    (tmp_path / "ds" / "stale.txt").write_text("old")
    export_folder(raters3, tmp_path / "ds", force=True)
    assert not (tmp_path / "ds" / "stale.txt").exists() and (tmp_path / "ds" / MANIFEST_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mine"]  # no temporary left behind


def test_the_folder_plugin_prints_notices_and_checks_its_size_argument(tmp_path, capsys):
    root = hand_made(tmp_path / "ds")
    _clinical(root, [["patient", "visit", "sf_ratio"], [0, 1, 300], [0, 2, 310]], None)
    datasets = load_plugins().datasets
    got = datasets.create(f"folder:{root},size=8")
    assert got.images.shape == (4, 8, 8)
    assert f"dataset folder {root}: visits.csv: no row for 2 visit(s)" in capsys.readouterr().err
    from lusbench.errors import UserError

    with pytest.raises(UserError, match="size='0': expected N or HxW"):
        datasets.create(f"folder:{root},size=0")
    with pytest.raises(UserError, match="usage: folder:PATH"):
        datasets.create("folder")
    shutil.rmtree(root / "images")
    with pytest.raises(UserError, match=r"dataset folder .*: frames.csv:2: frame 'f0': image 'images/f0.png': file .* does "
                                        r"not exist \(and 3 more problems: lusbench data validate"):
        datasets.create(f"folder:{root}")
