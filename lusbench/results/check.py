"""``lusbench check``: compare a fresh leaderboard with a committed baseline, metric by metric.

A metric regresses when the baseline is better than the current value by more than the metric's absolute
tolerance, in the metric's own direction (``higher_is_better``). Rows are paired by strategy; label
rows are context and never compared. A baseline from another schema or configuration cannot be compared.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from lusbench.errors import CannotCompareError, UserError
from lusbench.evaluate.metricdefs import FALLBACK_TOLERANCE
from lusbench.results.document import SCHEMA
from lusbench.results.render import fmt_value

VERDICT_OK = "ok"
VERDICT_IMPROVED = "improved"
VERDICT_REGRESSION = "REGRESSION"
VERDICT_MISSING = "MISSING"
VERDICT_NEW = "new"
VERDICT_NA = "n/a"
FAILING = (VERDICT_REGRESSION, VERDICT_MISSING)


@dataclass(frozen=True)
class CheckLine:
    """One compared (strategy, metric): ``delta = new - old`` (fresh minus baseline); ``verdict`` is one of the
    VERDICT_* strings; ``tolerance_source`` says where the tolerance came from (:func:`tolerance_for`)."""

    row: str
    metric: str
    higher_is_better: bool
    old: float | None
    new: float | None
    delta: float | None
    tolerance: float
    verdict: str
    tolerance_source: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING


@dataclass(frozen=True)
class CheckResult:
    """The comparison: a line per (strategy, metric) both leaderboards have the strategy of, and the baseline's
    strategies the fresh leaderboard lacks (``missing``: each one failure, named once, not metric by metric)."""

    lines: list[CheckLine]
    missing: list[str]
    missing_metrics: int  # how many baseline metrics the missing strategies leave unchecked

    @property
    def failed(self) -> bool:
        return bool(self.missing) or any(ln.failed for ln in self.lines)

    def beyond_tolerance(self) -> list[CheckLine]:
        """Failures first, then improvements and values only one side has: what a reader must see."""
        order = {VERDICT_REGRESSION: 0, VERDICT_MISSING: 1, VERDICT_IMPROVED: 2, VERDICT_NEW: 3}
        return sorted((ln for ln in self.lines if ln.verdict in order), key=lambda ln: order[ln.verdict])


def parse_tolerances(items: Sequence[str]) -> dict[str, float]:
    """``["dice=0.02", "sf_ratio.*=20"]`` -> ``{"dice": 0.02, "sf_ratio.*": 20.0}``; UserError when malformed."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            tol = float(value)
        except ValueError:
            tol = math.nan
        if not sep or not name.strip() or not math.isfinite(tol) or tol < 0:
            raise UserError(f"--tolerance {item!r}: expected METRIC=ABS with ABS a non-negative number")
        out[name.strip()] = tol
    return out


def _lookup(metric: str, table: Mapping[str, float]) -> tuple[str, float] | None:
    """(pattern, tolerance): the exact name first, then glob patterns in order."""
    if metric in table:
        return metric, float(table[metric])
    for pattern, tol in table.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return pattern, float(tol)
    return None


class Tolerance(NamedTuple):
    """A metric's tolerance and where it came from (one of the SOURCE_* strings, with the pattern that matched)."""

    value: float
    source: str


SOURCE_FLAG = "--tolerance"
SOURCE_BASELINE = "baseline tolerances"
SOURCE_NOISE = "baseline noise_tolerances"
SOURCE_DECLARED = "metric's definition"
SOURCE_FALLBACK = "fallback"


def tolerance_for(metric: str, overrides: Mapping[str, float], baseline_tolerances: Mapping[str, float],
                  declared: Mapping[str, float | None] | None = None, noise: Mapping[str, float] | None = None) -> Tolerance:
    """The metric's tolerance, from the first source that has it: ``--tolerance`` flags, the baseline's
    hand-set ``tolerances`` map, the baseline's ``noise_tolerances`` (:func:`noise_tolerances`), the tolerance
    the metric's plugin declares (``declared``: name -> tolerance, from the leaderboard's ``metrics``), and
    :data:`~lusbench.evaluate.metricdefs.FALLBACK_TOLERANCE`."""
    for table, source in ((overrides, SOURCE_FLAG), (baseline_tolerances, SOURCE_BASELINE), (noise or {}, SOURCE_NOISE)):
        found = _lookup(metric, table)
        if found is not None:
            pattern, tol = found
            return Tolerance(tol, source if pattern == metric else f"{source} {pattern}")
    tol = (declared or {}).get(metric)
    return Tolerance(float(tol), SOURCE_DECLARED) if tol is not None else Tolerance(FALLBACK_TOLERANCE, SOURCE_FALLBACK)


def check_tolerance_names(overrides: Mapping[str, float], *docs: Mapping[str, Any]) -> None:
    """UserError for a ``--tolerance`` name or glob that matches no metric of ``docs``: a typo would otherwise
    leave the gate at its old tolerance without a word."""
    names = {m["name"] for doc in docs for m in doc.get("metrics") or []}
    for pattern, tol in overrides.items():
        if not any(pattern == n or fnmatch.fnmatchcase(n, pattern) for n in names):
            raise UserError(f"--tolerance {pattern}={tol:g}: no metric of the leaderboards matches {pattern!r} "
                            "(see `lusbench leaderboard --metrics all`)")


#: Noise-derived tolerances: this many standard errors of a strategy's mean (the CI half-width / 1.96; the CI
#: includes the training randomness of the trained models). A rerun under other training randomness differs
#: from the baseline by the difference of two such estimates (SD about 1.41 SE), so 4 SE is about 2.8 SD of
#: that difference: a false alarm about once in 200 metrics.
NOISE_MULTIPLE = 4.0
#: ... but never below this share of the metric's declared tolerance: a CI of zero width (a metric every model
#: gets exactly right) must not turn into a gate that fails on the last decimal.
NOISE_FLOOR_SHARE = 0.2


def noise_tolerances(doc: Mapping[str, Any], multiple: float = NOISE_MULTIPLE) -> dict[str, float]:
    """Per metric: ``multiple`` x the largest standard error among the strategy rows' means (from their 95% CIs),
    at least :data:`NOISE_FLOOR_SHARE` of the metric's declared tolerance. Metrics without a CI in any row are
    left out (their other tolerances apply)."""
    declared = declared_tolerances(doc)
    out: dict[str, float] = {}
    for m in doc["metrics"]:
        name = m["name"]
        ses = [(e["ci_high"] - e["ci_low"]) / (2 * 1.959964) for r in doc["rows"] if not r.get("label_row")
               if (e := r["metrics"].get(name) or {}).get("ci_low") is not None and e.get("ci_high") is not None]
        if not ses:
            continue
        floor = NOISE_FLOOR_SHARE * (declared.get(name) or FALLBACK_TOLERANCE)
        out[name] = float(f"{max(floor, multiple * max(ses)):.4g}")
    return out


def declared_tolerances(doc: Mapping[str, Any]) -> dict[str, float | None]:
    """Metric name -> the tolerance its plugin declared, as recorded in a leaderboard's ``metrics``."""
    return {m["name"]: m.get("tolerance") for m in doc.get("metrics") or []}


def baseline_tolerances(baseline: Mapping[str, Any], key: str = "tolerances") -> dict[str, float]:
    """A tolerance map stored in a baseline file (``tolerances``, hand-set, or ``noise_tolerances``); empty when
    absent, UserError when malformed."""
    raw = baseline.get(key) or {}
    if not isinstance(raw, dict):
        raise UserError(f"the baseline's '{key}' must be a map of METRIC (or glob) to an absolute tolerance")
    return parse_tolerances([f"{k}={v}" for k, v in raw.items()])


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: old != new`` for every differing configuration key (nested maps as ``train.epochs``), hash excluded."""
    missing = object()
    out = []
    for k in sorted((set(old) | set(new)) - {"config_hash"}):
        a, b = old.get(k, missing), new.get(k, missing)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {'(absent)' if a is missing else repr(a)} != {'(absent)' if b is missing else repr(b)}")
    return out


def ensure_comparable(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise CannotCompareError unless both documents share the schema and the configuration hash."""
    if baseline.get("schema") != current.get("schema"):
        raise CannotCompareError(
            f"baseline schema {baseline.get('schema')!r} differs from current {current.get('schema')!r}"
        )
    if current.get("schema") != SCHEMA:
        raise CannotCompareError(f"unsupported leaderboard schema {current.get('schema')!r} (this lusbench reads {SCHEMA})")
    old_cfg, new_cfg = baseline.get("config") or {}, current.get("config") or {}
    old_hash, new_hash = old_cfg.get("config_hash"), new_cfg.get("config_hash")
    if old_hash is None or old_hash != new_hash:
        diffs = config_differences(old_cfg, new_cfg)
        detail = "; ".join(diffs) if diffs else f"config_hash {old_hash!r} != {new_hash!r}, listed keys equal"
        raise CannotCompareError(f"baseline was made with another configuration (baseline != fresh: {detail}); rerun with its "
                                 "configuration or refresh it with --update-baseline")
    old_dir = {m["name"]: m["higher_is_better"] for m in baseline["metrics"]}
    new_dir = {m["name"]: m["higher_is_better"] for m in current["metrics"]}
    flipped = sorted(m for m in old_dir.keys() & new_dir.keys() if old_dir[m] != new_dir[m])
    if flipped:
        raise CannotCompareError(f"metric direction (higher_is_better) changed for {', '.join(flipped)}")


def environment_differences(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Environment changes (versions, device): reported, never a reason to refuse the comparison."""
    return config_differences(baseline.get("environment") or {}, current.get("environment") or {})


def _verdict(old: float | None, new: float | None, higher: bool, tol: float) -> tuple[float | None, str]:
    if old is None and new is None:
        return None, VERDICT_NA
    if old is None:
        return None, VERDICT_NEW
    if new is None:
        return None, VERDICT_MISSING
    delta = new - old
    worse_by = -delta if higher else delta
    if worse_by > tol:
        return delta, VERDICT_REGRESSION
    if -worse_by > tol:
        return delta, VERDICT_IMPROVED
    return delta, VERDICT_OK


def compare(
    baseline: Mapping[str, Any], current: Mapping[str, Any], overrides: Mapping[str, float] | None = None
) -> CheckResult:
    """Every (strategy row, baseline metric) of the baseline against the current document.

    A baseline metric missing from the current document is MISSING (a failure: the benchmark lost something it
    used to measure), and so is a whole baseline strategy (listed once in ``CheckResult.missing``); a value
    missing in both is n/a; a value only in the current one is new. Raises CannotCompareError as
    :func:`ensure_comparable`.
    """
    ensure_comparable(baseline, current)
    stored = baseline_tolerances(baseline)
    noise = baseline_tolerances(baseline, "noise_tolerances")
    declared = {**declared_tolerances(baseline), **declared_tolerances(current)}
    current_rows = {r["strategy"]: r for r in current["rows"]}
    lines, missing = [], []
    for old_row in baseline["rows"]:
        if old_row.get("label_row"):
            continue
        new_row = current_rows.get(old_row["strategy"])
        if new_row is None:
            missing.append(old_row["strategy"])
            continue
        for m in baseline["metrics"]:
            name, higher = m["name"], bool(m["higher_is_better"])
            tol = tolerance_for(name, overrides or {}, stored, declared, noise)
            old = (old_row["metrics"].get(name) or {}).get("mean")
            new = (new_row["metrics"].get(name) or {}).get("mean")
            delta, verdict = _verdict(old, new, higher, tol.value)
            lines.append(CheckLine(old_row["strategy"], name, higher, old, new, delta, tol.value, verdict, tol.source))
    return CheckResult(lines, missing, len(missing) * len(baseline["metrics"]))


def uncompared_rows(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Strategies of the current leaderboard that the baseline does not have (so nothing guards them yet)."""
    known = {r["strategy"] for r in baseline["rows"]}
    return [r["strategy"] for r in current["rows"] if not r.get("label_row") and r["strategy"] not in known]


def updated_baseline(current: Mapping[str, Any], previous: Mapping[str, Any] | None,
                     noise_multiple: float | None = None) -> dict[str, Any]:
    """The new baseline: the current document, keeping the previous baseline's hand-set ``tolerances``.

    Noise-derived tolerances (``noise_tolerances``) are computed from the current document with
    ``noise_multiple``, or, when it is None, with the multiple the previous baseline used, if it had them.
    """
    doc = dict(current)
    if previous is not None and previous.get("tolerances"):
        doc["tolerances"] = previous["tolerances"]
    if noise_multiple is None and previous is not None:
        noise_multiple = (previous.get("noise_tolerance_method") or {}).get("multiple")
    if noise_multiple is not None:
        doc["noise_tolerances"] = noise_tolerances(current, float(noise_multiple))
        doc["noise_tolerance_method"] = {
            "multiple": float(noise_multiple), "floor_share": NOISE_FLOOR_SHARE,
            "rule": "multiple x the largest standard error (95% CI half-width / 1.96) among the strategies, "
                    "at least floor_share x the metric's declared tolerance",
        }
    return doc


def _named(lines: Sequence[CheckLine], limit: int = 5) -> str:
    shown = ", ".join(f"{ln.row} {ln.metric} (baseline {fmt_value(ln.old)}, fresh {fmt_value(ln.new)}, tolerance "
                      f"{ln.tolerance:g})" for ln in lines[:limit])
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def summary(result: CheckResult) -> str:
    """One line: how many metrics were compared and which failed."""
    lines = result.lines
    failed = [ln for ln in lines if ln.failed]
    rows = len({ln.row for ln in lines})
    lost = f"{len(result.missing)} baseline strategies missing ({', '.join(result.missing)})" if result.missing else ""
    if not result.failed:
        improved = sum(ln.verdict == VERDICT_IMPROVED for ln in lines)
        hint = f"; {improved} improved beyond tolerance (refresh the baseline with --update-baseline)" if improved else ""
        return f"check passed: {len(lines)} metrics compared over {rows} strategies, no regression{hint}"
    parts = [f"{len(failed)} of {len(lines)} metrics regressed or went missing: {_named(failed)}"] if failed else []
    return "check FAILED: " + "; ".join(parts + ([lost] if lost else []))


def update_summary(result: CheckResult) -> str:
    """What ``--update-baseline`` accepted, in place of a verdict: the changes the new baseline makes the norm."""
    worse = [ln for ln in result.lines if ln.failed]
    better = [ln for ln in result.lines if ln.verdict == VERDICT_IMPROVED]
    if not (worse or better or result.missing):
        return f"no metric changed beyond tolerance ({len(result.lines)} compared)"
    parts = ([f"{len(worse)} worse or lost: {_named(worse, 3)}"] if worse else []) + \
            ([f"{len(better)} better"] if better else []) + \
            ([f"strategies dropped: {', '.join(result.missing)}"] if result.missing else [])
    return "accepted as the new baseline: " + "; ".join(parts)
