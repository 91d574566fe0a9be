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


def legend(doc: dict[str, Any]) -> str:
    """One paragraph saying what the cells mean (printed under every table)."""
    ref = doc.get("reference_strategy")
    repeats = any(m.get("unit") == "seed_repeat" for m in doc["metrics"])
    n_is = "patients" + (", or seeds x CV repeats for task metrics without per-patient predictions" if repeats else "")
    text = f"Mean [95% CI]; n = {n_is}; #k = rank among strategies."
    if doc.get("primary_metric"):
        text += (f" Primary metric: {doc['primary_metric']}, one no strategy trains on (dice, hd95, ece score against "
                 "the labels at the eval threshold, which threshold:0.5 trains on).")
    if doc.get("comparison_note"):
        return f"{text} {doc['comparison_note']}."
    least = (doc.get("statistics") or {}).get("min_model_pairs", 6)
    return (f"{text} ▲/▼ = significantly better/worse than {ref} (paired test over (seed, fold) model pairs, "
            f"Holm-adjusted p < 0.05); ? = untestable: fewer than {least} model pairs; see docs/statistics.md.")


def config_line(doc: dict[str, Any]) -> str:
    config = doc.get("config") or {}
    keys = ("dataset", "model", "preset", "seeds", "folds", "eval_threshold")
    return ", ".join(f"{k}={config[k]}" for k in keys if k in config)


def table_renderable(doc: dict[str, Any], metrics: Sequence[str] | None = None) -> Table:
    """The terminal table as a rich Table (colours for the marks; references dimmed)."""
    from rich.table import Table
    from rich.text import Text

    columns = select_columns(doc, metrics)
    table = Table(title=f"lusbench leaderboard  {config_line(doc)}", title_justify="left", caption=legend(doc),
                  caption_justify="left", show_lines=True)
    table.add_column("strategy", no_wrap=True)
    for metric in columns:
        table.add_column(column_header(doc, metric), justify="right")
    for row in doc["rows"]:
        cells: list[Text | str] = []
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
        name = Text(row["strategy"] + (" (ref.)" if row.get("reference") else ""),
                    style="italic dim" if row.get("reference") else "")
        if row["strategy"] == doc.get("reference_strategy"):
            name.append(" (baseline)", style="bold")
        table.add_row(name, *cells)
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
    console.print(table_renderable(doc, metrics))
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
        if row.get("reference"):
            name = f"*{name}* (ref.)"
        elif row["strategy"] == ref:
            name = f"**{name}** (baseline)"
        cells = [" ".join(p for p in cell_parts(doc, row, m) if p) for m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    config = config_line(doc)
    head = f"Configuration: {config}\n\n" if config else ""
    return head + "\n".join(lines) + f"\n\n{legend(doc)}\n"


CSV_COLUMNS = ("strategy", "reference", "metric", "higher_is_better", "unit", "mean", "ci_low", "ci_high", "n", "seeds",
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
                "strategy": row["strategy"], "reference": row.get("reference", False), "metric": metric,
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
