"""The in-memory dataset every stage of lusbench consumes (numpy only, compact dtypes)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

DEFAULT_CLASSES: tuple[str, ...] = ("pleural_line", "a_lines", "b_lines", "consolidation", "effusion")

#: The fields training reads: the images, the confidence its targets come from, and the patients that the folds
#: and the validation split group by. The others (visits, zones, true and rater masks, clinical tables, frame
#: info) only feed evaluation, so a change to them re-evaluates stored folds but retrains none.
TRAINING_FIELDS: tuple[str, ...] = ("images", "confidence", "confidence_scale", "patient", "classes")


@dataclass(eq=False)
class LUSDataset:
    """A lung-ultrasound dataset held in memory.

    Frames are indexed ``0..N-1``; every per-frame array has ``N`` as its first axis.

    - ``images``: ``(N, H, W)`` uint8 B-mode grey levels.
    - ``confidence``: ``(N, K, H, W)`` uint8 expert confidence as quantized levels ``0..confidence_scale``;
      the confidence in [0, 1] is ``level / confidence_scale`` (scale 10 gives 11 levels, 0..100% by 10%).
    - ``patient``, ``visit``, ``zone``: ``(N,)`` integer frame metadata; visits are numbered from 1.
    - ``true_masks``: ``(N, K, H, W)`` bool ground truth, only where the dataset knows it (synthetic data).
    - ``rater_masks``: ``(N, R, K, H, W)`` bool per-rater masks, where several raters labelled each frame.
    - ``visits``: clinical table with one row per (patient, visit): columns ``patient``, ``visit`` and
      optionally ``sf_ratio`` (float, SpO2/FiO2).
    - ``patients``: clinical table with one row per patient: column ``patient`` and optionally
      ``sf_change`` (int class, 1 = improved) and ``readmission_30d`` (int, 1 = readmitted).
    - ``frame_info``: extra per-frame columns (e.g. the simulator's latent severity), for analysis only;
      no stage of the benchmark reads them.
    """

    name: str
    images: np.ndarray
    confidence: np.ndarray
    confidence_scale: int
    patient: np.ndarray
    visit: np.ndarray
    zone: np.ndarray
    classes: tuple[str, ...] = DEFAULT_CLASSES
    true_masks: np.ndarray | None = None
    rater_masks: np.ndarray | None = None
    visits: dict[str, np.ndarray] | None = None
    patients: dict[str, np.ndarray] | None = None
    frame_info: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def confidence_float(self) -> np.ndarray:
        """Confidence as float32 in [0, 1], shape ``(N, K, H, W)``."""
        return self.confidence.astype(np.float32) / np.float32(self.confidence_scale)

    def content_hash(self, names: Sequence[str] | None = None) -> str:
        """SHA-256 (16 hex digits) of the values, dtypes and shapes of the fields ``names`` (default: every field
        but ``name``): the results store keys trained folds by the content, so a dataset replaced under the same
        name is never mistaken for the old one. Hashes the raw array bytes: milliseconds for the presets' data."""
        digest = hashlib.sha256()
        for name in names if names is not None else [f.name for f in fields(self) if f.name != "name"]:
            digest.update(name.encode())
            _hash_value(digest, getattr(self, name))
        return digest.hexdigest()[:16]

    def has_column(self, table: str, column: str) -> bool:
        """Whether clinical table ``visits`` or ``patients`` exists and has ``column``."""
        rows = getattr(self, table)
        return rows is not None and column in rows

    def validate(self) -> None:
        """Raise ValueError naming the first field that does not fit the contract above."""
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W) uint8, got {self.images.shape} {self.images.dtype}")
        n, h, w = self.images.shape
        k = len(self.classes)
        if n == 0:
            raise ValueError("dataset has no frames")
        if self.confidence.shape != (n, k, h, w) or self.confidence.dtype != np.uint8:
            raise ValueError(
                f"confidence must be (N, K, H, W) = {(n, k, h, w)} uint8, got {self.confidence.shape} {self.confidence.dtype}"
            )
        if not 1 <= int(self.confidence_scale) <= 255:
            raise ValueError(f"confidence_scale must be in 1..255, got {self.confidence_scale}")
        if int(self.confidence.max()) > self.confidence_scale:
            raise ValueError(f"confidence levels exceed confidence_scale {self.confidence_scale}")
        for col in ("patient", "visit", "zone"):
            arr = getattr(self, col)
            if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{col} must be an (N,) integer array, got {arr.shape} {arr.dtype}")
        if self.true_masks is not None and (self.true_masks.shape != (n, k, h, w) or self.true_masks.dtype != bool):
            raise ValueError(f"true_masks must be (N, K, H, W) bool, got {self.true_masks.shape} {self.true_masks.dtype}")
        if self.rater_masks is not None and (
            self.rater_masks.ndim != 5 or self.rater_masks.shape[0] != n or self.rater_masks.shape[2:] != (k, h, w)
        ):
            raise ValueError(f"rater_masks must be (N, R, K, H, W), got {self.rater_masks.shape}")
        for table, keys in (("visits", ("patient", "visit")), ("patients", ("patient",))):
            rows = getattr(self, table)
            if rows is None:
                continue
            for key in keys:
                if key not in rows:
                    raise ValueError(f"clinical table '{table}' lacks column '{key}'")
            lengths = {len(v) for v in rows.values()}
            if len(lengths) != 1:
                raise ValueError(f"clinical table '{table}' has columns of different lengths")
        for col, arr in self.frame_info.items():
            if len(arr) != n:
                raise ValueError(f"frame_info column '{col}' has {len(arr)} rows, expected {n}")


def _hash_value(digest: Any, value: Any) -> None:
    if isinstance(value, np.ndarray):
        # dtype and shape first, so the same bytes read as another dtype or shape hash differently.
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(repr(value.tolist()).encode() if value.dtype.hasobject else np.ascontiguousarray(value).data)
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}".encode())
        for key in sorted(value):
            digest.update(str(key).encode())
            _hash_value(digest, value[key])
    else:  # None, the scale, the class names
        digest.update(repr(value).encode())
