"""Renderings of a leaderboard document: the terminal table (rich), Markdown and CSV.

They read only the document dict, so a stored ``leaderboard.json`` renders exactly like a freshly built one.
The HTML report is :mod:`lusbench.results.report`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError
from lusbench.results.document import dumps

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

FORMATS = ("table", "markdown", "csv", "json", "html")
# "?" = untestable: too few trained models to tell a difference from training noise (docs/statistics.md).
MARK_GLYPH = {"better": "▲", "worse": "▼", "untestable": "?", "ns": "", "": ""}
MARK_STYLE = {"▲": "bold green", "▼": "bold red", "?": "yellow"}


def stdout_console() -> Any:
    """A rich Console for stdout: the terminal's width and colours on a TTY, plain and wide when piped (CI logs)."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)



def default_columns(doc: dict[str, Any]) -> list[str]:
    """The compact column set: the primary metric first, then the metrics their plugins declare as headline, in
    display order (a leaderboard written before metrics declared it: its first four metrics)."""
    headline = [m["name"] for m in doc["metrics"] if m.get("headline")] or [m["name"] for m in doc["metrics"][:4]]
    primary = doc.get("primary_metric")
    return ([primary] if primary else []) + [m for m in headline if m != primary]


def select_columns(doc: dict[str, Any], metrics: Sequence[str] | None) -> list[str]:
    """``metrics`` validated against the document (``["all"]`` = every metric); None = the default set."""
    names = [m["name"] for m in doc["metrics"]]
    if metrics is None:
        return default_columns(doc)
    if list(metrics) == ["all"]:
        return names
    unknown = [m for m in metrics if m not in names]
    if unknown:
        raise UserError(f"unknown metric(s) {', '.join(unknown)}; this leaderboard has: {', '.join(names)}")
    return list(metrics)


def fmt_value(x: float | None) -> str:
    """A number at a precision that suits its magnitude (Dice 0.712, HD95 12.34, S/F MAE 123.4, ECE 0.0097)."""
    if x is None:
        return "—"
    ax = abs(x)
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 10:
        return f"{x:.2f}"
    # Small values (ECE, Brier) keep two significant digits, so equal-looking cells are equal.
    return f"{x:.4f}" if 0 < ax < 0.1 else f"{x:.3f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def common_n(doc: dict[str, Any], metric: str) -> int | None:
    """The most frequent ``n`` of the metric over rows that have it (shown once, in the column header)."""
    ns = [r["metrics"][metric]["n"] for r in doc["rows"] if (r["metrics"].get(metric) or {}).get("mean") is not None]
    return max(set(ns), key=lambda n: (ns.count(n), n)) if ns else None


def cell_parts(doc: dict[str, Any], row: dict[str, Any], metric: str) -> tuple[str, str, str, str]:
    """(mean, "[lo, hi]", mark glyph, "#rank") of one cell; ``n=`` added where it differs from the header's."""
    entry = row["metrics"].get(metric) or {}
    mean = entry.get("mean")
    if mean is None:
        return "—", "", "", ""
    lo, hi = entry.get("ci_low"), entry.get("ci_high")
    ci = f"[{fmt_value(lo)}, {fmt_value(hi)}]" if lo is not None and hi is not None else "[no CI]"
    if entry.get("n") != common_n(doc, metric):
        ci += f" n={entry.get('n')}"
    mark = MARK_GLYPH.get((row.get("comparison", {}).get(metric) or {}).get("mark", ""), "")
    rank = row.get("rank", {}).get(metric)
    return fmt_value(mean), ci, mark, f"#{rank}" if rank is not None else ""


def column_header(doc: dict[str, Any], metric: str) -> str:
    higher = next(m["higher_is_better"] for m in doc["metrics"] if m["name"] == metric)
    n = common_n(doc, metric)
    primary = " primary" if metric == doc.get("primary_metric") else ""
    return f"{metric} {'↑' if higher else '↓'}{primary}" + (f" (n={n})" if n is not None else "")


def untestable_columns(doc: dict[str, Any], metrics: Sequence[str]) -> dict[str, int]:
    """Metric -> the most (seed, fold) model pairs behind any of its comparisons, for the metrics no row could be
    tested on (every comparison ``untestable``): the legend says why that column has only ``?``."""
    out = {}
    for metric in metrics:
        comps = [c for r in doc["rows"] if (c := (r.get("comparison") or {}).get(metric))]
        if comps and all(c.get("mark") == "untestable" for c in comps):
            out[metric] = max(int(c.get("models") or 0) for c in comps)
    return out


def legend_lines(doc: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    """What the cells mean, every metric shown, and which columns cannot be tested (printed under every table)."""
    ref = doc.get("reference_strategy")
    repeats = any(m.get("unit") == "seed_repeat" for m in doc["metrics"] if m["name"] in metrics)
    n_is = "patients" + (", or seeds x CV repeats for task metrics without per-patient predictions" if repeats else "")
    lines = [f"Mean and its 95% CI [low, high] over {n_is} (n); #k = rank among the strategies."]
    least = (doc.get("statistics") or {}).get("min_model_pairs", 6)
    if doc.get("comparison_note"):
        lines.append(f"{doc['comparison_note'][0].upper()}{doc['comparison_note'][1:]}.")
    else:
        lines.append(f"▲/▼ = significantly better/worse than the reference strategy {ref} (paired test over (seed, fold) "
                     f"model pairs, Holm-adjusted p < 0.05); ? = untestable: fewer than {least} model pairs; see "
                     "docs/statistics.md.")
    labels = [r["strategy"] for r in doc["rows"] if r.get("label_row")]
    if labels:
        lines.append(f"Label rows ({', '.join(labels)}): the expert labels and the true masks themselves, scored and fed "
                     "to the tasks as if they were predictions; context, neither ranked nor tested.")
    defs = {m["name"]: m for m in doc["metrics"]}
    primary = doc.get("primary_metric")
    if primary in metrics:
        lines.append(f"Primary metric {primary}: one no strategy trains on (dice, hd95 and ece score against the labels "
                     "at the eval threshold, which threshold:0.5 trains on).")
    for metric in metrics:
        d, n = defs[metric], common_n(doc, metric)
        lines.append(f"  {metric} {'↑' if d['higher_is_better'] else '↓'}: {d.get('description') or ''}"
                     + (f" (n={n})" if n is not None else ""))
    untestable = untestable_columns(doc, metrics)
    if untestable:
        lines.append(f"Cannot be tested in this run (? in every row; at most {max(untestable.values())} (seed, fold) "
                     f"model pairs, fewer than {least}; more seeds or folds make them testable): {', '.join(untestable)}.")
    return lines


def legend(doc: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """:func:`legend_lines` as one text block (``metrics``: the columns shown; default: the default set)."""
    return "\n".join(legend_lines(doc, select_columns(doc, metrics)))


def config_line(doc: dict[str, Any]) -> str:
    config = doc.get("config") or {}
    keys = ("dataset", "model", "preset", "seeds", "folds", "eval_threshold")
    return ", ".join(f"{k}={config[k]}" for k in keys if k in config)


def _name_cell(doc: dict[str, Any], row: dict[str, Any]) -> Text:
    from rich.text import Text

    name = Text(row["strategy"], style="italic dim" if row.get("label_row") else "")
    if row["strategy"] == doc.get("reference_strategy"):
        name.append("\n(reference)", style="bold")
    return name


# Box-drawing columns cost their padding (2) and a border (1); the table its left border (1).
_COLUMN_COST, _TABLE_COST = 3, 1


def _wide_columns(doc: dict[str, Any], columns: list[str], width: int) -> list[str]:
    """The leading ``columns`` whose stacked cells (mean line over CI line) fit in ``width`` beside the names."""
    name_width = max([len("strategy"), len("(reference)"), *(len(r["strategy"]) for r in doc["rows"])])
    used, kept = _TABLE_COST + name_width + _COLUMN_COST, []
    for metric in columns:
        used += _cell_width(doc, metric) + _COLUMN_COST
        if used > width:
            break
        kept.append(metric)
    return kept


def _cell_width(doc: dict[str, Any], metric: str) -> int:
    """The widest line of the metric's cells (a number is never cut, so its column is at least this wide)."""
    widths = [len(metric) + 2 if "." not in metric else max(len(p) for p in metric.split(".")) + 2, len("primary")]
    for row in doc["rows"]:
        mean, ci, mark, rank = cell_parts(doc, row, metric)
        widths += [len(" ".join(p for p in (mean, mark, rank) if p)), len(ci)]
    return max(widths)


def table_renderable(doc: dict[str, Any], metrics: Sequence[str] | None = None, width: int = 200) -> Any:
    """The terminal table for a console ``width`` columns wide (colours for the marks; label rows dimmed).

    Wide (a column per metric, the CI under the mean) while the columns fit; numbers are never cut. With the
    default columns, those that do not fit are left out and named; ``metrics`` the user chose that do not fit,
    and ``["all"]``, are shown long: a row per (metric, strategy).
    """
    from rich.console import Group
    from rich.text import Text

    columns = select_columns(doc, metrics)
    if metrics is not None:
        fitting = _wide_columns(doc, columns, width) if list(metrics) != ["all"] else []
        body = _wide_table(doc, columns) if fitting == columns else _long_table(doc, columns)
        shown, left_out = columns, []
    else:
        shown = _wide_columns(doc, columns, width) or columns[:1]
        left_out = columns[len(shown):]
        body = _wide_table(doc, shown)
    title = Text(f"lusbench leaderboard  {config_line(doc)}")
    notes = legend_lines(doc, shown)
    if left_out:
        notes.append(f"Not shown at this width: {', '.join(left_out)} (`lusbench leaderboard --metrics all` lists every "
                     "metric, a row each; a wider terminal shows more columns).")
    return Group(title, body, Text("\n".join(notes), style="dim"))


def _wide_table(doc: dict[str, Any], columns: list[str]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=True)
    table.add_column("strategy", overflow="fold")
    for metric in columns:
        higher = next(m["higher_is_better"] for m in doc["metrics"] if m["name"] == metric)
        header = f"{metric} {'↑' if higher else '↓'}" + ("\nprimary" if metric == doc.get("primary_metric") else "")
        # no_wrap with min_width: a number is shown whole or the layout switches to the long form, never "0.74…".
        table.add_column(header, justify="right", no_wrap=True, min_width=_cell_width(doc, metric), overflow="fold")
    for row in doc["rows"]:
        cells: list[Text] = []
        for metric in columns:
            mean, ci, mark, rank = cell_parts(doc, row, metric)
            cell = Text(mean)
            if mark:
                cell.append(f" {mark}", style=MARK_STYLE[mark])
            if rank:
                cell.append(f" {rank}", style="dim")
            if ci:
                cell.append(f"\n{ci}", style="dim")
            cells.append(cell)
        table.add_row(_name_cell(doc, row), *cells)
    return table


def _long_table(doc: dict[str, Any], columns: list[str]) -> Table:
    """A row per (metric, strategy), the metric named once per group: fits 80 columns whatever the metric count."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("metric", overflow="fold")
    table.add_column("strategy", overflow="fold")
    for col in ("mean", "95% CI", "vs ref.", "rank"):
        table.add_column(col, justify="right", no_wrap=True)
    defs = {m["name"]: m for m in doc["metrics"]}
    for metric in columns:
        label = f"{metric} {'↑' if defs[metric]['higher_is_better'] else '↓'}"
        # Rows without a value for this metric (label rows for most metrics) would be a line of dashes.
        rows = [r for r in doc["rows"] if (r["metrics"].get(metric) or {}).get("mean") is not None]
        for i, row in enumerate(rows):
            mean, ci, mark, rank = cell_parts(doc, row, metric)
            table.add_row(label if i == 0 else "", _name_cell(doc, row), mean, ci,
                          Text(mark, style=MARK_STYLE.get(mark, "")), rank, end_section=i == len(rows) - 1)
    return table


def folds_table(doc: dict[str, Any]) -> Table:
    """How every trained fold went: the epoch whose weights were kept, epochs run, why training stopped, and the
    classes it learned nothing for (highlighted: such a fold's metrics are not a strategy's merit)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="lusbench trained folds", title_justify="left")
    for col in ("strategy", "seed", "fold", "kept epoch", "epochs run", "stopped because", "learned nothing for"):
        table.add_column(col, justify="right" if col in ("seed", "fold", "kept epoch", "epochs run") else "left")
    for f in doc.get("folds") or []:
        best = f.get("best_epoch")
        degenerate = ", ".join(f.get("degenerate") or [])
        table.add_row(f["strategy"], str(f["seed"]), str(f["fold"]), "—" if best is None else str(best + 1),
                      str(f.get("epochs_run") or "—"), f.get("stop_reason") or "—",
                      Text(degenerate, style="bold red") if degenerate else "")
    if not doc.get("folds"):
        table.caption = "no per-fold training records in this leaderboard"
    return table


def render_table(doc: dict[str, Any], metrics: Sequence[str] | None = None, width: int = 160) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(table_renderable(doc, metrics, width))
    return console.export_text()


def render_markdown(doc: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    columns = select_columns(doc, metrics)
    ref = doc.get("reference_strategy")
    lines = [
        "| strategy | " + " | ".join(column_header(doc, m) for m in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for row in doc["rows"]:
        name = row["strategy"].replace("|", "\\|")
        if row.get("label_row"):
            name = f"*{name}*"
        elif row["strategy"] == ref:
            name = f"**{name}** (reference)"
        cells = [" ".join(p for p in cell_parts(doc, row, m) if p) for m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    config = config_line(doc)
    head = f"Configuration: {config}\n\n" if config else ""
    return head + "\n".join(lines) + "\n\n" + "\n".join(ln.strip() for ln in legend_lines(doc, columns)) + "\n"


CSV_COLUMNS = ("strategy", "label_row", "metric", "higher_is_better", "unit", "mean", "ci_low", "ci_high", "n", "seeds",
               "delta", "p_value", "p_holm", "mark", "rank")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def render_csv(doc: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """Long format, one line per (row, metric), full precision; empty cells for missing values."""
    columns = select_columns(doc, metrics if metrics is not None else ["all"])
    defs = {m["name"]: m for m in doc["metrics"]}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in doc["rows"]:
        for metric in columns:
            entry = row["metrics"].get(metric) or {}
            comp = row.get("comparison", {}).get(metric) or {}
            values = {
                "strategy": row["strategy"], "label_row": row.get("label_row", False), "metric": metric,
                "higher_is_better": defs[metric]["higher_is_better"], "unit": defs[metric].get("unit"),
                **{k: entry.get(k) for k in ("mean", "ci_low", "ci_high", "n", "seeds")},
                **{k: comp.get(k) for k in ("delta", "p_value", "p_holm", "mark")},
                "rank": row.get("rank", {}).get(metric),
            }
            writer.writerow([_csv_cell(values[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def render(doc: dict[str, Any], fmt: str, metrics: Sequence[str] | None = None) -> str:
    """``doc`` as ``table`` (plain text), ``markdown``, ``csv`` or ``json``.

    ``metrics`` picks the columns of table/markdown/csv (``["all"]`` for every metric); ``json`` always holds
    everything. The ``html`` format is the report (:func:`lusbench.results.report.render_html`).
    """
    if fmt == "table":
        return render_table(doc, metrics)
    if fmt == "markdown":
        return render_markdown(doc, metrics)
    if fmt == "csv":
        return render_csv(doc, metrics)
    if fmt == "json":
        return dumps(doc)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
