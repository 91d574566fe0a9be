"""Segmentation features: hand-checked values on drawn frames, aggregation, batching, missing classes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from lusbench.data.dataset import DEFAULT_CLASSES, LUSDataset
from lusbench.evaluate.features import compute_features, frame_features

PL, AL, BL, CO, EF = range(5)


def _draw_frame(masks: np.ndarray, sev: float, rng: np.random.Generator) -> None:
    """Draw the five findings of one frame of severity ``sev`` into ``masks`` (K, S, S) bool."""
    size = masks.shape[1]
    top = size // 4
    jitter = np.round(rng.normal(0, 2.5 * sev, size)).astype(int)  # rougher pleura when sicker
    for col in range(2, size - 2):
        row = top + jitter[col]
        masks[PL, row:row + 1 + round(3 * sev), col] = True
    if sev < 0.4:
        masks[AL, 2 * top, 2:-2] = masks[AL, 3 * top, 2:-2] = True
    n_bands = round(6 * sev)
    for start in rng.choice(np.arange(3, size - 5, 4), size=n_bands, replace=False):
        masks[BL, top + 4:, start:start + 2] = True
    if sev > 0.5:
        masks[CO, top + 3:top + 3 + round(size * 0.4 * (sev - 0.3)), size // 3:size // 2] = True
    if sev > 0.7:
        masks[EF, size - 5:, 2:size // 3] = True


def planted_dataset(patients: int = 40, size: int = 32, zones: int = 4, seed: int = 0, visits: int = 2) -> LUSDataset:
    """A small hand-built dataset whose masks and clinical outcomes follow one latent severity per visit.

    Same clinical rules as the synthetic simulator, with a stronger signal: S/F = 460 - 370 x mean zone
    severity + N(0, 15); S/F change = 1 when S/F rises by 20 or more; readmission when last-visit severity plus
    noise exceeds 0.55. ``frame_info["severity"]`` holds each frame's zone severity.
    """
    rng = np.random.default_rng(seed)
    k = len(DEFAULT_CLASSES)
    sev_visit = np.empty((patients, visits))
    sev_visit[:, 0] = rng.uniform(0, 1, patients)
    for v in range(1, visits):
        sev_visit[:, v] = np.clip(sev_visit[:, v - 1] + rng.normal(0, 0.3, patients), 0, 1)
    sev_zone = np.clip(sev_visit[..., None] + rng.normal(0, 0.1, (patients, visits, zones)), 0, 1)
    grid = np.indices((patients, visits, zones)).reshape(3, -1)
    n = grid.shape[1]
    masks = np.zeros((n, k, size, size), dtype=bool)
    severity = sev_zone[grid[0], grid[1], grid[2]]
    for i in range(n):
        _draw_frame(masks[i], severity[i], rng)
    sf = 460 - 370 * sev_zone.mean(axis=2) + rng.normal(0, 15, (patients, visits))
    patient_ids = np.arange(patients)
    return LUSDataset(
        name="planted",
        images=np.zeros((n, size, size), dtype=np.uint8),
        confidence=masks.astype(np.uint8) * 10,
        confidence_scale=10,
        patient=grid[0].astype(np.int32),
        visit=(grid[1] + 1).astype(np.int32),
        zone=(grid[2] + 1).astype(np.int32),
        true_masks=masks,
        visits={"patient": np.repeat(patient_ids, visits), "visit": np.tile(np.arange(1, visits + 1), patients),
                "sf_ratio": sf.ravel()},
        patients={"patient": patient_ids, "sf_change": (sf[:, -1] - sf[:, 0] >= 20).astype(np.int32),
                  "readmission_30d": (sev_visit[:, -1] + rng.normal(0, 0.1, patients) > 0.55).astype(np.int32)},
        frame_info={"severity": severity.astype(np.float32)},
    )


def _one_frame_dataset(maps: np.ndarray, classes: tuple[str, ...] = DEFAULT_CLASSES) -> LUSDataset:
    n, k, h, w = maps.shape
    return LUSDataset(name="t", images=np.zeros((n, h, w), np.uint8), confidence=np.zeros((n, k, h, w), np.uint8),
                      confidence_scale=10, patient=np.zeros(n, np.int32), visit=np.ones(n, np.int32),
                      zone=np.arange(1, n + 1, dtype=np.int32), classes=classes)


def _features_of(maps: np.ndarray) -> dict[str, float]:
    names, cols = frame_features(maps, DEFAULT_CLASSES)
    return {name: float(col[0]) for name, col in zip(names, cols, strict=True)}


def test_hand_drawn_frame_gives_the_documented_values():
    m = np.zeros((1, 5, 32, 32), dtype=np.float32)
    m[0, PL, 8:10, 4:28] = 1  # 24 columns, 2 rows thick ...
    m[0, PL, :, 14:18] = 0  # ... with a 4-column gap
    for start in (6, 12, 20):  # three 2-column B-lines from the pleura to the bottom
        m[0, BL, 10:, start:start + 2] = 1
    m[0, BL, 10:14, 25] = 1  # a short streak: not deep enough to be a B-line
    m[0, CO, 10:14, 4:8] = 1  # 4 rows deep
    m[0, EF, 24:32, 0:4] = 1  # 8 rows deep
    f = _features_of(m)
    assert f["area.pleural_line"] == pytest.approx(40 / 1024)
    assert f["area.consolidation"] == pytest.approx(16 / 1024)
    assert f["pleural_line.thickness"] == pytest.approx(2 / 32)
    assert f["pleural_line.discontinuity"] == pytest.approx(4 / 24)
    assert f["pleural_line.irregularity"] == pytest.approx(0.0, abs=1e-9)
    assert f["b_lines.count"] == 3
    assert f["b_lines.width_fraction"] == pytest.approx(6 / 24)
    assert f["consolidation.depth"] == pytest.approx(4 / 32)
    assert f["effusion.depth"] == pytest.approx(8 / 32)
    assert f["lus_score"] == 3  # consolidation deeper than 5% of the height
    assert all(f[f"entropy.{c}"] == 0 for c in DEFAULT_CLASSES)  # 0/1 maps carry no uncertainty


def test_lus_score_levels():
    m = np.zeros((3, 5, 32, 32), dtype=np.float32)
    m[:, PL, 8, :] = 1
    m[0, BL, 10:, 4:6] = m[0, BL, 10:, 10:12] = 1  # two B-lines: score 0
    for start in (4, 10, 16):
        m[1, BL, 10:, start:start + 2] = 1  # three separate B-lines: score 1
    m[2, BL, 10:, 2:20] = 1  # one confluent band over more than half the width: score 2
    names, cols = frame_features(m, DEFAULT_CLASSES)
    assert cols[names.index("lus_score")].tolist() == [0, 1, 2]
    assert cols[names.index("b_lines.count")].tolist() == [2, 3, 1]


def test_irregularity_measures_roughness_not_tilt_or_curvature():
    m = np.zeros((3, 5, 64, 64), dtype=np.float32)
    cols = np.arange(64)
    smooth = np.round(10 + 0.15 * cols + 0.004 * (cols - 32) ** 2).astype(int)  # tilted and curved
    rough = 16 + np.where(cols % 4 < 2, 0, 3)
    flat = np.full(64, 16)
    for i, rows in enumerate((flat, smooth, rough)):
        m[i, PL, rows, cols] = 1
    names, values = frame_features(m, DEFAULT_CLASSES)
    irregularity = values[names.index("pleural_line.irregularity")]
    assert irregularity[0] == pytest.approx(0, abs=1e-9)
    assert irregularity[1] < 0.01  # rounding of the drawn curve only
    assert irregularity[2] > 0.02 > 2 * irregularity[1]


def test_area_and_entropy_use_the_probabilities_and_shapes_use_the_binarized_map():
    m = np.zeros((2, 5, 32, 32), dtype=np.float32)
    m[0, BL, 10:, 4:8] = 0.6
    m[1, BL, 10:, 4:8] = 1.0
    m[:, AL] = 0.5
    names, cols = frame_features(m, DEFAULT_CLASSES)
    f = dict(zip(names, cols, strict=True))
    assert f["area.b_lines"] == pytest.approx([0.6 * 88 / 1024, 88 / 1024])
    assert f["entropy.a_lines"] == pytest.approx([1.0, 1.0])  # p = 0.5: one bit per pixel
    h06 = -(0.6 * np.log2(0.6) + 0.4 * np.log2(0.4))
    assert f["entropy.b_lines"] == pytest.approx([h06 * 88 / 1024, 0.0], rel=1e-5)
    assert f["b_lines.count"].tolist() == [1, 1]  # 0.6 and 1.0 are both above the 0.5 binarization
    assert f["b_lines.width_fraction"].tolist() == [4 / 32, 4 / 32]  # no pleural line: the whole width


def test_no_pleural_line_makes_its_shape_features_nan():
    f = _features_of(np.zeros((1, 5, 32, 32), dtype=np.float32))
    for name in ("pleural_line.thickness", "pleural_line.irregularity", "pleural_line.discontinuity"):
        assert np.isnan(f[name])
    assert f["b_lines.count"] == 0 and f["area.pleural_line"] == 0 and f["lus_score"] == 0


def test_missing_classes_have_no_features_and_do_not_crash():
    classes = ("pleural_line", "b_lines")
    maps = np.zeros((2, 2, 32, 32), dtype=np.float32)
    maps[:, 1, 10:, 4:6] = 1
    fs = compute_features(maps, _one_frame_dataset(maps, classes))
    assert "b_lines.count" in fs.frame_names and "pleural_line.thickness" in fs.frame_names
    assert not any("consolidation" in n or "effusion" in n or "a_lines" in n for n in fs.frame_names)
    assert "lus_score" not in fs.frame_names  # needs consolidation
    assert fs.frame.shape == (2, len(fs.frame_names))


def test_batched_features_equal_frame_by_frame():
    ds = planted_dataset(patients=6, size=48)
    maps = np.random.default_rng(1).random(ds.true_masks.shape, dtype=np.float32) * ds.true_masks
    names, cols = frame_features(maps, ds.classes)
    whole = np.stack(cols, axis=1)
    single = np.stack([np.stack(frame_features(maps[i:i + 1], ds.classes)[1], axis=1)[0] for i in range(ds.n_frames)])
    np.testing.assert_allclose(whole, single, rtol=1e-6, equal_nan=True)


def test_visit_aggregates_mean_max_and_total_zone_score():
    # One visit, two zones, two frames in zone 1: zone scores are each zone's worst frame.
    m = np.zeros((3, 5, 32, 32), dtype=np.float32)
    m[:, PL, 8, 2:30] = 1
    m[0, CO, 10:20, 4:8] = 1  # zone 1, frame a: score 3
    for start in (4, 10, 16):
        m[2, BL, 10:, start:start + 2] = 1  # zone 2: score 1
    m[1, PL] = 0  # zone 1, frame b: no pleural line (NaN thickness), score 0
    ds = _one_frame_dataset(m)
    ds.zone[:] = [1, 1, 2]
    fs = compute_features(m, ds)
    assert fs.visit_keys.tolist() == [[0, 1]]
    row = dict(zip(fs.visit_names, fs.visit[0], strict=True))
    assert row["lus_score.mean"] == pytest.approx(4 / 3)
    assert row["lus_score.max"] == 3
    assert row["lus_score.total"] == 4  # zone 1: max(3, 0) + zone 2: 1
    assert row["pleural_line.thickness.mean"] == pytest.approx(1 / 32)  # the NaN frame is ignored
    assert row["b_lines.count.max"] == 3


def test_patient_features_first_last_change():
    ds = planted_dataset(patients=5, size=32, zones=2)
    fs = compute_features(ds.true_masks.astype(np.float32), ds)
    assert fs.patient_ids.tolist() == [0, 1, 2, 3, 4]
    assert fs.visit_keys.tolist() == [[p, v] for p in range(5) for v in (1, 2)]
    g = len(fs.visit_names)
    assert fs.patient_names[:g] == [f"first.{n}" for n in fs.visit_names]
    np.testing.assert_array_equal(fs.patient[:, :g], fs.visit[0::2])
    np.testing.assert_array_equal(fs.patient[:, g:2 * g], fs.visit[1::2])
    np.testing.assert_allclose(fs.patient[:, 2 * g:], fs.visit[1::2] - fs.visit[0::2])
    last = fs.patient_rows(np.array([3, 99]), ("last",))
    np.testing.assert_array_equal(last[0], fs.visit[7])
    assert np.isnan(last[1]).all()  # an unknown patient gets a NaN row
    np.testing.assert_array_equal(fs.visit_rows(np.array([2]), np.array([1])), fs.visit[[4]])


def test_single_visit_patient_has_nan_change():
    ds = planted_dataset(patients=3, size=32, zones=2, visits=1)
    fs = compute_features(ds.true_masks.astype(np.float32), ds)
    change = fs.patient_rows(fs.patient_ids, ("change",))
    assert change.shape == (3, len(fs.visit_names)) and np.isnan(change).all()
    np.testing.assert_array_equal(fs.patient_rows(fs.patient_ids, ("first",)), fs.patient_rows(fs.patient_ids, ("last",)))


def test_features_follow_severity_on_the_planted_dataset():
    ds = planted_dataset(patients=20)
    fs = compute_features(ds.true_masks.astype(np.float32), ds)
    f = dict(zip(fs.frame_names, fs.frame.T, strict=True))
    sev = ds.frame_info["severity"]
    for name in ("b_lines.count", "b_lines.width_fraction", "pleural_line.thickness", "pleural_line.irregularity",
                 "area.consolidation", "lus_score"):
        assert spearmanr(sev, f[name]).statistic > 0.5, name
    assert spearmanr(sev, f["area.a_lines"]).statistic < -0.5


def test_shape_mismatch_is_a_value_error():
    ds = planted_dataset(patients=2, size=32, zones=1)
    with pytest.raises(ValueError, match="prob_maps must be"):
        compute_features(np.zeros((ds.n_frames, 5, 16, 16), dtype=np.float32), ds)
