"""``lusbench check``: tolerances, direction-aware verdicts and exit codes 0/1/2/3 through the real CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from test_stats import make_results

from lusbench.errors import CannotCompareError, UserError
from lusbench.evaluate.run_results import LABELS_TRUE
from lusbench.results.check import (
    VERDICT_IMPROVED,
    VERDICT_MISSING,
    VERDICT_NA,
    VERDICT_NEW,
    VERDICT_OK,
    VERDICT_REGRESSION,
    compare,
    config_differences,
    parse_tolerances,
    tolerance_for,
)
from lusbench.results.document import read_leaderboard, write_leaderboard
from lusbench.results.leaderboard import build_leaderboard


@pytest.fixture(scope="module")
def doc() -> dict:
    return build_leaderboard(make_results())


def entry(doc: dict, strategy: str, metric: str) -> dict:
    return next(r for r in doc["rows"] if r["strategy"] == strategy)["metrics"][metric]


def line(lines, row: str, metric: str):
    return next(ln for ln in lines if ln.row == row and ln.metric == metric)


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lusbench.cli", "check", *args], capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------------------- library


def test_default_tolerances_are_declared_by_the_metrics():
    from lusbench.evaluate.segmetrics import segmentation_metric_defs
    from lusbench_builtins.tasks import ReadmissionTask, SFChangeTask, SFRatioTask

    defs = segmentation_metric_defs(("b_lines",), has_true_masks=True)
    for task in (SFRatioTask(), SFChangeTask(), ReadmissionTask()):
        defs += task.metric_defs()
    declared = {d.name: d.tolerance for d in defs}
    assert tolerance_for("dice", {}, {}, declared).value == 0.05
    assert tolerance_for("dice.b_lines", {}, {}, declared).value == 0.05
    assert tolerance_for("true.hd95", {}, {}, declared).value == 5.0
    assert tolerance_for("readmission_30d.brier", {}, {}, declared).value == 0.03
    assert tolerance_for("sf_ratio.mae", {}, {}, declared).value == 15.0
    assert tolerance_for("sf_change.auroc", {}, {}, declared).value == 0.10
    assert tolerance_for("some_new_metric", {}, {}, declared).value == 0.05  # declares none: the fallback


def test_tolerance_precedence_flag_then_baseline_then_declared():
    stored = {"dice.*": 0.2, "dice": 0.1}
    declared = {"dice": 0.07, "hd95": 5.0}
    assert tolerance_for("dice", {}, stored, declared).value == 0.1  # exact name beats a pattern in the same layer
    assert tolerance_for("dice.b_lines", {}, stored, declared).value == 0.2
    assert tolerance_for("dice", {"dice": 0.01}, stored, declared).value == 0.01
    assert tolerance_for("hd95", {}, stored, declared).value == 5.0
    assert tolerance_for("dice", {}, {}, declared).value == 0.07


@pytest.mark.parametrize("bad", ["dice", "dice=", "=0.1", "dice=-1", "dice=abc", "dice=nan"])
def test_malformed_tolerances(bad):
    with pytest.raises(UserError, match="METRIC=ABS"):
        parse_tolerances([bad])


def test_unchanged_leaderboard_passes_and_skips_reference_rows(doc):
    lines = compare(doc, copy.deepcopy(doc)).lines
    assert {ln.verdict for ln in lines} <= {VERDICT_OK, VERDICT_NA}
    assert LABELS_TRUE not in {ln.row for ln in lines}
    assert len(lines) == 6 * len(doc["metrics"])  # every (strategy, metric) of the baseline


def test_verdicts_are_direction_aware(doc):
    current = copy.deepcopy(doc)
    entry(current, "threshold:0.6", "dice")["mean"] -= 0.06       # higher is better: worse by 0.06 > 0.05
    entry(current, "threshold:0.8", "dice")["mean"] -= 0.04       # within tolerance
    entry(current, "threshold:0.6", "hd95")["mean"] -= 8.0        # lower is better: improved
    entry(current, "threshold:0.8", "hd95")["mean"] += 8.0        # lower is better: regression
    entry(current, "soft", "sf_change.auroc")["mean"] += 0.2
    lines = compare(doc, current).lines
    assert line(lines, "threshold:0.6", "dice").verdict == VERDICT_REGRESSION
    assert line(lines, "threshold:0.6", "dice").delta == pytest.approx(-0.06)
    assert line(lines, "threshold:0.8", "dice").verdict == VERDICT_OK
    assert line(lines, "threshold:0.6", "hd95").verdict == VERDICT_IMPROVED
    assert line(lines, "threshold:0.8", "hd95").verdict == VERDICT_REGRESSION
    assert line(lines, "soft", "sf_change.auroc").verdict == VERDICT_IMPROVED
    assert sum(ln.failed for ln in lines) == 2


def test_missing_new_and_null_values(doc):
    baseline = copy.deepcopy(doc)
    current = copy.deepcopy(doc)
    entry(current, "soft", "dice")["mean"] = None                 # lost a value it used to have
    entry(baseline, "weighted", "ece")["mean"] = None             # gained one
    entry(baseline, "threshold:0.3", "ece")["mean"] = None
    entry(current, "threshold:0.3", "ece")["mean"] = None         # undefined in both
    current["rows"] = [r for r in current["rows"] if r["strategy"] != "threshold:0.8"]
    result = compare(baseline, current)
    lines = result.lines
    assert line(lines, "soft", "dice").verdict == VERDICT_MISSING
    assert line(lines, "weighted", "ece").verdict == VERDICT_NEW
    assert line(lines, "threshold:0.3", "ece").verdict == VERDICT_NA
    # A whole strategy gone is one failure, named once, not a MISSING line per metric.
    assert result.missing == ["threshold:0.8"] and not [ln for ln in lines if ln.row == "threshold:0.8"]
    assert result.missing_metrics == len(baseline["metrics"]) and result.failed
    assert not line(lines, "weighted", "ece").failed and line(lines, "soft", "dice").failed
    # Failures come first in what is shown; within-tolerance lines are not shown by default.
    shown = result.beyond_tolerance()
    assert [ln.verdict for ln in shown] == [VERDICT_MISSING, VERDICT_NEW]


def test_cannot_compare_other_configuration_or_schema(doc):
    other = copy.deepcopy(doc)
    other["config"].update(seeds=[0], folds=5, config_hash="other")
    with pytest.raises(CannotCompareError, match=r"folds: 3 != 5; seeds: \[0, 1, 2\] != \[0\]"):
        compare(doc, other)
    hidden = copy.deepcopy(doc)
    hidden["config"]["config_hash"] = "other"
    with pytest.raises(CannotCompareError, match="config_hash 'abc123' != 'other', listed keys equal"):
        compare(doc, hidden)
    schema = copy.deepcopy(doc)
    schema["schema"] = "lusbench.leaderboard/9"
    with pytest.raises(CannotCompareError, match="schema"):
        compare(doc, schema)
    flipped = copy.deepcopy(doc)
    flipped["metrics"][0]["higher_is_better"] = False
    with pytest.raises(CannotCompareError, match="direction"):
        compare(doc, flipped)


def test_config_differences_name_added_removed_and_nested_keys():
    old = {"a": 1, "train": {"epochs": 4, "lr": 0.003}, "config_hash": "x"}
    new = {"a": 1, "b": 2, "train": {"epochs": 1, "lr": 0.003}, "config_hash": "y"}
    assert config_differences(old, new) == ["b: (absent) != 2", "train.epochs: 4 != 1"]


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture()
def files(tmp_path, doc):
    baseline, current = tmp_path / "baseline.json", tmp_path / "current.json"
    write_leaderboard(doc, baseline)
    write_leaderboard(doc, current)
    return baseline, current


def edit(path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_cli_unchanged_exits_0_listing_every_metric_only_with_verbose(files, doc):
    baseline, current = files
    out = check("--baseline", str(baseline), "--json", str(current))
    assert out.returncode == 0, out.stderr
    assert " ok " not in out.stdout and "84 metrics within tolerance not listed (--verbose" in out.stdout
    assert "check passed: 84 metrics compared over 6 strategies" in out.stdout
    out = check("--baseline", str(baseline), "--json", str(current), "--verbose")
    header = next(ln for ln in out.stdout.splitlines() if "tolerance" in ln)
    for col in ("strategy", "metric", "baseline", "fresh", "fresh − baseline", "tolerance", "tolerance from", "verdict"):
        assert col in header
    assert sum(" ok " in ln for ln in out.stdout.splitlines()) == 6 * len(doc["metrics"])
    assert "not listed" not in out.stdout


def test_cli_regression_exits_1_naming_it(files):
    baseline, current = files
    edit(current, lambda d: entry(d, "threshold:0.6", "dice").update(mean=entry(d, "threshold:0.6", "dice")["mean"] - 0.1))
    out = check("--baseline", str(baseline), "--json", str(current))
    assert out.returncode == 1
    assert "REGRESSION" in out.stdout and "check FAILED: 1 of 84" in out.stdout and "threshold:0.6 dice" in out.stdout
    # The table lists the failure first and nothing that stayed within tolerance; the summary names the sides.
    rows = [ln for ln in out.stdout.splitlines() if "threshold:" in ln and "│" in ln]
    assert len(rows) == 1 and "REGRESSION" in rows[0] and "fallback" in rows[0]
    assert "(baseline " in out.stdout.splitlines()[-1] and ", fresh " in out.stdout.splitlines()[-1]
    # A per-metric flag, or the baseline's own tolerances map, can accept it.
    assert check("--baseline", str(baseline), "--json", str(current), "--tolerance", "dice=0.2").returncode == 0
    flagged = check("--baseline", str(baseline), "--json", str(current), "--tolerance", "dice*=0.01")
    assert flagged.returncode == 1 and "--tolerance dice*" in flagged.stdout  # the source names the matching glob
    edit(baseline, lambda d: d.update(tolerances={"dice": 0.2}))
    assert check("--baseline", str(baseline), "--json", str(current)).returncode == 0
    assert check("--baseline", str(baseline), "--json", str(current), "--tolerance", "dice=0.01").returncode == 1


def test_cli_lower_is_better_improvement_passes(files):
    baseline, current = files
    edit(current, lambda d: entry(d, "soft", "sf_ratio.mae").update(mean=entry(d, "soft", "sf_ratio.mae")["mean"] - 30))
    out = check("--baseline", str(baseline), "--json", str(current))
    assert out.returncode == 0 and "improved" in out.stdout and "--update-baseline" in out.stdout


def test_cli_new_strategies_are_noted_not_checked(files):
    baseline, current = files
    edit(baseline, lambda d: d.update(rows=[r for r in d["rows"] if r["strategy"] != "weighted"]))
    out = check("--baseline", str(baseline), "--json", str(current))
    assert out.returncode == 0 and "note: weighted is not in the baseline" in out.stdout


def test_cli_reference_rows_never_fail(files):
    baseline, current = files
    edit(current, lambda d: entry(d, LABELS_TRUE, "sf_ratio.mae").update(mean=1000.0))
    assert check("--baseline", str(baseline), "--json", str(current)).returncode == 0


def test_cli_other_configuration_exits_3_naming_the_keys(files):
    baseline, current = files
    edit(current, lambda d: d["config"].update(preset="default", config_hash="zzz"))
    out = check("--baseline", str(baseline), "--json", str(current))
    assert out.returncode == 3
    assert "preset: 'quick' != 'default'" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_cli_missing_or_broken_baseline_exits_3(files, tmp_path):
    _, current = files
    out = check("--baseline", str(tmp_path / "absent.json"), "--json", str(current))
    assert out.returncode == 3 and "does not exist" in out.stderr and "--update-baseline" in out.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert check("--baseline", str(broken), "--json", str(current)).returncode == 3


def test_cli_input_errors_exit_2(files, tmp_path):
    baseline, current = files
    assert check("--baseline", str(baseline), "--json", str(tmp_path / "nope.json")).returncode == 2
    out = check("--baseline", str(baseline), "--json", str(current), "--tolerance", "dice")
    assert out.returncode == 2 and "METRIC=ABS" in out.stderr
    assert check("--json", str(current)).returncode == 2  # --baseline is required
    # A tolerance for a metric no leaderboard has would silently change nothing.
    for typo in ("nosuchmetric=0.1", "dcie.*=0.1"):
        out = check("--baseline", str(baseline), "--json", str(current), "--tolerance", typo)
        assert out.returncode == 2 and f"--tolerance {typo.split('=')[0]}=0.1: no metric" in out.stderr
        assert out.stdout == "" and out.stderr.count("\n") == 1


def test_cli_update_baseline_creates_rewrites_and_keeps_tolerances(files, tmp_path, doc):
    baseline, current = files
    fresh = tmp_path / "sub" / "new-baseline.json"
    out = check("--baseline", str(fresh), "--json", str(current), "--update-baseline")
    assert out.returncode == 0 and "created" in out.stdout
    assert read_leaderboard(fresh) == doc

    edit(baseline, lambda d: d.update(tolerances={"hd95": 9.0}))
    edit(current, lambda d: entry(d, "soft", "dice").update(mean=0.1))   # a regression, accepted on purpose
    out = check("--baseline", str(baseline), "--json", str(current), "--update-baseline")
    assert out.returncode == 0 and "REGRESSION" in out.stdout and "updated" in out.stdout
    # Updating is not a verdict: it says what the new baseline accepts, never "check FAILED".
    assert "FAILED" not in out.stdout and "accepted as the new baseline: 1 worse or lost: soft dice" in out.stdout
    new = read_leaderboard(baseline)
    assert entry(new, "soft", "dice")["mean"] == 0.1 and new["tolerances"] == {"hd95": 9.0}
    assert check("--baseline", str(baseline), "--json", str(current)).returncode == 0
    assert sorted(p.name for p in baseline.parent.iterdir()) == ["baseline.json", "current.json", "sub"]

    edit(current, lambda d: d["config"].update(folds=5, config_hash="zzz"))  # a new configuration replaces it
    out = check("--baseline", str(baseline), "--json", str(current), "--update-baseline")
    assert out.returncode == 0 and "not comparable" in out.stderr
    assert read_leaderboard(baseline)["config"]["folds"] == 5


def test_cli_update_baseline_warns_about_strategies_it_stops_guarding(files):
    baseline, current = files
    edit(current, lambda d: d.update(rows=[r for r in d["rows"] if r["strategy"] != "soft"]))
    gate = check("--baseline", str(baseline), "--json", str(current))
    assert gate.returncode == 1 and gate.stdout.count("soft") == 2  # named once in the table, once in the summary
    assert "MISSING soft: in the baseline, not in the fresh leaderboard (14 metrics unchecked)" in gate.stdout
    out = check("--baseline", str(baseline), "--json", str(current), "--update-baseline")
    assert out.returncode == 0 and "strategies dropped: soft" in out.stdout
    assert f"warning: soft was in the old baseline but not in {current}: the new baseline no longer guards it" in out.stderr
    assert "soft" not in [r["strategy"] for r in read_leaderboard(baseline)["rows"]]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: d["rows"][0].pop("metrics"), "rows[0] (threshold:0.3): 'metrics' is missing or not an object"),
        (lambda d: d["rows"][1].pop("strategy"), "rows[1] needs a string 'strategy'"),
        (lambda d: d["rows"][1]["metrics"]["dice"].update(mean="0.7"),
         "rows[1] (threshold:0.5).metrics.dice: 'mean', 'ci_low' and 'ci_high' must be numbers or null"),
        (lambda d: d["metrics"][0].pop("higher_is_better"), "metrics[0] needs a string 'name' and a boolean"),
        (lambda d: d.pop("config"), "'config' is missing or not an object"),
    ],
)
@pytest.mark.parametrize("side", ["baseline", "current"])
def test_cli_malformed_leaderboard_exits_3_with_one_line(files, damage, problem, side):
    # Before: a baseline row without 'metrics' raised KeyError, a traceback and exit 1 ("regression").
    baseline, current = files
    edit(baseline if side == "baseline" else current, damage)
    out = check("--baseline", str(baseline), "--json", str(current))
    assert out.returncode == 3, out.stderr
    assert problem in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_noise_tolerances_are_a_multiple_of_the_largest_standard_error_with_a_floor(doc):
    from lusbench.results.check import NOISE_FLOOR_SHARE, noise_tolerances

    derived = noise_tolerances(doc, multiple=4.0)
    widest = max((r["metrics"]["dice"]["ci_high"] - r["metrics"]["dice"]["ci_low"]) for r in doc["rows"]
                 if not r["label_row"] and r["metrics"]["dice"]["ci_low"] is not None)
    assert derived["dice"] == pytest.approx(max(NOISE_FLOOR_SHARE * 0.05, 4.0 * widest / (2 * 1.959964)), rel=1e-3)
    assert noise_tolerances(doc, multiple=8.0)["dice"] >= derived["dice"]
    # A metric whose rows all have zero-width intervals gets the floor, not a zero tolerance.
    flat = copy.deepcopy(doc)
    for r in flat["rows"]:
        if r["metrics"]["dice"]["mean"] is not None:
            r["metrics"]["dice"].update(ci_low=0.5, ci_high=0.5)
    assert noise_tolerances(flat)["dice"] == pytest.approx(NOISE_FLOOR_SHARE * 0.05)


def test_noise_tolerances_rank_between_hand_set_and_declared():
    assert tolerance_for("dice", {}, {}, {"dice": 0.05}, {"dice": 0.011}).value == 0.011
    assert tolerance_for("dice", {}, {"dice": 0.2}, {"dice": 0.05}, {"dice": 0.011}).value == 0.2
    assert tolerance_for("dice", {"dice": 0.3}, {"dice": 0.2}, {}, {"dice": 0.011}).value == 0.3


def test_cli_update_baseline_with_noise_tolerances_stores_and_keeps_them(files):
    baseline, current = files
    out = check("--baseline", str(baseline), "--json", str(current), "--update-baseline", "--noise-tolerances", "3")
    assert out.returncode == 0, out.stderr
    stored = json.loads(baseline.read_text())
    assert stored["noise_tolerance_method"]["multiple"] == 3.0 and stored["noise_tolerances"]["dice"] > 0
    # A later --update-baseline without the flag recomputes them with the same multiple.
    stored["noise_tolerances"] = {"dice": 123.0}
    baseline.write_text(json.dumps(stored))
    assert check("--baseline", str(baseline), "--json", str(current), "--update-baseline").returncode == 0
    again = json.loads(baseline.read_text())
    assert again["noise_tolerances"]["dice"] != 123.0 and again["noise_tolerance_method"]["multiple"] == 3.0
    # The gate uses them: a drop just past the derived dice tolerance fails.
    tol = again["noise_tolerances"]["dice"]
    edit(current, lambda d: entry(d, "threshold:0.6", "dice").update(mean=entry(d, "threshold:0.6", "dice")["mean"] - 1.01 * tol))
    assert check("--baseline", str(baseline), "--json", str(current)).returncode == 1
    bad = check("--baseline", str(baseline), "--json", str(current), "--noise-tolerances")
    assert bad.returncode == 2 and "needs --update-baseline" in bad.stderr
