"""The sensitivity curve of ``lusbench data sensitivity`` in the HTML report: from ``--sensitivity FILE`` or the run
directory's ``sensitivity.json``, drawn from a real document that the real CLI wrote; bad files are exit 2."""

from __future__ import annotations

import base64
import html as html_lib
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from test_report import DATA_URI, images, parse, small_doc

from lusbench.evaluate.sensitivity import SCHEMA
from lusbench.results.document import write_leaderboard
from lusbench.results.report import read_sensitivity, sensitivity_caption

SPEC = "synthetic-lus:patients=12,size=32,zones=2"
TITLE = "<h2>Sensitivity of the downstream tasks to segmentation quality</h2>"


def doc_commands() -> list[list[str]]:
    """The example of docs/cli/report.md ("The sensitivity curve"): the sensitivity run, then the report."""
    text = (REPO / "docs" / "cli" / "report.md").read_text()
    block = re.search(r"```\n(.*?)```", text[text.index("## The sensitivity curve"):], re.S).group(1)
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert [c[:3] for c in commands] == [["lusbench", "data", "sensitivity"], ["lusbench", "report"]]
    return commands


def run_dir(tmp_path: Path, sensitivity: Path | None = None) -> Path:
    """``tmp_path/lusbench-runs`` (the default run directory) with a stored leaderboard and, if given,
    ``sensitivity`` copied in as sensitivity.json."""
    out = tmp_path / "lusbench-runs"
    out.mkdir()
    write_leaderboard(small_doc(), out / "leaderboard.json")
    if sensitivity is not None:
        shutil.copy(sensitivity, out / "sensitivity.json")
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """The documented sensitivity run, on a 12-patient dataset with two levels (seconds, not minutes), in a
    directory holding a run; plus the PNG that ``--out`` draws of the same document."""
    cwd = tmp_path_factory.mktemp("sensitivity")
    out = run_dir(cwd)
    command = doc_commands()[0]
    args = [SPEC if a == "synthetic-lus" else a for a in command[1:]]
    assert args != command[1:]  # the dataset spec was swapped for the small one
    proc = run_cli(*args, "--levels", "1", "0.7", "--task", "sf-ratio", "--task", "sf-change", "--out", "curve.png",
                   cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return {"cwd": cwd, "json": out / "sensitivity.json", "png": cwd / "curve.png"}


def section(html: str) -> str:
    start = html.index(TITLE)
    end = html.find("<h2>", start + len(TITLE))
    return html[start:end]


def embedded_png(html_part: str) -> bytes:
    (src,) = [a["src"] for t, a in parse(html_part).tags if t == "img"]
    return base64.b64decode(src[len(DATA_URI):])


def check_curve(html: str, made: dict[str, Path]) -> None:
    doc = json.loads(made["json"].read_text())
    part = section(html)
    assert len(images(html)) == 5  # the report's four figures and the curve
    # The very curve that `lusbench data sensitivity --out` draws of the same document.
    assert embedded_png(part) == made["png"].read_bytes()
    caption = html_lib.unescape(part[part.index('<p class="note">'):])
    for stated in (f"dataset {doc['dataset']}", f"{doc['patients']} patients", f"({doc['reference']})",
                   f"band: {doc['interval']}"):
        assert stated in caption, stated
    assert "patient bootstrap" in doc["interval"]  # the interval's unit is in what the caption quotes
    assert doc["skipped"] and all(name in caption for name in doc["skipped"])  # sf-change cannot run on 12 patients
    # The stored run is not on the curve's dataset, and the caption says so.
    assert f"This run's dataset is {small_doc()['config']['dataset']}, not the curve's." in caption


def test_the_caption_names_no_other_dataset_when_the_run_is_on_the_curves(made):
    sensitivity = read_sensitivity(made["json"])
    run = {**small_doc(), "config": {"dataset": sensitivity["dataset"]}}
    caption = sensitivity_caption(sensitivity, run)
    assert "This run's dataset" not in caption and f"dataset {sensitivity['dataset']}," in caption


def test_run_directory_sensitivity_json_is_picked_up(made):
    report_command = doc_commands()[1]
    proc = run_cli(*report_command[1:], cwd=made["cwd"])
    assert proc.returncode == 0, proc.stderr
    report = Path("lusbench-runs") / "report.html"
    assert proc.stdout == f"wrote {report} (with the sensitivity curve of {Path('lusbench-runs') / 'sensitivity.json'})\n"
    check_curve((made["cwd"] / report).read_text(), made)


def test_sensitivity_flag_takes_a_file_elsewhere(tmp_path, made):
    out = run_dir(tmp_path)
    page = tmp_path / "page.html"
    proc = run_cli("report", "--out", str(out), "--sensitivity", str(made["json"]), "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    check_curve(page.read_text(), made)
    # The flag wins over the run directory's own file.
    other = json.loads(made["json"].read_text())
    other["dataset"] = "another-dataset"
    (out / "sensitivity.json").write_text(json.dumps(other))
    assert run_cli("report", "--out", str(out), "--sensitivity", str(made["json"]), "--html", str(page)).returncode == 0
    assert "another-dataset" not in page.read_text()


def test_without_sensitivity_input_the_report_has_no_curve(tmp_path):
    out = run_dir(tmp_path)
    proc = run_cli("report", "--out", str(out))
    assert proc.returncode == 0 and proc.stdout == f"wrote {out / 'report.html'}\n", proc.stderr
    html = (out / "report.html").read_text()
    assert "ensitivity" not in html and len(images(html)) == 4


def _not_json(path: Path, made: dict[str, Path]) -> None:
    path.write_text('{"schema": "lusbench.sensitivity/1", "levels": [')


def _leaderboard(path: Path, made: dict[str, Path]) -> None:
    write_leaderboard(small_doc(), path)


def _no_levels(path: Path, made: dict[str, Path]) -> None:
    doc = json.loads(made["json"].read_text())
    del doc["levels"]
    path.write_text(json.dumps(doc))


def _headline_missing(path: Path, made: dict[str, Path]) -> None:
    doc = json.loads(made["json"].read_text())
    del doc["levels"][1]["metrics"]["sf_ratio.mae"]["low"]
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(("write", "needle"), [
    (_not_json, "is not readable JSON"),
    (_leaderboard, f"expected '{SCHEMA}'"),
    (_no_levels, "no 'levels'"),
    (_headline_missing, "levels[1] has no value, low and high of sf_ratio.mae"),
])
@pytest.mark.parametrize("given", ["flag", "run-directory"])
def test_a_bad_sensitivity_file_is_one_line_exit_2_and_nothing_written(tmp_path, made, write, needle, given):
    out = run_dir(tmp_path)
    bad = out / "sensitivity.json" if given == "run-directory" else tmp_path / "bad.json"
    write(bad, made)
    (out / "report.html").write_text("old report")
    proc = run_cli("report", "--out", str(out), *(["--sensitivity", str(bad)] if given == "flag" else []))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"lusbench report: error: {bad} ") and needle in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert (out / "report.html").read_text() == "old report"
    left = {"leaderboard.json", "report.html"} | ({"sensitivity.json"} if given == "run-directory" else set())
    assert {p.name for p in out.iterdir()} == left  # no temporary file either


def test_a_missing_sensitivity_file_is_exit_2(tmp_path):
    out = run_dir(tmp_path)
    missing = tmp_path / "nope.json"
    proc = run_cli("report", "--out", str(out), "--sensitivity", str(missing))
    assert proc.returncode == 2 and proc.stderr == f"lusbench report: error: {missing} does not exist\n"
    assert not (out / "report.html").exists()
