"""`lusbench data preview|validate|export`: errors through a real process, the rest through ``main`` in-process."""

import argparse
import json
import textwrap
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from lusbench.api.plugins import load_plugins
from lusbench.cli import build_parser, main
from tests.conftest import run_cli

SMALL = "synthetic-lus:patients=3,zones=2,size=32"  # in canonical order, so it is also the dataset's name


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err

# A dataset plugin whose frames reference a visit its clinical table lacks.
BROKEN_TABLE = textwrap.dedent(
    '''
    import numpy as np
    import lusbench
    from lusbench.data.dataset import LUSDataset

    def make(**kwargs):
        """Two frames, one visit row missing."""
        return LUSDataset(
            name="gappy", images=np.zeros((2, 8, 8), np.uint8), confidence=np.ones((2, 5, 8, 8), np.uint8),
            confidence_scale=10, patient=np.array([0, 0]), visit=np.array([1, 2]), zone=np.array([1, 1]),
            visits={"patient": np.array([0]), "visit": np.array([1]), "sf_ratio": np.array([300.0])},
        )

    @lusbench.hookimpl
    def register_datasets(register):
        register("gappy", make)
    '''
)


# A valid dataset plugin with neither true masks nor a latent severity.
PLAIN = textwrap.dedent(
    '''
    import numpy as np
    import lusbench
    from lusbench.data.dataset import LUSDataset

    def make(**kwargs):
        """Four frames, labelled more and more."""
        confidence = np.zeros((4, 5, 16, 16), np.uint8)
        for i in range(4):
            confidence[i, 2, :, : 4 * i] = 10
        return LUSDataset(name="plain", images=np.full((4, 16, 16), 90, np.uint8), confidence=confidence,
                          confidence_scale=10, patient=np.arange(4), visit=np.ones(4, int), zone=np.ones(4, int))

    @lusbench.hookimpl
    def register_datasets(register):
        register("plain", make)
    '''
)


def test_preview_of_a_dataset_without_truth_or_severity(tmp_path, capsys, monkeypatch):
    (tmp_path / "plain_plugin.py").write_text(PLAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "plain.png"
    code, stdout, stderr = cli(capsys, "-p", "plain_plugin", "data", "preview", "plain", "--out", str(out), "--frames", "2")
    assert code == 0, stderr
    assert "(2 frames of plain)" in stdout
    picture = matplotlib.image.imread(out)
    assert picture.shape[0] < 1450  # B-mode and 5 confidence rows: no true-mask row (7 rows are > 1500 px)


def test_preview_writes_a_montage_png(tmp_path, capsys):
    out = tmp_path / "preview.png"
    code, stdout, stderr = cli(capsys, "data", "preview", SMALL, "--out", str(out), "--frames", "4")
    assert code == 0, stderr
    assert f"wrote {out} (4 frames of {SMALL})" in stdout
    picture = matplotlib.image.imread(out)
    assert picture.shape[0] > 1500 and picture.shape[1] > 900  # 7 rows (B-mode, 5 classes, true masks) x 4 frames
    assert picture[..., :3].std() > 0.1  # not a blank canvas
    # The colour bar: the scale's 0% colour (viridis' dark purple) is drawn although no frame pixel shows it
    # (unlabelled pixels are transparent), and so is its 100% yellow.
    for colour in ((0.267, 0.005, 0.329), (0.993, 0.906, 0.144)):
        assert (np.abs(picture[..., :3] - colour).max(axis=-1) < 0.02).sum() > 200, colour


@pytest.mark.slow
def test_preview_of_the_default_dataset(tmp_path):
    out = tmp_path / "preview.png"
    proc = run_cli("data", "preview", "synthetic-lus", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 100_000


def test_validate_prints_a_summary(capsys):
    code, out, stderr = cli(capsys, "data", "validate", SMALL)
    assert code == 0, stderr
    assert f"dataset     {SMALL}" in out
    assert "12 images 32x32 uint8, 3 patients, visits 1..2, zones 1..2" in out
    assert "confidence scale 10 (11 levels, uint8)" in out
    for name in ("pleural_line", "a_lines", "b_lines", "consolidation", "effusion", "sf_ratio", "sf_change",
                 "readmission_30d", "severity"):
        assert name in out
    assert out.rstrip().endswith("valid") and len(out.splitlines()) < 25


@pytest.mark.parametrize(("spec", "key"), [("synthetic-lus:patients=0", "patients"), ("synthetic-lus:size=abc", "size"),
                                           ("synthetic-lus:nosuch=1", "nosuch")])
def test_bad_arguments_are_one_line_naming_the_key(spec, key):
    proc = run_cli("data", "validate", spec)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"lusbench data: error: dataset '{spec}': ") and f"{key}" in proc.stderr


def test_bad_arguments_write_nothing(tmp_path, capsys):
    for action in ("export", "preview"):
        code, _, stderr = cli(capsys, "data", action, "synthetic-lus:size=abc", "--out", str(tmp_path / "x"))
        assert code == 2 and "size='abc': expected an integer" in stderr
    assert list(tmp_path.iterdir()) == []


def test_validate_rejects_an_inconsistent_dataset_from_a_plugin(tmp_path):
    (tmp_path / "gappy_plugin.py").write_text(BROKEN_TABLE)
    proc = run_cli("-p", "gappy_plugin", "data", "validate", "gappy", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    problem = "clinical table 'visits' has no row for patient 0 visit 2"
    assert proc.stderr == f"lusbench data: error: dataset 'gappy' is invalid: {problem}\n"


def test_export_writes_every_array_atomically(tmp_path, capsys):
    out = tmp_path / "small.npz"
    code, stdout, stderr = cli(capsys, "data", "export", SMALL, "--out", str(out))
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: 12 frames, ")
    assert [p.name for p in tmp_path.iterdir()] == ["small.npz"]  # no temporary file left behind
    expected = load_plugins().datasets.create(SMALL)  # same spec, same seed: the same arrays
    with np.load(out) as npz:
        assert str(npz["name"]) == SMALL and tuple(npz["classes"]) == expected.classes
        assert int(npz["confidence_scale"]) == 10
        for key in ("images", "confidence", "true_masks", "patient", "visit", "zone"):
            assert npz[key].dtype == getattr(expected, key).dtype
            assert np.array_equal(npz[key], getattr(expected, key)), key
        assert np.array_equal(npz["visits.sf_ratio"], expected.visits["sf_ratio"])
        assert np.array_equal(npz["patients.readmission_30d"], expected.patients["readmission_30d"])
        assert np.array_equal(npz["frame_info.severity"], expected.frame_info["severity"])
        assert "rater_masks" not in npz.files


def test_export_keeps_rater_masks_and_replaces_an_existing_file(tmp_path, capsys):
    out = tmp_path / "raters.npz"
    out.write_text("old")
    code, _, stderr = cli(capsys, "data", "export", "synthetic-lus:patients=2,size=32,zones=1,raters=2", "--out", str(out))
    assert code == 0, stderr
    with np.load(out) as npz:
        assert npz["rater_masks"].shape == (4, 2, 5, 32, 32) and npz["rater_masks"].dtype == bool


def test_export_into_a_missing_directory_fails_cleanly(tmp_path, capsys):
    code, _, stderr = cli(capsys, "data", "export", SMALL, "--out", str(tmp_path / "nowhere" / "x.npz"))
    assert code == 2
    assert stderr.startswith("lusbench data: error: --out ") and "does not exist" in stderr


def test_data_needs_an_action():
    proc = run_cli("data")
    assert proc.returncode == 2 and "ACTION" in proc.stderr and proc.stderr.count("\n") == 1


def test_every_data_flag_is_documented():
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli" / "data.md").read_text()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    actions = next(a for a in commands["data"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"init", "preview", "validate", "export"} <= set(actions)
    for name, parser in actions.items():
        assert f"## `data {name}`" in page
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page, f"docs/cli/data.md does not document {name} {flag}"


# Folder datasets through the CLI: init, validate listing every problem, export to the folder format.


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LUSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return {"LUSBENCH_CACHE_DIR": str(tmp_path / "cache")}


def _pngs(root: Path, frames: int = 6, raters: int = 0) -> None:
    """A folder as a user has it: images/p<P>_v<V>_z<Z>.png and confidence/<class>/ (or raters/<r>/<class>/) maps."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(frames):
        name = f"p{i % 3}_v{1 + i // 3}_z{i % 2}"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        layers = [f"raters/r{r}" for r in range(raters)] if raters else ["confidence"]
        for r, layer in enumerate(layers):
            (root / layer / "b_lines").mkdir(parents=True, exist_ok=True)
            level = np.zeros((16, 16), np.uint8)
            level[:, : 2 + i + r] = 255 if raters else 10
            Image.fromarray(level).save(root / layer / "b_lines" / f"{name}.png")


def test_init_scaffolds_a_folder_of_pngs_that_then_validates(tmp_path, capsys, own_cache):
    root = tmp_path / "mine"
    _pngs(root)
    code, out, err = cli(capsys, "data", "init", str(root))
    assert code == 2 and "--scale N is needed with confidence maps" in err
    code, out, err = cli(capsys, "data", "init", str(root), "--scale", "10")
    assert code == 0, err
    assert "frames      6 in images/" in out and "classes     b_lines" in out
    frames = (root / "frames.csv").read_text().splitlines()
    assert frames[0] == "frame,patient,visit,zone,image,confidence.b_lines"
    assert frames[1] == "p0_v1_z0,0,1,0,images/p0_v1_z0.png,confidence/b_lines/p0_v1_z0.png"
    assert (root / "visits.csv").read_text().splitlines()[:2] == ["patient,visit,sf_ratio,spo2,fio2", "0,1,,,"]
    code, out, err = cli(capsys, "data", "validate", str(root))
    assert code == 0, err
    assert "6 images 16x16 uint8, 3 patients, visits 1..2, zones 0..1" in out and out.rstrip().endswith("valid")
    assert "visits      6 rows: sf_ratio (all unknown)" in out
    (root / "frames.csv").write_text("edited")
    code, _, err = cli(capsys, "data", "init", str(root), "--scale", "10")
    assert code == 2 and "lusbench.json exists (--force overwrites" in err
    assert (root / "frames.csv").read_text() == "edited"
    code, _, err = cli(capsys, "data", "init", str(root), "--scale", "10", "--force")
    assert code == 0 and (root / "frames.csv").read_text().startswith("frame,")


def test_init_from_per_rater_masks(tmp_path, capsys, own_cache):
    root = tmp_path / "raters"
    _pngs(root, raters=2)
    code, out, err = cli(capsys, "data", "init", str(root))
    assert code == 0, err
    assert "raters      rater1 = raters/r0, rater2 = raters/r1" in out
    manifest = json.loads((root / "lusbench.json").read_text())
    assert manifest["confidence_scale"] == 2 and manifest["classes"] == ["b_lines"]
    code, out, err = cli(capsys, "data", "validate", str(root))
    assert code == 0, err
    assert "2 rater(s) per frame" in out


def test_validate_lists_every_problem_and_export_writes_nothing(tmp_path, own_cache):
    root = tmp_path / "bad"
    _pngs(root)
    assert run_cli("data", "init", str(root), "--scale", "4", env=own_cache).returncode == 0
    (root / "images" / "p1_v1_z1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = run_cli("data", "validate", str(root), env=own_cache)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-1] == f"lusbench data: error: dataset folder {root}: 6 problems (listed above)"
    # The broken image, and the maps at level 10 on a scale of 4 of the 5 other frames: each one line naming the
    # table, the line and the file.
    assert sum(f"{root}/frames.csv:" in line and "lie outside the declared scale 0..4" in line for line in lines) == 5
    assert any(line.startswith(f"{root}/frames.csv:4: frame 'p1_v1_z1': image 'images/p1_v1_z1.png': not a readable image")
               for line in lines)
    out = tmp_path / "copy"
    proc = run_cli("data", "export", str(root), "--out", str(out), env=own_cache)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "and 5 more problems" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no folder, no temporary, no cache entry


def test_export_to_a_folder_then_validate_and_load_gives_the_same_arrays(tmp_path, capsys, own_cache):
    out = tmp_path / "exported"
    code, stdout, stderr = cli(capsys, "data", "export", SMALL + ",raters=2", "--out", str(out))
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: 12 frames, ")
    code, stdout, stderr = cli(capsys, "data", "validate", f"folder:{out}")
    assert code == 0 and "2 rater(s) per frame, true masks: yes" in stdout
    expected = load_plugins().datasets.create(SMALL + ",raters=2")
    assert load_plugins().datasets.create(f"folder:{out}").content_hash() == expected.content_hash()
    code, _, stderr = cli(capsys, "data", "export", SMALL, "--out", str(out))
    assert code == 2 and "exists and is not empty (--force replaces an existing folder dataset)" in stderr
    code, _, stderr = cli(capsys, "data", "export", SMALL, "--out", str(out), "--force")
    assert code == 0, stderr
    assert load_plugins().datasets.create(f"folder:{out}").rater_masks is None
    code, _, stderr = cli(capsys, "data", "export", SMALL, "--out", str(tmp_path / "as-npz"), "--format", "npz")
    assert code == 0 and np.load(tmp_path / "as-npz")["images"].shape == (12, 32, 32)
