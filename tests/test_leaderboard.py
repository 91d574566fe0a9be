"""The leaderboard document (docs/leaderboard.md), its renderings and ``lusbench leaderboard`` through the real CLI."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from test_stats import METRIC_DEFS, make_results

from lusbench.errors import UserError
from lusbench.evaluate.metricdefs import MetricDef
from lusbench.evaluate.run_results import LABELS_EXPERT, LABELS_TRUE
from lusbench.results.document import SCHEMA, dumps, json_safe, read_leaderboard, write_leaderboard
from lusbench.results.leaderboard import build_leaderboard
from lusbench.results.render import fmt_value, render, select_columns

HEADLINE = ("dice", "hd95", "ece", "true.dice", "sf_ratio.mae", "sf_change.auroc")


@pytest.fixture(scope="module")
def doc() -> dict:
    results = make_results()
    # What the built-in metric definitions declare: these are the compact table's columns.
    results.metric_defs = [dataclasses.replace(d, headline=d.name in HEADLINE) for d in results.metric_defs]
    return build_leaderboard(results)


def row(doc: dict, name: str) -> dict:
    return next(r for r in doc["rows"] if r["strategy"] == name)


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lusbench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_document_has_the_design_schema(doc):
    assert doc["schema"] == SCHEMA == "lusbench.leaderboard/3"
    assert doc["config"]["config_hash"] == "abc123" and doc["environment"]["device"] == "cpu"
    assert [m["name"] for m in doc["metrics"]] == [d.name for d in METRIC_DEFS]
    assert {m["name"]: m["unit"] for m in doc["metrics"]}["sf_ratio.mae"] == "seed_repeat"
    assert doc["reference_strategy"] == "threshold:0.5" and doc["comparison_note"] is None
    for r in doc["rows"]:
        assert set(r) >= {"strategy", "label_row", "metrics"}
        assert set(r["metrics"]) == {d.name for d in METRIC_DEFS}
        for entry in r["metrics"].values():
            assert set(entry) >= {"mean", "ci_low", "ci_high", "n"}
            if entry["mean"] is not None and entry["n"] >= 2:
                assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
    labels = [r["strategy"] for r in doc["rows"] if r["label_row"]]
    assert labels == [LABELS_EXPERT, LABELS_TRUE] == ["labels:expert", "labels:true"]
    # Strictly JSON: no NaN anywhere.
    json.dumps(doc, allow_nan=False)


def test_reference_rows_have_task_metrics_only_and_no_comparison_or_rank(doc):
    ref = row(doc, LABELS_EXPERT)
    assert ref["metrics"]["dice"] == {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "seeds": 0, "models": 0}
    assert ref["metrics"]["sf_ratio.mae"]["n"] == 5 and ref["seeds"] == [0]
    assert ref["comparison"] == {} and ref["rank"] == {}
    assert row(doc, "threshold:0.5")["comparison"] == {}  # the baseline is not compared with itself


def test_planted_effects_get_direction_aware_marks(doc):
    better, worse, same = row(doc, "threshold:0.6"), row(doc, "threshold:0.3"), row(doc, "soft")
    assert better["comparison"]["dice"]["mark"] == "better"
    assert better["comparison"]["hd95"]["mark"] == "better"  # lower is better and hd95 went down
    assert better["comparison"]["hd95"]["delta"] < 0
    assert better["comparison"]["sf_ratio.mae"]["mark"] == "better"
    assert worse["comparison"]["dice"]["mark"] == "worse" and worse["comparison"]["hd95"]["mark"] == "worse"
    assert same["comparison"]["dice"]["mark"] == "ns" and same["comparison"]["dice"]["p_value"] > 0.05
    entry = better["comparison"]["dice"]
    assert entry["n"] == 30 and entry["p_value"] <= entry["p_holm"] < 0.05
    assert better["rank"]["dice"] == 1 and better["rank"]["hd95"] == 1 and worse["rank"]["dice"] == 6


def test_build_is_deterministic():
    assert dumps(build_leaderboard(make_results())) == dumps(build_leaderboard(make_results()))


def test_reference_override_and_absent_reference():
    results = make_results()
    against_soft = build_leaderboard(results, reference="soft")
    assert against_soft["reference_strategy"] == "soft"
    assert "dice" in row(against_soft, "threshold:0.5")["comparison"] and row(against_soft, "soft")["comparison"] == {}
    absent = build_leaderboard(make_results(strategies=("threshold:0.6", "soft", "weighted")))
    assert "threshold:0.5 is not in this run" in absent["comparison_note"]
    assert all(r["comparison"] == {} for r in absent["rows"])
    assert row(absent, "threshold:0.6")["rank"]["dice"] == 1  # ranks do not need a reference
    with pytest.raises(ValueError, match="label row"):
        build_leaderboard(results, reference=LABELS_TRUE)
    none = build_leaderboard(make_results(reference_strategy=None))
    assert none["reference_strategy"] is None and "no reference strategy" in none["comparison_note"]


def test_missing_and_all_nan_metrics_are_explicit():
    results = make_results()
    results.metric_defs.append(MetricDef("mt_dice", True, "multi-threshold Dice"))
    results.metric_defs.append(MetricDef("never", True, "reported by nobody"))
    for (r, _), seg in results.seg.items():
        if r == "soft":
            del seg["hd95"]  # a row lacking a metric entirely
        seg["mt_dice"] = np.full_like(seg["dice"], np.nan) if r == "weighted" else seg["dice"]
    doc = build_leaderboard(results)
    assert row(doc, "soft")["metrics"]["hd95"]["mean"] is None and row(doc, "soft")["metrics"]["hd95"]["n"] == 0
    nothing = {"delta": None, "p_value": None, "p_holm": None, "n": 0, "models": 0, "mark": ""}
    assert row(doc, "soft")["comparison"]["hd95"] == nothing
    assert row(doc, "soft")["rank"]["hd95"] is None
    weighted = row(doc, "weighted")
    assert weighted["metrics"]["mt_dice"]["mean"] is None and weighted["rank"]["mt_dice"] is None
    assert weighted["comparison"]["mt_dice"] == nothing
    assert {m["name"]: m["unit"] for m in doc["metrics"]}["never"] is None
    assert all(r["metrics"]["never"]["mean"] is None for r in doc["rows"])
    json.dumps(doc, allow_nan=False)


def test_calibration_is_pooled_over_seeds():
    results = make_results()
    doc = build_leaderboard(results)
    pooled = doc["calibration"]["soft"]
    counts = np.sum([results.calibration[("soft", s)]["count"] for s in results.seeds], axis=0)
    assert pooled["count"] == pytest.approx(counts.tolist())
    assert len(pooled["bin_edges"]) == len(pooled["mean_prob"]) + 1
    assert LABELS_EXPERT not in doc["calibration"]
    results.calibration[("soft", 1)]["bin_edges"] = np.linspace(0, 1, 11)[::-1].tolist()
    with pytest.raises(ValueError, match="different edges cannot be pooled"):
        build_leaderboard(results)


def test_json_safe_converts_numpy_and_non_finite():
    assert json_safe({"a": np.float32(0.5), "b": np.array([1.0, np.nan]), 3: {np.inf}, "c": (np.int64(2),)}) == {
        "a": 0.5, "b": [1.0, None], "3": [None], "c": [2]}


def test_write_is_atomic_and_round_trips(tmp_path, doc):
    path = tmp_path / "run" / "leaderboard.json"
    path.parent.mkdir()
    path.write_text("old")
    write_leaderboard(doc, path)
    assert read_leaderboard(path) == doc
    assert [p.name for p in path.parent.iterdir()] == ["leaderboard.json"]  # no temp file left behind


def test_read_rejects_what_is_not_a_leaderboard(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_leaderboard(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{truncated")
    with pytest.raises(UserError, match="not readable JSON"):
        read_leaderboard(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a lusbench leaderboard"):
        read_leaderboard(bad)


def test_renderings(doc):
    table = render(doc, "table")
    assert "threshold:0.6" in table and "▲" in table and "▼" in table and "dice ↑" in table and "(n=30)" in table
    assert "sf_ratio.mae ↓" in table and "dice.b_lines" not in table  # compact default columns

    md = render(doc, "markdown").splitlines()
    table_lines = [ln for ln in md if ln.startswith("|")]
    assert len(table_lines) == 2 + len(doc["rows"])
    assert all(ln.count(" | ") == table_lines[0].count(" | ") for ln in table_lines[2:])
    best = row(doc, "threshold:0.6")["metrics"]["dice"]
    cell = f"{fmt_value(best['mean'])} [{fmt_value(best['ci_low'])}, {fmt_value(best['ci_high'])}] ▲ #1"
    assert any(cell in ln for ln in table_lines)
    assert any("n=5" in ln for ln in table_lines if "labels:" in ln)  # differing n is shown in the cell

    records = list(csv.DictReader(io.StringIO(render(doc, "csv"))))
    assert len(records) == len(doc["rows"]) * len(doc["metrics"])
    rec = next(r for r in records if r["strategy"] == "threshold:0.6" and r["metric"] == "hd95")
    assert rec["mark"] == "better" and rec["higher_is_better"] == "false" and float(rec["mean"]) == pytest.approx(
        row(doc, "threshold:0.6")["metrics"]["hd95"]["mean"])
    ref = next(r for r in records if r["strategy"] == LABELS_TRUE and r["metric"] == "dice")
    assert ref["mean"] == "" and ref["n"] == "0" and ref["label_row"] == "true"

    assert json.loads(render(doc, "json")) == doc
    assert render(doc, "markdown", ["dice.effusion"]).count("dice.effusion") == 2  # the column and its legend line
    with pytest.raises(ValueError, match="unknown format"):
        render(doc, "xml")


def _console_text(renderable, width: int) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _numbers(doc: dict, metric: str) -> list[str]:
    """The mean and the "[low, high]" CI of every row that has the metric, as the table formats them."""
    out = []
    for r in doc["rows"]:
        e = r["metrics"][metric]
        if e["mean"] is not None:
            out.append(fmt_value(e["mean"]))
            if e["ci_low"] is not None:
                out.append(f"[{fmt_value(e['ci_low'])}, {fmt_value(e['ci_high'])}]")
    return out


@pytest.mark.parametrize("width", [80, 100])
def test_table_fits_the_terminal_with_every_number_whole(doc, width):
    from lusbench.results.render import table_renderable

    text = _console_text(table_renderable(doc, None, width), width)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= width and "…" not in text
    left_out = next((ln for ln in " ".join(lines).split("Not shown at this width: ")[1:]), "")
    shown = [m for m in HEADLINE if m not in left_out.split(" (")[0].split(", ")]
    assert len(shown) >= (3 if width == 80 else 4) and shown[0] == "dice"
    table_part = text.split("Mean and its 95% CI")[0]
    for metric in shown:
        for number in _numbers(doc, metric):
            assert number in table_part, f"{metric}: {number} not shown whole at width {width}"
    # The legend explains every metric shown.
    flat = " ".join(text.split())
    for metric in shown:
        d = next(m for m in doc["metrics"] if m["name"] == metric)
        assert f"{metric} {'↑' if d['higher_is_better'] else '↓'}: {d['description']}" in flat


@pytest.mark.parametrize("width", [80, 100])
def test_all_metrics_are_listed_long_a_row_each(doc, width):
    from lusbench.results.render import table_renderable

    text = _console_text(table_renderable(doc, ["all"], width), width)
    assert max(len(ln) for ln in text.splitlines()) <= width and "…" not in text
    body = text.split("Mean and its 95% CI")[0]
    for m in doc["metrics"]:
        assert m["name"].split(".")[0] in body
        for number in _numbers(doc, m["name"]):
            assert number in body
    # The long layout: the strategies repeat once per metric that they have.
    assert body.count("threshold:0.6") == len(doc["metrics"])


def test_legend_names_columns_that_cannot_be_tested():
    from lusbench.results.render import legend

    few = build_leaderboard(make_results(seeds=(0,)))
    assert "Cannot be tested in this run" in legend(few) and "dice" in legend(few).split("Cannot be tested")[1]
    assert "Cannot be tested" not in legend(build_leaderboard(make_results()))


def test_column_selection(doc):
    assert select_columns(doc, None) == list(HEADLINE)  # declared by the metrics, not known to the renderer
    assert select_columns(doc, ["all"]) == [m["name"] for m in doc["metrics"]]
    with pytest.raises(UserError, match="unknown metric"):
        select_columns(doc, ["dice", "nope"])


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("runs") / "lusbench-runs"
    path.mkdir()
    write_leaderboard(doc, path / "leaderboard.json")
    return path


def test_cli_formats(run_dir, doc):
    out = cli("leaderboard", "--out", str(run_dir), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == doc
    md = cli("leaderboard", "--out", str(run_dir), "--format", "markdown", "--metrics", "dice,sf_change.auroc")
    assert md.returncode == 0 and "| strategy | dice ↑ (n=30) | sf_change.auroc ↑ (n=15) |" in md.stdout
    table = cli("leaderboard", "--out", str(run_dir))
    assert table.returncode == 0 and "threshold:0.6" in table.stdout and "▲" in table.stdout
    # Not a terminal: the table is not squeezed to 80 columns.
    assert max(len(ln) for ln in table.stdout.splitlines()) > 100
    csv_out = cli("leaderboard", "--out", str(run_dir), "--format", "csv", "--metrics", "all")
    assert csv_out.returncode == 0 and len(csv_out.stdout.splitlines()) == 1 + len(doc["rows"]) * len(doc["metrics"])


def test_cli_default_run_dir_is_lusbench_runs(run_dir):
    out = cli("leaderboard", "--format", "json", cwd=run_dir.parent)
    assert out.returncode == 0 and json.loads(out.stdout)["schema"] == SCHEMA


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--out", "missing-dir"], "run directory missing-dir does not exist"),
     (["--reference", "soft"], "no results store (results.sqlite) to recompute the paired tests"),
     (["--metrics", "dice,bogus"], "unknown metric(s) bogus"),
     (["--format", "xml"], "invalid choice")],
)
def test_cli_user_errors_exit_2_with_one_line(run_dir, args, message):
    out = cli("leaderboard", *(["--out", str(run_dir)] if "--out" not in args else []), *args, cwd=run_dir.parent)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1 and out.stdout == ""


def test_cli_missing_leaderboard_file(tmp_path):
    out = cli("leaderboard", "--out", str(tmp_path))
    assert out.returncode == 2 and "leaderboard.json does not exist" in out.stderr


def test_cli_modules_are_light_at_import():
    code = ("import sys, lusbench.cli.leaderboard, lusbench.cli.check, lusbench.cli.report; "
            "print(sorted(m for m in ('numpy', 'matplotlib', 'rich', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_cli_rebuilds_from_a_real_results_store(tmp_path):
    run_dir = tmp_path / "run"
    train = cli("run", "--preset", "quick", "--epochs", "1", "--folds", "2", "--dataset", "synthetic-lus:patients=8,size=32",
                "-s", "threshold:0.5", "-s", "soft", "--out", str(run_dir), "--quiet")
    assert train.returncode == 0, train.stderr
    stored = read_leaderboard(run_dir / "leaderboard.json")
    (run_dir / "leaderboard.json").unlink()  # from here on only the store can answer

    rebuilt = cli("leaderboard", "--out", str(run_dir), "--format", "json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout) == stored  # deterministic statistics: identical to what the run wrote

    other = json.loads(cli("leaderboard", "--out", str(run_dir), "--format", "json", "--reference", "soft").stdout)
    assert other["reference_strategy"] == "soft"
    assert set(row(other, "threshold:0.5")["comparison"]) == {m["name"] for m in other["metrics"]}
    bad = cli("leaderboard", "--out", str(run_dir), "--reference", "threshold:0.9")
    assert bad.returncode == 2 and "is not a row of this run" in bad.stderr
    assert cli("report", "--out", str(run_dir)).returncode == 0 and (run_dir / "report.html").exists()
