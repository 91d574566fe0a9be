"""Features of segmentations for the downstream clinical tasks (every feature in docs/features.md).

:func:`compute_features` turns per-pixel probability maps ``(N, K, H, W)`` (a model's out-of-fold sigmoid
outputs, or 0/1 expert labels / true masks for the reference rows) into

- frame features: one row per frame (areas, B-line bands, pleural-line shape, depths, entropy, LUS score);
- visit features: the frames of one (patient, visit) aggregated across zones (mean, max, total LUS score);
- patient features: the first visit, the last visit and their change.

Everything is batched numpy over all frames at once. Shape features (B-line bands, pleural line, depths, LUS
score) are measured on the maps binarized at :data:`BINARY_THRESHOLD`; areas and entropy use the probabilities.
A class the dataset does not have simply has no features; a feature undefined for a frame (the thickness of a
pleural line that is not there) is NaN and is ignored by the visit aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lusbench.data.dataset import LUSDataset

#: Probability at which maps are binarized for the shape features.
BINARY_THRESHOLD = 0.5
#: A column belongs to a B-line band when B-line pixels fill at least this fraction of the image height
#: (B-lines run from the pleura to the bottom of the image; shorter streaks are not B-lines).
BAND_MIN_DEPTH = 0.25
#: B-line bands narrower than this fraction of the image width are not counted (speckle-sized streaks).
BAND_MIN_WIDTH = 1 / 64
#: LUS score: B-lines covering at least this fraction of the intercostal width are coalescent (score 2).
COALESCENT_FRACTION = 0.5
#: LUS score: this many separate B-lines or more score 1.
SEPARATE_BLINES = 3
#: LUS score: a consolidation at least this deep (fraction of the image height) scores 3.
CONSOLIDATION_MIN_DEPTH = 0.05

# Frames are processed in chunks small enough that the entropy's float temporaries stay in cache (3x faster).
_CHUNK_PIXELS = 1 << 17


@dataclass
class FeatureSet:
    """Features of one set of probability maps at frame, visit and patient level.

    - ``frame``: ``(N, F)`` float64, row ``i`` = frame ``i`` of the dataset; columns ``frame_names``.
    - ``visit``: ``(V, G)`` float64, one row per ``visit_keys[v] = (patient, visit)`` (sorted); columns
      ``visit_names`` (``<frame feature>.mean``, ``<frame feature>.max``, ``lus_score.total``).
    - ``patient``: ``(P, 3G)`` float64, one row per ``patient_ids[p]`` (sorted); columns ``patient_names``:
      ``first.<visit feature>``, ``last.<visit feature>`` and ``change.<visit feature>`` (last minus first,
      NaN for a patient with one visit).
    """

    frame_names: list[str]
    frame: np.ndarray
    visit_names: list[str]
    visit_keys: np.ndarray
    visit: np.ndarray
    patient_names: list[str]
    patient_ids: np.ndarray
    patient: np.ndarray

    def visit_rows(self, patient: np.ndarray, visit: np.ndarray) -> np.ndarray:
        """Visit features for the given (patient, visit) pairs, in that order; NaN rows for pairs without frames."""
        index = {(int(p), int(v)): i for i, (p, v) in enumerate(self.visit_keys)}
        return _take_rows(self.visit, [index.get((int(p), int(v))) for p, v in zip(patient, visit, strict=True)])

    def patient_rows(self, patient: np.ndarray, prefixes: tuple[str, ...] = ("first", "last", "change")) -> np.ndarray:
        """Patient features for the given patients, only the columns named ``<prefix>.*``; NaN rows for unknown ones."""
        index = {int(p): i for i, p in enumerate(self.patient_ids)}
        cols = [j for j, name in enumerate(self.patient_names) if name.split(".", 1)[0] in prefixes]
        return _take_rows(self.patient[:, cols], [index.get(int(p)) for p in patient])


def _take_rows(matrix: np.ndarray, rows: list[int | None]) -> np.ndarray:
    out = np.full((len(rows), matrix.shape[1]), np.nan)
    found = np.array([r is not None for r in rows], dtype=bool)
    if found.any():
        out[found] = matrix[[r for r in rows if r is not None]]
    return out


def compute_features(prob_maps: np.ndarray, dataset: LUSDataset) -> FeatureSet:
    """Frame, visit and patient features of ``prob_maps`` ``(N, K, H, W)`` in [0, 1], aligned with ``dataset``'s frames."""
    n, k, h, w = dataset.n_frames, dataset.n_classes, *dataset.image_shape
    if prob_maps.shape != (n, k, h, w):
        raise ValueError(f"prob_maps must be (N, K, H, W) = {(n, k, h, w)}, got {prob_maps.shape}")
    names, columns = frame_features(prob_maps, dataset.classes)
    frame = np.stack(columns, axis=1) if columns else np.empty((n, 0))
    visit_names, visit_keys, visit = _visit_features(names, frame, dataset)
    patient_names, patient_ids, patient = _patient_features(visit_names, visit_keys, visit)
    return FeatureSet(names, frame, visit_names, visit_keys, visit, patient_names, patient_ids, patient)


def frame_features(prob_maps: np.ndarray, classes: tuple[str, ...]) -> tuple[list[str], list[np.ndarray]]:
    """Per-frame features: their names and one ``(N,)`` float64 column each (see docs/features.md)."""
    n, _, h, w = prob_maps.shape
    idx = {c: i for i, c in enumerate(classes)}
    feats: dict[str, np.ndarray] = {}
    area, entropy = _area_and_entropy(prob_maps)
    for i, cls in enumerate(classes):
        feats[f"area.{cls}"] = area[:, i]

    span = np.ones((n, w), dtype=bool)  # intercostal columns; the whole width without a pleural line
    if "pleural_line" in idx:
        pleura = prob_maps[:, idx["pleural_line"]] >= BINARY_THRESHOLD
        span, pleural = _pleural_features(pleura)
        feats.update(pleural)
    if "b_lines" in idx:
        blines = prob_maps[:, idx["b_lines"]] >= BINARY_THRESHOLD
        feats["b_lines.count"], feats["b_lines.width_fraction"] = _band_features(blines, span)
    for cls in ("consolidation", "effusion"):
        if cls in idx:
            # Largest vertical extent of the finding, the usual bedside size measure (depth below the pleura).
            feats[f"{cls}.depth"] = (prob_maps[:, idx[cls]] >= BINARY_THRESHOLD).sum(axis=1).max(axis=1) / h
    for i, cls in enumerate(classes):
        feats[f"entropy.{cls}"] = entropy[:, i]
    if "b_lines" in idx and "consolidation" in idx:
        feats["lus_score"] = _lus_score(feats["b_lines.count"], feats["b_lines.width_fraction"], feats["consolidation.depth"])
    return list(feats), [np.asarray(v, dtype=np.float64) for v in feats.values()]


def _area_and_entropy(prob_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean probability (soft area fraction) and mean binary entropy in bits, ``(N, K)`` each."""
    n, k, h, w = prob_maps.shape
    area = np.empty((n, k))
    entropy = np.empty((n, k))
    tiny = np.finfo(np.float32).tiny
    step = max(1, _CHUNK_PIXELS // (k * h * w))
    for start in range(0, n, step):
        p = np.clip(prob_maps[start:start + step], 0.0, 1.0).astype(np.float32, copy=False).reshape(-1, k, h * w)
        q = 1.0 - p
        # H(p) = -p log2 p - q log2 q with q = 1 - p; flooring the log argument at `tiny` makes 0 log 0 = 0.
        plogp = np.log2(np.maximum(p, tiny))
        plogp *= p
        qlogq = np.log2(np.maximum(q, tiny))
        qlogq *= q
        plogp += qlogq
        area[start:start + step] = p.mean(axis=2)
        entropy[start:start + step] = -plogp.mean(axis=2)
    return area, entropy


def _pleural_features(pleura: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Intercostal span ``(N, W)`` and thickness, irregularity, discontinuity of a binary pleural line ``(N, H, W)``."""
    n, h, w = pleura.shape
    counts = pleura.sum(axis=1).astype(np.float64)  # pleural pixels per column
    present = counts > 0
    n_present = present.sum(axis=1)
    has_line = n_present > 0
    # The pleural line is only seen between the ribs: its first..last column is the intercostal span.
    cols = np.arange(w)
    first = np.where(has_line, present.argmax(axis=1), 0)
    last = np.where(has_line, w - 1 - present[:, ::-1].argmax(axis=1), w - 1)
    span = (cols >= first[:, None]) & (cols <= last[:, None])
    span_width = (last - first + 1).astype(np.float64)

    with np.errstate(invalid="ignore", divide="ignore"):
        thickness = (counts.sum(axis=1) / n_present) / h
        discontinuity = 1.0 - n_present / span_width
        depth = np.einsum("nhw,h->nw", pleura, np.arange(h, dtype=np.float64)) / counts  # centre row per column
    irregularity = _quadratic_residual_rms(np.where(present, depth, 0.0), present) / h
    nan = ~has_line
    thickness[nan] = discontinuity[nan] = np.nan
    return span, {
        "pleural_line.thickness": thickness,
        "pleural_line.irregularity": irregularity,
        "pleural_line.discontinuity": discontinuity,
    }


def _quadratic_residual_rms(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RMS residual of a least-squares quadratic through ``y[mask]`` per row; NaN with fewer than 4 points.

    A quadratic absorbs the tilt and curvature of a smooth (e.g. curvilinear-probe) pleural line, so what
    remains is its roughness.
    """
    n, w = y.shape
    x = np.linspace(-1.0, 1.0, w)
    basis = np.stack([np.ones(w), x, x * x], axis=1)  # (W, 3)
    m = mask.astype(np.float64)
    gram = np.einsum("nw,wi,wj->nij", m, basis, basis)
    rhs = np.einsum("nw,wi->ni", m * y, basis)
    ok = mask.sum(axis=1) >= 4
    coef = np.zeros((n, 3))
    if ok.any():
        coef[ok] = np.linalg.solve(gram[ok], rhs[ok][..., None])[..., 0]
    resid = (y - coef @ basis.T) * m
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt((resid**2).sum(axis=1) / mask.sum(axis=1))
    rms[~ok] = np.nan
    return rms


def _band_features(blines: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number of distinct vertical B-line bands and the fraction of the intercostal span they cover."""
    _, h, w = blines.shape
    active = (blines.sum(axis=1) >= np.ceil(BAND_MIN_DEPTH * h)) & span
    min_width = max(1, round(BAND_MIN_WIDTH * w))
    if min_width > 1:
        from scipy.ndimage import binary_opening

        # Opening along the width only: removes runs narrower than min_width, keeps the rest as they are.
        active = binary_opening(active, structure=np.ones((1, min_width), dtype=bool))
    starts = active & ~np.pad(active, ((0, 0), (1, 0)))[:, :-1]
    return starts.sum(axis=1).astype(np.float64), active.sum(axis=1) / span.sum(axis=1)


def _lus_score(count: np.ndarray, width_fraction: np.ndarray, consolidation_depth: np.ndarray) -> np.ndarray:
    """Clinical LUS zone score 0..3: 0 normal / <3 B-lines, 1 >=3 separate B-lines, 2 coalescent, 3 consolidation."""
    score = np.where(count >= SEPARATE_BLINES, 1.0, 0.0)
    score = np.where(width_fraction >= COALESCENT_FRACTION, 2.0, score)
    return np.where(consolidation_depth >= CONSOLIDATION_MIN_DEPTH, 3.0, score)


def _visit_features(names: list[str], frame: np.ndarray, dataset: LUSDataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean and max of each frame feature over a visit's frames (NaNs ignored), plus the total LUS score."""
    keys, inverse = np.unique(np.stack([dataset.patient, dataset.visit], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    v = len(keys)
    valid = ~np.isnan(frame)
    sums = np.zeros((v, frame.shape[1]))
    counts = np.zeros((v, frame.shape[1]))
    np.add.at(sums, inverse, np.where(valid, frame, 0.0))
    np.add.at(counts, inverse, valid)
    maxes = np.full((v, frame.shape[1]), np.nan)
    np.fmax.at(maxes, inverse, frame)  # fmax skips NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    out_names = [f"{f}.{agg}" for f in names for agg in ("mean", "max")]
    columns = np.stack([means, maxes], axis=2).reshape(v, -1)
    if "lus_score" in names:
        # Clinical total: each zone scored by its worst frame, zones summed over the visit.
        score = frame[:, names.index("lus_score")]
        zones, zone_inverse = np.unique(np.stack([inverse, dataset.zone], axis=1), axis=0, return_inverse=True)
        zone_score = np.full(len(zones), np.nan)
        np.fmax.at(zone_score, zone_inverse.ravel(), score)
        total = np.zeros(v)
        np.add.at(total, zones[:, 0], zone_score)
        out_names.append("lus_score.total")
        columns = np.concatenate([columns, total[:, None]], axis=1)
    return out_names, keys.astype(np.int64), columns


def _patient_features(names: list[str], keys: np.ndarray, visit: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per patient: features of the first and the last visit and their change (NaN with a single visit)."""
    # keys are sorted by (patient, visit), so a patient's first and last rows are its first and last visits.
    patients, first = np.unique(keys[:, 0], return_index=True)
    last = np.r_[first[1:], len(keys)] - 1
    change = visit[last] - visit[first]
    change[first == last] = np.nan
    out_names = [f"{prefix}.{name}" for prefix in ("first", "last", "change") for name in names]
    return out_names, patients, np.concatenate([visit[first], visit[last], change], axis=1)
