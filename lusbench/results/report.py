"""The HTML report: one self-contained page (inline CSS, matplotlib PNGs embedded as base64, no external
assets) built from a leaderboard document, so it renders from a stored ``leaderboard.json`` alone.

Figures: every main metric against the swept parameter of each strategy family (``threshold:t``, as the
strategies declare it) with CI bands (the study's main figure), per-class Dice, a reliability diagram and the
downstream task metrics per strategy; then, when given the JSON document of ``lusbench data sensitivity``
(:func:`read_sensitivity`), its curve; then the compact table and the full table of every metric.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError
from lusbench.evaluate.sensitivity import SCHEMA as SENSITIVITY_SCHEMA
from lusbench.fileio import atomic_write_text, read_json
from lusbench.results.render import (
    MARK_GLYPH,
    cell_parts,
    column_header,
    config_line,
    default_columns,
    fmt_p,
    fmt_value,
    legend_lines,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MARK_COLOR = {"better": "#1a9850", "worse": "#d73027"}
# Line and bar colours of the rows: no green and no red, which mean "significantly better/worse" (MARK_COLOR).
# Grey comes last: the reliability diagram's diagonal is grey.
ROW_COLORS = ("#2b5c8a", "#e08214", "#8073ac", "#17becf", "#8c510a", "#de77ae", "#000000", "#bcbd22", "#7f7f7f")
#: Where ``lusbench report`` looks for a sensitivity document in the run directory when not given one.
SENSITIVITY_FILE = "sensitivity.json"


def sweep_families(doc: dict[str, Any]) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Strategy rows grouped by the sweep their strategy declared (``rows[].sweep``), families of two or more
    settings only, each sorted by the value of its parameter."""
    families: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for row in doc["rows"]:
        sweep = row.get("sweep")
        if sweep and not row.get("label_row"):
            families.setdefault(f"{sweep['family']}:{sweep['parameter']}", []).append((float(sweep["value"]), row))
    return {name: sorted(rows, key=lambda p: p[0]) for name, rows in families.items() if len(rows) >= 2}


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # layouts are constrained: no second "tight" pass
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _entry(row: dict[str, Any], metric: str) -> tuple[float | None, float | None, float | None]:
    e = row["metrics"].get(metric) or {}
    return e.get("mean"), e.get("ci_low"), e.get("ci_high")


def _yerr(means: Sequence[float], lows: Sequence[float | None], highs: Sequence[float | None]) -> list[list[float]]:
    """Asymmetric error bars; zero length where the CI is unknown (n < 2)."""
    return [[m - lo if lo is not None else 0.0 for m, lo in zip(means, lows, strict=True)],
            [hi - m if hi is not None else 0.0 for m, hi in zip(means, highs, strict=True)]]


def _grid(n: int, ncols: int, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _row_color(i: int) -> str:
    return ROW_COLORS[i % len(ROW_COLORS)]


def figure_sweep(doc: dict[str, Any], family: str, metrics: Sequence[str]) -> Figure | None:
    """Each metric against the swept parameter of one strategy family (mean, 95% CI band; significant points
    coloured), other strategies as horizontal lines, label rows as lines when they fall in the strategies' range
    and as a labelled arrow at the panel's edge when they do not (a line at 0.91 would squash differences of 0.01).
    Two settings are points with error bars: two points make no curve. None without values."""
    curve = sweep_families(doc).get(family) or []
    members = {id(r) for _, r in curve}
    flat = [r for r in doc["rows"] if id(r) not in members]
    if not curve or not metrics:
        return None
    name, _, parameter = family.partition(":")
    fig, axes = _grid(len(metrics), 3, (4.2, 3.2))
    for ax, metric in zip(axes, metrics, strict=True):
        pts = [(t, *_entry(r, metric), (r.get("comparison", {}).get(metric) or {}).get("mark", ""), r["strategy"])
               for t, r in curve]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            ts, means = [p[0] for p in pts], [p[1] for p in pts]
            lo = [p[2] if p[2] is not None else p[1] for p in pts]
            hi = [p[3] if p[3] is not None else p[1] for p in pts]
            if len(pts) >= 3:
                ax.plot(ts, means, "-o", color=_row_color(0), label=f"{name}:{parameter}", zorder=3)
                ax.fill_between(ts, lo, hi, color=_row_color(0), alpha=0.2, label="95% CI")
            else:
                ax.errorbar(ts, means, yerr=_yerr(means, lo, hi), fmt="o", capsize=4, color=_row_color(0),
                            label=f"{name}:{parameter} (95% CI)", zorder=3)
            for t, mean, _, _, mark, _ in pts:
                if mark in MARK_COLOR:
                    ax.plot([t], [mean], "o", color=MARK_COLOR[mark], markersize=9, zorder=4)
            for t, mean, _, _, _, strategy in pts:
                if strategy == doc.get("reference_strategy"):
                    ax.plot([t], [mean], "s", mfc="none", mec="black", markersize=11, zorder=5, label="reference strategy")
        others = [(i, r, _entry(r, metric)[0]) for i, r in enumerate(flat)]
        for i, row, mean in others:
            if mean is not None and not row.get("label_row"):
                ax.axhline(mean, color=_row_color(i + 1), linestyle="--", lw=1.3, label=row["strategy"])
        if pts or ax.lines:
            _label_rows(ax, [(i, r, m) for i, r, m in others if m is not None and r.get("label_row")])
        ax.set_title(column_header(doc, metric), fontsize=10)
        ax.set_xlabel(f"{name}: {parameter}")
        ax.grid(alpha=0.3)
        if not pts and not ax.lines:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    return fig


def _label_rows(ax: Axes, rows: list[tuple[int, dict[str, Any], float]]) -> None:
    """Label rows as dotted lines inside the strategies' y range; outside it, an arrow at the edge with the value,
    so the axis stays scaled to the strategies."""
    low, high = ax.get_ylim()
    for i, row, mean in rows:
        if low <= mean <= high:
            ax.axhline(mean, color=_row_color(i + 1), linestyle=":", lw=1.3, label=row["strategy"])
            continue
        above = mean > high
        ax.annotate(f"{row['strategy']} {fmt_value(mean)} {'↑' if above else '↓'}", xy=(0.98, 0.97 if above else 0.03),
                    xycoords="axes fraction", ha="right", va="top" if above else "bottom", fontsize=7,
                    color=_row_color(i + 1), bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": _row_color(i + 1)})
    ax.set_ylim(low, high)


def figure_per_class(doc: dict[str, Any], prefix: str = "dice.") -> Figure | None:
    """Grouped bars: one group per class (``dice.<class>`` metrics), one bar per row that has them."""
    from matplotlib.figure import Figure

    classes = [m["name"] for m in doc["metrics"] if m["name"].startswith(prefix)]
    rows = [r for r in doc["rows"] if any(_entry(r, c)[0] is not None for c in classes)]
    if not classes or not rows:
        return None
    fig = Figure(figsize=(max(6.0, 1.2 * len(classes) * max(1, len(rows)) / 3), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs, means, lows, highs = [], [], [], []
        for j, c in enumerate(classes):
            mean, lo, hi = _entry(row, c)
            if mean is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                means.append(mean)
                lows.append(lo)
                highs.append(hi)
        ax.bar(xs, means, width, yerr=_yerr(means, lows, highs), capsize=2, color=_row_color(i), label=row["strategy"])
    ax.set_xticks(range(len(classes)), [c[len(prefix):] for c in classes])
    ax.set_ylabel(prefix.rstrip(".") + " (mean, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    return fig


def figure_reliability(doc: dict[str, Any]) -> Figure | None:
    """Reliability diagram (observed frequency vs mean predicted probability per bin) and bin occupancy."""
    from matplotlib.figure import Figure

    calibration = doc.get("calibration") or {}
    if not calibration:
        return None
    fig = Figure(figsize=(6.5, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="grey", lw=1, linestyle="--", label="perfect calibration")
    for i, (row, bins) in enumerate(calibration.items()):
        count = [c or 0 for c in bins["count"]]
        total = sum(count) or 1
        pts = [(p, f) for p, f, c in zip(bins["mean_prob"], bins["frac_positive"], count, strict=True)
               if c and p is not None and f is not None]
        if pts:
            top.plot(*zip(*pts, strict=True), "-o", markersize=3, color=_row_color(i), label=row)
        edges = bins["bin_edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        # Empty bins are gaps, not a plunge to log(0).
        bottom.plot(centers, [c / total if c else float("nan") for c in count], "-o", markersize=2, color=_row_color(i))
    top.set_ylabel("observed frequency of the label")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("fraction of pixels")
    bottom.grid(alpha=0.3)
    return fig


def figure_downstream(doc: dict[str, Any]) -> Figure | None:
    """One panel per task metric: every row's mean with its 95% CI, significant differences coloured."""
    # By kind, not unit: task metrics with stored predictions have patients as their unit.
    metrics = [m["name"] for m in doc["metrics"] if m.get("kind") == "task" or m.get("unit") == "seed_repeat"]
    if not metrics:
        return None
    rows = doc["rows"]
    fig, axes = _grid(len(metrics), 3, (4.2, 0.9 + 0.32 * len(rows)))
    for ax, metric in zip(axes, metrics, strict=True):
        for y, row in enumerate(rows):
            mean, lo, hi = _entry(row, metric)
            if mean is None:
                continue
            mark = (row.get("comparison", {}).get(metric) or {}).get("mark", "")
            color = "#888888" if row.get("label_row") else MARK_COLOR.get(mark, _row_color(0))
            ax.errorbar([mean], [y], xerr=_yerr([mean], [lo], [hi]), fmt="o", color=color, capsize=3)
        ax.set_yticks(range(len(rows)), [r["strategy"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(column_header(doc, metric), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    return fig


def read_sensitivity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the JSON document of ``lusbench data sensitivity --json``; UserError (one line naming the file) when it
    is missing, not JSON, another kind of document, or lacks what its curve is drawn from."""
    path = Path(path)
    doc = read_json(path)
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema != SENSITIVITY_SCHEMA:
        raise UserError(f"{path} is not a sensitivity document of `lusbench data sensitivity --json` "
                        f"(schema {schema!r}, expected {SENSITIVITY_SCHEMA!r})")
    problem = _sensitivity_problem(doc)
    if problem:
        raise UserError(f"{path} is not a complete sensitivity document: {problem}")
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sensitivity_problem(doc: dict[str, Any]) -> str | None:
    """What :func:`~lusbench.evaluate.sensitivity.sensitivity_figure` and the caption would miss, or None."""
    for key in ("dataset", "reference", "interval"):
        if not isinstance(doc.get(key), str):
            return f"no '{key}' text"
    if not isinstance(doc.get("patients"), int):
        return "no 'patients' count"
    metrics, levels = doc.get("metrics"), doc.get("levels")
    if not isinstance(metrics, dict) or not all(isinstance(m, dict) and isinstance(m.get("headline"), bool)
                                                and isinstance(m.get("higher_is_better"), bool) for m in metrics.values()):
        return "'metrics' is not an object of metrics with 'headline' and 'higher_is_better'"
    headline = [name for name, m in metrics.items() if m["headline"]]
    if not headline:
        return "no headline metric"
    if not isinstance(levels, list) or not levels:
        return "no 'levels'"
    for i, row in enumerate(levels):
        if not isinstance(row, dict) or not _is_number(row.get("dice")) or not isinstance(row.get("metrics"), dict):
            return f"levels[{i}] has no 'dice' number and 'metrics' object"
        for name in headline:
            entry = row["metrics"].get(name)
            if not isinstance(entry, dict) or not all(_is_number(entry.get(k)) for k in ("value", "low", "high")):
                return f"levels[{i}] has no value, low and high of {name}"
    return None


def sensitivity_caption(sensitivity: dict[str, Any], doc: dict[str, Any]) -> str:
    """What the curve shows, on which data, with the interval's unit as the sensitivity document records it."""
    caption = (f"Each downstream task's headline metric against the Dice of the reference masks ({sensitivity['reference']}) "
               f"degraded by missed findings, false-positive findings and boundary errors; dataset "
               f"{sensitivity['dataset']}, {sensitivity['patients']} patients. Point: the task's cross-validated "
               f"value; band: {sensitivity['interval']}. No model is trained: this is how far the tasks can tell a "
               "better segmentation from a worse one at this number of patients.")
    skipped = sensitivity.get("skipped") or {}
    if isinstance(skipped, dict) and skipped:
        caption += " Not run: " + "; ".join(f"{name} ({why})" for name, why in skipped.items()) + "."
    run_dataset = (doc.get("config") or {}).get("dataset")
    if run_dataset and run_dataset != sensitivity["dataset"]:
        caption += f" This run's dataset is {run_dataset}, not the curve's."
    return caption


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em;margin:.8em 0}
th,td{border:1px solid #ddd;padding:.3em .55em;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}th{background:#f4f6f8}
tr.label-row td{color:#777;font-style:italic}tr.reference td:first-child{font-weight:bold}
.better{color:#1a9850;font-weight:bold}.worse{color:#d73027;font-weight:bold}.ci,.rank{color:#777;font-size:.9em}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#555}code{background:#f4f6f8;padding:0 .2em}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell_html(doc: dict[str, Any], row: dict[str, Any], metric: str) -> str:
    mean, ci, mark, rank = cell_parts(doc, row, metric)
    comp = row.get("comparison", {}).get(metric) or {}
    title = ""
    if comp.get("delta") is not None:
        title = f' title="delta {fmt_value(comp["delta"])}, p {fmt_p(comp.get("p_value"))}, Holm p {fmt_p(comp.get("p_holm"))}"'
    cls = comp.get("mark", "")
    mark_html = f' <span class="{_esc(cls)}">{mark}</span>' if mark else ""
    rank_html = f' <span class="rank">{_esc(rank)}</span>' if rank else ""
    ci_html = f'<br><span class="ci">{_esc(ci)}</span>' if ci else ""
    return f"<td{title}>{_esc(mean)}{mark_html}{rank_html}{ci_html}</td>"


def _row_class(doc: dict[str, Any], row: dict[str, Any]) -> str:
    if row.get("label_row"):
        return "label-row"
    return "reference" if row["strategy"] == doc.get("reference_strategy") else ""


def table_html(doc: dict[str, Any], metrics: Sequence[str]) -> str:
    """Strategies as rows, ``metrics`` as columns."""
    head = "".join(f"<th>{_esc(column_header(doc, m))}</th>" for m in metrics)
    body = "".join(
        f'<tr class="{_row_class(doc, r)}"><td>{_esc(r["strategy"])}</td>' + "".join(_cell_html(doc, r, m) for m in metrics)
        + "</tr>"
        for r in doc["rows"]
    )
    return f"<table><thead><tr><th>strategy</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def full_table_html(doc: dict[str, Any]) -> str:
    """Every metric, one per table row, strategies as columns (the wide view does not fit otherwise)."""
    rows = doc["rows"]
    head = "".join(f'<th class="{_row_class(doc, r)}">{_esc(r["strategy"])}</th>' for r in rows)
    body = "".join(
        f'<tr><td title="{_esc(m.get("description", ""))}">{_esc(column_header(doc, m["name"]))}</td>'
        + "".join(_cell_html(doc, r, m["name"]) for r in rows) + "</tr>"
        for m in doc["metrics"]
    )
    return f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(mapping: dict[str, Any]) -> str:
    return "<table>" + "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in mapping.items()) + "</table>"


def render_html(doc: dict[str, Any], sensitivity: dict[str, Any] | None = None) -> str:
    """The whole report as one HTML string; ``sensitivity`` (:func:`read_sensitivity`) adds its curve."""
    main = default_columns(doc)
    sections: list[str] = []

    def figure(title: str, fig: Figure | None, caption: str, missing: str) -> None:
        if fig is None:
            sections.append(f'<h2>{_esc(title)}</h2><p class="note">{_esc(missing)}</p>')
            return
        sections.append(f'<h2>{_esc(title)}</h2><img alt="{_esc(title)}" src="data:image/png;base64,{_png(fig)}">'
                        f'<p class="note">{_esc(caption)}</p>')

    notes = "<br>".join(_esc(ln.strip()) for ln in legend_lines(doc, main))
    sections.append(f"<h2>Leaderboard</h2>{table_html(doc, main)}<p class='note'>{notes}</p>")
    families = sweep_families(doc)
    for family in families:
        name, _, parameter = family.partition(":")
        figure(f"Metrics against {name}:{parameter}", figure_sweep(doc, family, main),
               f"Mean and 95% CI (a band from three settings on; two settings are points with error bars) of the "
               f"{name} strategies against the parameter they declare as swept; green/red points are significantly "
               "better/worse than the reference strategy (square); dashed lines: other strategies; dotted lines: label "
               "rows (the expert labels, the true masks), or an arrow with the value at the panel's edge when they lie "
               "outside the strategies' range.", "No values.")
    if not families:
        sections.append("<h2>Sweeps</h2><p class='note'>No swept strategy family in this run (two or more settings of "
                        "one strategy that declares a sweep parameter, e.g. threshold:0.5 and threshold:0.8).</p>")
    figure("Per-class Dice", figure_per_class(doc), "Mean Dice per class with 95% CI, one bar per strategy.",
           "No per-class Dice metrics in this run.")
    figure("Reliability diagram", figure_reliability(doc),
           "Predicted probability against the observed frequency of the (eval-threshold) label, pooled over seeds; "
           "below: share of pixels per bin.", "No calibration bins in this run.")
    figure("Downstream clinical tasks", figure_downstream(doc),
           "Mean and 95% CI (over patients, or seeds x CV repeats for tasks without stored predictions); "
           "green/red: significantly better/worse than the reference "
           "strategy; grey: label rows (the expert labels, the true masks).", "No downstream task metrics in this run.")
    if sensitivity is not None:
        import matplotlib.pyplot as plt

        from lusbench.evaluate.sensitivity import sensitivity_figure

        curve = sensitivity_figure(sensitivity)
        try:
            figure("Sensitivity of the downstream tasks to segmentation quality", curve,
                   sensitivity_caption(sensitivity, doc), "")
        finally:
            plt.close(curve)  # sensitivity_figure draws through pyplot, which keeps every figure until closed
    sections.append(f"<h2>All metrics</h2>{full_table_html(doc)}")
    stats = doc.get("statistics") or {}
    sections.append(f"<h2>Run</h2><h3>Configuration</h3>{_kv_table(doc.get('config') or {})}"
                    f"<h3>Environment</h3>{_kv_table(doc.get('environment') or {})}"
                    f"<h3>Statistics</h3>{_kv_table(stats)}")
    marks = ", ".join(f"{g} {k}" for k, g in MARK_GLYPH.items() if g)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>lusbench report</title><style>{_CSS}</style></head><body>"
        f"<h1>lusbench report</h1><p class='note'>{_esc(config_line(doc))}. Marks: {_esc(marks)}.</p>"
        + "".join(sections) + "</body></html>\n"
    )


def write_report(doc: dict[str, Any], path: str | os.PathLike[str], sensitivity: dict[str, Any] | None = None) -> None:
    """Render ``doc`` (with the curve of ``sensitivity``, if given) and write it to ``path`` atomically."""
    atomic_write_text(path, render_html(doc, sensitivity))
