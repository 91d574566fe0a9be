"""The clinical tables of a folder dataset: ``visits.csv`` (one row per patient and visit) and ``patients.csv``.

- The S/F ratio of a visit is its ``sf_ratio`` cell or, where that is blank, ``spo2 / fio2`` (SpO2 in percent,
  FiO2 as a fraction 0.21..1); where both are given they must agree (within 1%).
- A patient's S/F change class is its ``sf_change`` cell or, where that is blank (or the table or column is
  absent), derived by the rule the synthetic dataset uses: 1 (improved) if the S/F ratio at the patient's last
  visit exceeds the first visit's by at least the manifest's ``sf_change_margin`` (default 20), else 0;
  unknown for a patient with fewer than two visits with an S/F ratio.
- A blank cell is an unknown value: the tasks leave that row out. A frame's patient (or visit) without a row is
  a notice, and its row is unknown throughout; a row whose patient has no frames is a notice and is dropped.
- ``NaN``, ``inf``, text, duplicate rows and values out of range are problems naming the file and the line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lusbench.data.folder.csvfile import Table, parse_int, parse_number, read_csv
from lusbench.data.folder.manifest import Manifest
from lusbench.data.folder.problems import Problems

# (low, high, what) of the known columns; other columns are any finite number.
RANGES = {
    "sf_ratio": (1e-9, 1000.0, "a positive S/F ratio (SpO2 % / FiO2 fraction, about 75..476)"),
    "spo2": (1e-9, 100.0, "SpO2 in percent, 0..100"),
    "fio2": (0.21, 1.0, "FiO2 as a fraction, 0.21..1 (write 0.4, not 40)"),
    "sf_change": (0, 1, "0 or 1"),
    "readmission_30d": (0, 1, "0 or 1"),
}
BINARY = ("sf_change", "readmission_30d")


def read_clinical(root: Path, manifest: Manifest, patient: np.ndarray, visit: np.ndarray,
                  problems: Problems) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """``(visits, patients)`` tables for the frames' ``patient`` and ``visit`` arrays (None where absent)."""
    frame_visits = sorted(set(zip(patient.tolist(), visit.tolist(), strict=True)))
    frame_patients = sorted(set(patient.tolist()))
    visits = patients = None
    if manifest.visits is not None and (table := read_csv(root, manifest.visits, problems)) is not None:
        visits, lines = _typed_rows(table, ("patient", "visit"), frame_visits, manifest, "visits", problems)
        if visits is not None:
            _derive_sf_ratio(visits, lines, table.file, problems)
    if manifest.patients is not None and (table := read_csv(root, manifest.patients, problems)) is not None:
        patients, _ = _typed_rows(table, ("patient",), [(p,) for p in frame_patients], manifest, "patients", problems)
    if visits is not None and "sf_ratio" in visits:
        derived = _sf_change(visits, frame_patients, manifest.sf_change_margin)
        if np.isfinite(derived).any():
            if patients is None:
                patients = {"patient": np.asarray(frame_patients, dtype=np.int64)}
            given = patients.get("sf_change")
            if given is None:
                patients["sf_change"] = derived
            else:
                filled = np.where(np.isfinite(given.astype(np.float64)), given, derived)
                patients["sf_change"] = filled.astype(given.dtype) if np.isfinite(filled).all() else filled
    for name, rows in (("visits", visits), ("patients", patients)):
        if rows is not None:
            for column, values in rows.items():
                rows[column] = _as_dtype(values, manifest.dtypes.get(f"{name}.{column}"))
    return visits, patients


def _typed_rows(table: Table, keys: tuple[str, ...], wanted: list[tuple[int, ...]], manifest: Manifest, name: str,
                problems: Problems) -> tuple[dict[str, np.ndarray] | None, list[int | None]]:
    """Columns of ``table`` as float arrays in the order of ``wanted`` (the key tuples the frames have), and the
    line of each row in the file (None for a row the file lacks)."""
    missing = [k for k in keys if k not in table.columns]
    if missing:
        problems.add(table.file, f"no '{missing[0]}' column", 1)
        return None, []
    values = [c for c in table.columns if c not in keys]
    found: dict[tuple[int, ...], list[float]] = {}
    first_line: dict[tuple[int, ...], int] = {}
    for cells, line in zip(table.rows, table.lines, strict=True):
        try:
            key = tuple(parse_int(cells[k]) if cells[k] else _blank(k) for k in keys)
        except ValueError as exc:
            problems.add(table.file, str(exc), line)
            continue
        row = []
        for column in values:
            try:
                value = parse_number(cells[column])
            except ValueError as exc:
                problems.add(table.file, f"{column}: {exc}", line)
                value = math.nan
            low_high = RANGES.get(column)
            if low_high and not math.isnan(value):
                low, high, what = low_high
                if column in BINARY and value not in (0, 1) or not low <= value <= high:
                    problems.add(table.file, f"{column} must be {what}, got {cells[column]}", line)
            row.append(value)
        if key in first_line:
            problems.add(table.file, f"duplicate row for {_describe(keys, key)} (first on line {first_line[key]})", line)
            continue
        first_line[key] = line
        found[key] = row
    unused = sorted(set(found) - set(wanted))
    if unused:
        problems.notice(f"{table.file}: {len(unused)} row(s) have no frames and are ignored "
                        f"({', '.join(_describe(keys, k) for k in unused[:5])}{', ...' if len(unused) > 5 else ''})")
    absent = [k for k in wanted if k not in found]
    if absent:
        level = "patient-level" if name == "patients" else "visit-level"
        problems.notice(f"{table.file}: no row for {len(absent)} {'patient' if name == 'patients' else 'visit'}(s) with "
                        f"frames ({', '.join(_describe(keys, k) for k in absent[:5])}{', ...' if len(absent) > 5 else ''}): "
                        f"the {level} tasks skip them")
    out = {k: np.array([w[i] for w in wanted], dtype=np.int64) for i, k in enumerate(keys)}
    for i, column in enumerate(values):
        out[column] = np.array([found[w][i] if w in found else math.nan for w in wanted], dtype=np.float64)
    return out, [first_line.get(w) for w in wanted]


def _blank(key: str) -> int:
    raise ValueError(f"{key} is blank")


def _describe(keys: tuple[str, ...], key: tuple[int, ...]) -> str:
    return " ".join(f"{k} {v}" for k, v in zip(keys, key, strict=True))


def _derive_sf_ratio(visits: dict[str, np.ndarray], lines: list[int | None], file: str, problems: Problems) -> None:
    if "spo2" not in visits or "fio2" not in visits:
        return
    derived = visits["spo2"] / visits["fio2"]
    given = visits.get("sf_ratio")
    if given is None:
        visits["sf_ratio"] = derived
        return
    both = np.isfinite(given) & np.isfinite(derived)
    disagree = both & (np.abs(given - derived) > 0.01 * derived)
    for i in np.flatnonzero(disagree):
        problems.add(file, f"sf_ratio {given[i]:g} disagrees with spo2/fio2 = {derived[i]:.4g}", lines[i])
    visits["sf_ratio"] = np.where(np.isfinite(given), given, derived)


def _sf_change(visits: dict[str, np.ndarray], patients: list[int], margin: float) -> np.ndarray:
    """The documented S/F change rule, per patient: NaN with fewer than two visits with a known S/F ratio."""
    out = np.full(len(patients), np.nan)
    sf, patient, visit = visits["sf_ratio"], visits["patient"], visits["visit"]
    for i, p in enumerate(patients):
        rows = np.flatnonzero((patient == p) & np.isfinite(sf))
        if len(rows) >= 2:
            order = rows[np.argsort(visit[rows])]
            out[i] = float(sf[order[-1]] - sf[order[0]] >= margin)
    return out


def _as_dtype(values: np.ndarray, dtype: str | None) -> np.ndarray:
    """The manifest's dtype for the column if it can hold the values exactly; otherwise int64 for a column of
    whole numbers without unknowns, float64 (NaN = unknown) for the rest."""
    as_float = values.astype(np.float64)
    finite = np.isfinite(as_float).all()
    if dtype is not None and (finite or np.dtype(dtype).kind == "f"):
        cast = values.astype(dtype)
        if np.array_equal(cast.astype(np.float64), as_float, equal_nan=True):
            return cast
    if finite and np.array_equal(as_float, np.round(as_float)) and values.dtype.kind in "iuf":
        return as_float.astype(np.int64) if values.dtype.kind == "f" else values.astype(np.int64)
    return as_float
