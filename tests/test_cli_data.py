"""`lusbench data preview|validate|export`: errors through a real process, the rest through ``main`` in-process."""

import argparse
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
    assert matplotlib.image.imread(out).shape[0] < 600  # two rows: no true-mask row


def test_preview_writes_a_montage_png(tmp_path, capsys):
    out = tmp_path / "preview.png"
    code, stdout, stderr = cli(capsys, "data", "preview", SMALL, "--out", str(out), "--frames", "4")
    assert code == 0, stderr
    assert f"wrote {out} (4 frames of {SMALL})" in stdout
    picture = matplotlib.image.imread(out)
    assert picture.shape[0] > 500 and picture.shape[1] > 700  # 3 rows x 4 frames
    assert picture[..., :3].std() > 0.1  # not a blank canvas


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
    assert set(actions) == {"preview", "validate", "export"}
    for name, parser in actions.items():
        assert f"## `data {name}`" in page
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page, f"docs/cli/data.md does not document {name} {flag}"
