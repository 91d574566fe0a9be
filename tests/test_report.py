"""The HTML report: self-contained, every embedded plot decodes as a real PNG, built by the real CLI."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image
from test_stats import make_results

from lusbench.results.document import write_leaderboard
from lusbench.results.leaderboard import build_leaderboard
from lusbench.results.report import render_html, sweep_families, write_report
from lusbench_builtins.strategies import threshold

DATA_URI = "data:image/png;base64,"


class _Collector(HTMLParser):
    """Every tag with its attributes, and whether the document's tags balance."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("meta", "img", "br", "link"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    assert collector.open == []
    return collector


def images(html: str) -> list[np.ndarray]:
    """Decode every <img>: each must be an embedded PNG that PIL verifies and matplotlib reads."""
    out = []
    for tag, attrs in parse(html).tags:
        if tag != "img":
            continue
        src = attrs["src"] or ""
        assert src.startswith(DATA_URI)
        data = base64.b64decode(src[len(DATA_URI):], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG"
            img.verify()
        out.append(mpimg.imread(io.BytesIO(data), format="png"))
    return out


def with_sweeps(results):
    """What the runner records for strategies that declare a sweep parameter (threshold:t)."""
    results.sweeps = {row: threshold(row.partition(":")[2]).sweep() for row in results.rows if row.startswith("threshold:")}
    return results


@pytest.fixture(scope="module")
def doc() -> dict:
    return build_leaderboard(with_sweeps(make_results()))


@pytest.fixture(scope="module")
def html(doc) -> str:
    return render_html(doc)


def small_doc(strategies: tuple[str, ...] = ("threshold:0.5", "threshold:0.6")) -> dict:
    """Few rows and metrics: every figure still appears, but renders fast (for the subprocess tests)."""
    results = with_sweeps(make_results(strategies=strategies))
    keep = ("dice", "dice.b_lines", "dice.effusion", "sf_ratio.mae")
    results.metric_defs = [d for d in results.metric_defs if d.name in keep]
    return build_leaderboard(results)


def test_every_figure_is_an_embedded_png_with_content(html):
    pictures = images(html)
    assert len(pictures) == 4  # threshold curves, per-class Dice, reliability diagram, downstream tasks
    for pic in pictures:
        assert pic.shape[0] > 200 and pic.shape[1] > 300
        assert pic[..., :3].std() > 0.05  # not a blank canvas


def test_report_is_self_contained(html):
    tags = parse(html).tags
    assert not [t for t, a in tags if t in ("script", "link", "iframe")]
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", html)
    assert "url(" not in html


def test_report_has_sections_and_tables(html, doc):
    for title in ("Metrics against threshold:t", "Per-class Dice", "Reliability diagram",
                  "Downstream clinical tasks", "All metrics", "Configuration", "Environment"):
        assert f"<h2>{title}</h2>" in html or f"<h3>{title}</h3>" in html
    assert html.count("<table>") >= 5
    for m in doc["metrics"]:
        assert m["name"] in html
    assert 'class="better"' in html and 'class="worse"' in html
    assert "Holm p" in html  # the p-values are in the cell tooltips


def test_strategy_names_are_escaped():
    evil = "evil<script>alert(1)</script>"
    html = render_html(small_doc(("threshold:0.5", evil)))
    assert "<script>" not in html and "evil&lt;script&gt;" in html


def test_missing_parts_become_notes_not_errors():
    results = make_results(strategies=("soft", "weighted"), reference_strategy="soft")
    results.calibration.clear()
    results.metric_defs = [d for d in results.metric_defs if not d.name.startswith("dice.")]
    html = render_html(build_leaderboard(results))
    assert "No swept strategy family in this run" in html
    assert "No per-class Dice metrics in this run." in html
    assert "No calibration bins in this run." in html
    assert len(images(html)) == 1  # downstream tasks only


def test_sweep_families_come_from_what_strategies_declare():
    def row(strategy, sweep=None, label_row=False):
        return {"strategy": strategy, "label_row": label_row, "metrics": {}, **({"sweep": sweep} if sweep else {})}

    doc = {"rows": [row("threshold:0.8", {"family": "threshold", "parameter": "t", "value": 0.8}),
                    row("threshold:0.5", {"family": "threshold", "parameter": "t", "value": 0.5}),
                    row("weighted", {"family": "weighted", "parameter": "floor", "value": 0.1}),
                    row("mythreshold:0.6"), row("labels:true", label_row=True)]}
    families = sweep_families(doc)
    # A family of one setting is no curve; a spec that merely looks like threshold:t is not parsed.
    assert list(families) == ["threshold:t"]
    assert [(t, r["strategy"]) for t, r in families["threshold:t"]] == [(0.5, "threshold:0.5"), (0.8, "threshold:0.8")]


def _hue_sat(color: str) -> tuple[float, float]:
    import colorsys

    from matplotlib.colors import to_rgb

    h, _, sat = colorsys.rgb_to_hls(*to_rgb(color))
    return h, sat


def test_row_colours_never_look_like_the_significance_dots(doc):
    from matplotlib.colors import to_hex

    from lusbench.results.report import MARK_COLOR, ROW_COLORS, figure_per_class, figure_sweep

    def near(a: str, b: str) -> bool:
        (ha, sa), (hb, _) = _hue_sat(a), _hue_sat(b)
        return sa > 0.25 and min(abs(ha - hb), 1 - abs(ha - hb)) < 0.06

    assert not [(c, m) for c in ROW_COLORS for m in MARK_COLOR.values() if near(c, m)]
    fig = figure_sweep(doc, "threshold:t", ["dice", "hd95"])
    dots = {to_hex(c) for c in MARK_COLOR.values()}
    for ax in fig.axes:
        for line in ax.lines:
            if len(line.get_xdata()) != 1:  # every line but the single significance dots
                assert to_hex(line.get_color()) not in dots
    bars = figure_per_class(doc).axes[0].patches
    assert bars and not {to_hex(b.get_facecolor()) for b in bars} & dots


def test_label_row_outside_the_strategies_range_is_an_arrow_not_a_squashing_line(doc):
    import copy

    from lusbench.results.report import figure_sweep

    wide = copy.deepcopy(doc)
    labels = next(r for r in wide["rows"] if r["strategy"] == "labels:expert")
    labels["metrics"]["dice"] = {**labels["metrics"]["dice"], "mean": 0.99, "ci_low": 0.98, "ci_high": 1.0}
    ax = figure_sweep(wide, "threshold:t", ["dice"]).axes[0]
    highest = max(r["metrics"]["dice"]["ci_high"] for r in wide["rows"] if not r["label_row"])
    assert ax.get_ylim()[1] < 0.99 and ax.get_ylim()[1] < highest + 0.2 * (highest - ax.get_ylim()[0])
    assert any(t.get_text() == "labels:expert 0.990 ↑" for t in ax.texts)
    assert not [ln for ln in ax.lines if list(ln.get_ydata()) == [0.99, 0.99]]


def test_two_settings_are_points_with_error_bars_not_a_curve():
    from matplotlib.container import ErrorbarContainer

    from lusbench.results.report import figure_sweep

    two = small_doc(("threshold:0.5", "threshold:0.6"))
    ax = figure_sweep(two, "threshold:t", ["dice"]).axes[0]
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert not ax.collections or all(c.__class__.__name__ == "LineCollection" for c in ax.collections)  # no CI band
    assert not [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-"]
    three = small_doc(("threshold:0.5", "threshold:0.6", "threshold:0.8"))
    curve = figure_sweep(three, "threshold:t", ["dice"]).axes[0]
    assert [ln for ln in curve.lines if len(ln.get_xdata()) == 3 and ln.get_linestyle() == "-"]


def test_task_metrics_with_patient_units_get_the_downstream_figure(doc):
    import copy

    from lusbench.results.report import figure_downstream

    patients = copy.deepcopy(doc)
    for m in patients["metrics"]:
        if m["kind"] == "task":
            m["unit"] = "patient"  # what tasks with stored predictions report
    fig = figure_downstream(patients)
    shown = [a for a in fig.axes if a.get_visible()]
    assert fig is not None and len(shown) == sum(m["kind"] == "task" for m in patients["metrics"])


def test_captions_describe_what_is_drawn(html):
    assert "hatched" not in html and "baseline" not in html
    assert "Mean Dice per class with 95% CI, one bar per strategy." in html


def test_write_report_is_atomic(tmp_path):
    path = tmp_path / "out" / "report.html"
    path.parent.mkdir()
    path.write_text("old")
    write_report(small_doc(), path)
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


# ------------------------------------------------------------------------------------------------ CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lusbench.cli", *args], capture_output=True, text=True, timeout=180)


def test_cli_report_and_leaderboard_html(tmp_path):
    run_dir = tmp_path / "lusbench-runs"
    run_dir.mkdir()
    write_leaderboard(small_doc(), run_dir / "leaderboard.json")
    out = cli("report", "--out", str(run_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"wrote {run_dir / 'report.html'}"
    assert len(images((run_dir / "report.html").read_text())) == 4

    target = tmp_path / "elsewhere" / "r.html"
    no_dir = cli("report", "--out", str(run_dir), "--html", str(target))
    assert no_dir.returncode == 2 and not target.parent.exists()
    assert no_dir.stderr == f"lusbench report: error: cannot write {target}: directory {target.parent} does not exist\n"
    target.parent.mkdir()
    assert cli("report", "--out", str(run_dir), "--html", str(target)).returncode == 0 and target.exists()

    printed = cli("leaderboard", "--out", str(run_dir), "--format", "html")
    assert printed.returncode == 0 and len(images(printed.stdout)) == 4

    missing = cli("report", "--out", str(tmp_path / "none"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell")


def test_report_renders_in_a_headless_browser(tmp_path, html):
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip("no chromium/chrome on PATH: the PNG decoding tests above stand in for a browser")
    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    page.write_text(html)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,2400", page.as_uri()], capture_output=True, timeout=120, check=True)
    pixels = mpimg.imread(shot)
    # The figures (coloured curves and bars) make the page far from uniformly white.
    assert pixels[..., :3].std() > 0.05
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2).mean() > 0.001  # saturated colours from the plots
