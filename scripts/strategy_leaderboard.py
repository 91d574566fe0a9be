"""Regenerate the quick leaderboard of every built-in strategy in docs/strategies.md (one command).

    .venv/bin/python scripts/strategy_leaderboard.py [--out DIR] [--doc docs/strategies.md]

Runs ``lusbench run --preset quick`` with every built-in on the quick preset's data with three raters (so the
rater strategies can run beside the others, on the same frames), then writes the Markdown leaderboard, the command,
its wall time and the lusbench commit between the markers in the doc. The run directory is reused: folds already
trained there under the same keys are not trained again (the wall time then says how many were reused). Nothing
is tuned: the table is what the run measured. On a shared machine wrap it in the CPU lock
(``flock /tmp/lusbench-cpu.lock ...``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = "synthetic-lus:patients=60,size=32,raters=3"
STRATEGIES = ("threshold:0.5", "soft", "weighted", "weighted:weight=c", "band:0.2,0.8", "smooth:0.1", "svls:1",
              "stochastic-threshold:0.3,0.7", "random-rater", "staple:soft", "staple:0.5")
START, END = "<!-- strategy-leaderboard:start -->", "<!-- strategy-leaderboard:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "lusbench-runs" / "strategy-quick", help="run directory")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "strategies.md", help="the page to update")
    args = parser.parse_args()
    doc = args.doc.read_text()
    if START not in doc or END not in doc:
        print(f"{args.doc}: markers {START} / {END} not found", file=sys.stderr)
        return 2
    command = ["lusbench", "run", "--preset", "quick", "--dataset", DATASET,
               *(arg for s in STRATEGIES for arg in ("--strategy", s)), "--out", str(args.out)]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lusbench.cli", *command[1:]], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
        return proc.returncode
    reused = re.search(r"reusing (\d+) of (\d+) trained folds", proc.stdout + proc.stderr)
    table = subprocess.run([sys.executable, "-m", "lusbench.cli", "leaderboard", "--out", str(args.out), "--format",
                            "markdown"], capture_output=True, text=True, check=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    shown = " ".join(command).replace(str(args.out), "DIR")
    timing = f"{seconds:.0f} s wall" + (f", {reused.group(1)} of {reused.group(2)} folds reused from an earlier "
                                        "invocation in the same directory" if reused else "")
    block = "\n".join([
        START,
        f"Measured at lusbench commit `{commit}`{' (with uncommitted changes)' if dirty else ''} with "
        f"`{Path(__file__).relative_to(REPO)}`, which ran ({timing}):",
        "",
        "```", shown, "```", "", table, END])
    from lusbench.fileio import atomic_write_text

    atomic_write_text(args.doc, doc[:doc.index(START)] + block + doc[doc.index(END) + len(END):])
    print(f"wrote the leaderboard of {len(STRATEGIES)} strategies into {args.doc} ({timing})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
