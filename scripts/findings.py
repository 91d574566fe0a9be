"""Regenerate docs/findings.md: the six study strategies on each annotation protocol of synthetic-lus.

    .venv/bin/python scripts/findings.py                      # every protocol and the sensitivity, then the tables
    .venv/bin/python scripts/findings.py --protocol region     # one protocol's run, then the tables
    .venv/bin/python scripts/findings.py --sensitivity         # the default dataset's sensitivity curve, then the tables

Each protocol is one ``lusbench run`` with the default preset on the preset's dataset with ``protocol=...``
(``raters=3`` for protocol raters), into ``runs/findings-<protocol>`` (a rerun reuses finished folds). The
sensitivity curve is ``lusbench data sensitivity synthetic-lus`` (``runs/findings-sensitivity.json``, its plot in
``docs/img/findings-sensitivity.png``). The
tables are the runs' leaderboards as markdown and the sensitivity command's table, pasted between the
markers of docs/findings.md exactly as printed; a section without a finished run keeps its previous table.
On a shared machine, run one protocol per command (wrapped in the machine's lock) so that other work can
interleave.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "findings.md"
STRATEGIES = ("threshold:0.5", "threshold:0.6", "threshold:0.8", "threshold:1", "soft", "weighted")
PROTOCOLS = {"region": "protocol=region", "pixel": "protocol=pixel", "raters": "protocol=raters,raters=3"}
METRICS = ("true.dice,true.dice.pleural_line,true.dice.a_lines,true.dice.b_lines,true.dice.consolidation,"
           "true.dice.effusion,sf_ratio.mae,sf_change.auroc,readmission_30d.auroc")
LUSBENCH = [sys.executable, "-m", "lusbench.cli"]


def dataset_spec(protocol: str) -> str:
    sys.path.insert(0, str(ROOT))
    from lusbench.exec.presets import PRESETS

    return f"{PRESETS['default'].dataset},{PROTOCOLS[protocol]}"


def run_dir(protocol: str) -> Path:
    return ROOT / "runs" / f"findings-{protocol}"


def run(protocol: str) -> None:
    command = [*LUSBENCH, "run", "--preset", "default", "--dataset", dataset_spec(protocol), "--out", str(run_dir(protocol)),
               "--quiet"]
    for strategy in STRATEGIES:
        command += ["--strategy", strategy]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def table(protocol: str) -> str | None:
    if not (run_dir(protocol) / "leaderboard.json").exists():
        return None
    out = subprocess.run([*LUSBENCH, "leaderboard", "--out", str(run_dir(protocol)), "--format", "markdown",
                          "--metrics", METRICS], check=True, capture_output=True, text=True).stdout
    return f"Dataset `{dataset_spec(protocol)}`, preset `default`; command: `lusbench run --preset default --dataset " \
           f"{dataset_spec(protocol)} " + " ".join(f"-s {s}" for s in STRATEGIES) + "`.\n\n" + out.strip() + "\n"


SENSITIVITY_JSON = ROOT / "runs" / "findings-sensitivity.json"
SENSITIVITY_PNG = ROOT / "docs" / "img" / "findings-sensitivity.png"  # the curve, shown in docs/findings.md


def sensitivity() -> None:
    SENSITIVITY_JSON.parent.mkdir(exist_ok=True)
    SENSITIVITY_PNG.parent.mkdir(exist_ok=True)
    subprocess.run([*LUSBENCH, "data", "sensitivity", "synthetic-lus", "--json", str(SENSITIVITY_JSON),
                    "--out", str(SENSITIVITY_PNG)], check=True, stdout=subprocess.DEVNULL)


def sensitivity_table() -> str | None:
    if not SENSITIVITY_JSON.exists():
        return None
    sys.path.insert(0, str(ROOT))
    from lusbench.evaluate.sensitivity import table_lines

    doc = json.loads(SENSITIVITY_JSON.read_text())
    names = [m for metrics in doc["tasks"].values() for m in metrics]
    return (f"`lusbench data sensitivity synthetic-lus` ({doc['dataset']}, {doc['patients']} patients, "
            f"{doc['reference']}; intervals: {doc['interval']}):\n\n```\n" + "\n".join(table_lines(doc, names)) + "\n```\n")


def write() -> None:
    text = DOC.read_text()
    for section in [*PROTOCOLS, "sensitivity"]:
        begin, end = f"<!-- findings:{section}:begin -->\n", f"<!-- findings:{section}:end -->"
        body = sensitivity_table() if section == "sensitivity" else table(section)
        if body is None or begin not in text:
            continue
        head, rest = text.split(begin, 1)
        text = head + begin + body + end + rest.split(end, 1)[1]
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description="Regenerate docs/findings.md (module docstring).")
    parser.add_argument("--protocol", action="append", choices=list(PROTOCOLS),
                        help="run only this protocol (repeatable; default: all)")
    parser.add_argument("--sensitivity", action="store_true", help="run only the sensitivity analysis")
    parser.add_argument("--tables-only", action="store_true", help="run nothing; rewrite the tables from the runs")
    args = parser.parse_args()
    if not args.tables_only:
        everything = not args.protocol and not args.sensitivity
        for protocol in args.protocol or (list(PROTOCOLS) if everything else []):
            run(protocol)
        if args.sensitivity or everything:
            sensitivity()
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
