"""The synthetic lung-ultrasound dataset, judged by statistics of the data it generates (no snapshots)."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr

from lusbench.api.plugins import load_plugins
from lusbench.data.dataset import DEFAULT_CLASSES, LUSDataset
from lusbench_builtins.synthetic import make_synthetic_dataset
from lusbench_builtins.synthetic.config import SyntheticConfig
from lusbench_builtins.synthetic.population import sample_cohort

CLASS = {name: k for k, name in enumerate(DEFAULT_CLASSES)}


@pytest.fixture(scope="module")
def data() -> LUSDataset:
    """960 frames at 64x64: enough frames for stable statistics, fast enough for the default suite."""
    return make_synthetic_dataset(patients="80", size="64")


def _arrays(ds: LUSDataset) -> dict[str, np.ndarray]:
    arrays = {"images": ds.images, "confidence": ds.confidence, "true_masks": ds.true_masks, "patient": ds.patient,
              "visit": ds.visit, "zone": ds.zone}
    arrays.update({f"visits.{k}": v for k, v in ds.visits.items()})
    arrays.update({f"patients.{k}": v for k, v in ds.patients.items()})
    arrays.update({f"frame_info.{k}": v for k, v in ds.frame_info.items()})
    return arrays


def test_same_seed_gives_bit_identical_arrays_and_another_seed_differs():
    first = _arrays(make_synthetic_dataset(patients="6", size="32", seed="7"))
    again = _arrays(make_synthetic_dataset(patients="6", size="32", seed="7"))
    other = _arrays(make_synthetic_dataset(patients="6", size="32", seed="8"))
    assert first.keys() == again.keys() == other.keys()
    for key in first:
        assert first[key].dtype == again[key].dtype and np.array_equal(first[key], again[key]), key
    for key in ("images", "confidence", "true_masks", "visits.sf_ratio", "frame_info.severity"):
        assert not np.array_equal(first[key], other[key]), key


def test_contract_dtypes_and_compact_confidence(data):
    n, k, h, w = data.confidence.shape
    assert (k, h, w) == (5, 64, 64) and data.classes == DEFAULT_CLASSES
    assert data.images.dtype == np.uint8 and data.confidence.dtype == np.uint8 and data.true_masks.dtype == bool
    assert data.confidence.nbytes == n * k * h * w  # one byte per level, not a float
    assert data.confidence_scale == 10 and data.confidence.max() == 10
    assert data.visit.min() == 1 and set(np.unique(data.zone)) == set(range(1, 7))
    assert n == 80 * 2 * 6 and len(np.unique(data.patient)) == 80
    assert data.frame_info["severity"].shape == (n,) and data.rater_masks is None
    assert data.name == "synthetic-lus:patients=80,size=64"


@pytest.mark.parametrize("name", ["b_lines", "consolidation", "effusion"])
def test_finding_area_rises_with_severity(data, name):
    area = data.true_masks[:, CLASS[name]].mean(axis=(1, 2))
    assert spearmanr(data.frame_info["severity"], area)[0] > 0.5


def test_pleural_line_thickens_with_severity(data):
    line = data.true_masks[:, CLASS["pleural_line"]]
    thickness = line.sum(axis=(1, 2)) / np.maximum(line.any(axis=1).sum(axis=1), 1)
    assert spearmanr(data.frame_info["severity"], thickness)[0] > 0.5


def test_a_lines_fade_with_severity(data):
    area = data.true_masks[:, CLASS["a_lines"]].mean(axis=(1, 2))
    assert spearmanr(data.frame_info["severity"], area)[0] < -0.5


def test_lower_zones_are_worse():
    cohort = sample_cohort(SyntheticConfig(patients=5000), np.random.default_rng(0))
    by_zone = [cohort.severity[cohort.zone == z].mean() for z in range(1, 7)]
    assert np.all(np.diff(by_zone) > 0)


def test_sf_ratio_falls_with_severity_and_stays_physiologic(data):
    sf = data.visits["sf_ratio"]
    assert sf.min() >= 75 and sf.max() <= 476
    frame_of_visit = [np.flatnonzero((data.patient == p) & (data.visit == v))[0]
                      for p, v in zip(data.visits["patient"], data.visits["visit"], strict=True)]
    # The latent severity and the severity the images show both predict S/F.
    assert spearmanr(data.frame_info["visit_severity"][frame_of_visit], sf)[0] < -0.8
    b_line_area = data.true_masks[:, CLASS["b_lines"]].mean(axis=(1, 2))
    per_visit = [b_line_area[(data.patient == p) & (data.visit == v)].mean()
                 for p, v in zip(data.visits["patient"], data.visits["visit"], strict=True)]
    assert spearmanr(per_visit, sf)[0] < -0.5


def test_sf_change_class_follows_the_documented_rule(data):
    sf = data.visits["sf_ratio"].reshape(-1, 2)
    rule = (sf[:, 1] - sf[:, 0] >= SyntheticConfig().sf_change_margin).astype(int)
    assert np.array_equal(data.patients["sf_change"], rule)
    assert 0.2 < rule.mean() < 0.8


def test_readmission_base_rate_is_realistic_and_driven_by_severity_and_risk():
    cohort = sample_cohort(SyntheticConfig(patients=20000), np.random.default_rng(1))
    readmitted = cohort.patients["readmission_30d"]
    assert 0.10 <= readmitted.mean() <= 0.30
    last = cohort.visit == 2
    severity = np.zeros(len(readmitted))
    severity[cohort.patient[last]] = cohort.visit_severity[last]
    risk = np.zeros(len(readmitted))
    risk[cohort.patient] = cohort.risk
    high = severity > np.median(severity)
    assert readmitted[high].mean() > 1.5 * readmitted[~high].mean()
    risky = risk > np.median(risk)
    assert readmitted[risky].mean() > 1.5 * readmitted[~risky].mean()


def test_readmission_base_rate_in_a_generated_dataset():
    ds = make_synthetic_dataset(patients="300", size="32", zones="2")
    assert 0.10 <= ds.patients["readmission_30d"].mean() <= 0.30


def _precision_by_level(ds: LUSDataset) -> np.ndarray:
    return np.array([ds.true_masks[ds.confidence == level].mean() for level in range(1, ds.confidence_scale + 1)])


def test_fraction_truly_the_finding_rises_with_confidence(data):
    precision = _precision_by_level(data)
    assert np.all(np.diff(precision) > 0), precision.round(3)


def test_low_confidence_labels_hold_false_positives_and_high_confidence_nearly_none(data):
    precision = _precision_by_level(data)
    assert precision[:3].max() < 0.5  # levels 10-30%: mostly boundary spill-over and mimics
    assert precision[-1] > 0.97  # level 100%
    for k in range(data.n_classes):
        top = data.confidence[:, k] == data.confidence_scale
        assert data.true_masks[:, k][top].mean() > 0.95, DEFAULT_CLASSES[k]


def test_experts_label_mimics_and_miss_faint_findings(data):
    levels, truth = data.confidence, data.true_masks
    for name in ("b_lines", "consolidation"):
        k = CLASS[name]
        no_finding = ~truth[:, k].any(axis=(1, 2))
        labelled_anyway = levels[:, k].any(axis=(1, 2)) & no_finding
        assert labelled_anyway.sum() >= 5, name  # streaks taken for B-lines, speckle clusters for consolidation
        assert levels[:, k][labelled_anyway].max() <= 6, name  # ...and never with high confidence
    missed = (levels[:, CLASS["b_lines"]] == 0) & truth[:, CLASS["b_lines"]]
    assert 0 < missed.sum() < 0.2 * truth[:, CLASS["b_lines"]].sum()


def test_confidence_tapers_at_boundaries(data):
    k = CLASS["effusion"]
    truth, levels = data.true_masks[:, k], data.confidence[:, k]
    depth = np.diff(truth.astype(np.int8), axis=1)  # +1 where the effusion starts going down a column
    frame, row, col = np.nonzero(depth == 1)
    inside = levels[frame, np.minimum(row + 6, truth.shape[1] - 1), col]
    at_edge = levels[frame, row + 1, col]
    outside = levels[frame, np.maximum(row - 2, 0), col]
    assert outside.mean() < at_edge.mean() < inside.mean()


def test_expert_styles_differ(data):
    expert = data.frame_info["rater1_expert"]
    truth = data.true_masks
    mean_level = [data.confidence[expert == e][truth[expert == e]].mean() for e in range(3)]
    assert mean_level[0] > mean_level[1] > mean_level[2]  # over-confident, neutral, under-confident


def test_images_show_the_findings(data):
    img = data.images.astype(np.float32)
    truth = data.true_masks
    any_finding = truth.any(axis=1)
    below_pleura = np.cumsum(truth[:, CLASS["pleural_line"]], axis=1) > 0
    plain_lung = below_pleura & ~any_finding
    lung = img[plain_lung].mean()
    assert img[truth[:, CLASS["pleural_line"]]].mean() > lung + 40  # bright pleural line
    assert img[truth[:, CLASS["a_lines"]]].mean() > lung + 20  # A-line reverberations
    assert img[truth[:, CLASS["b_lines"]]].mean() > lung + 40  # bright B-lines
    assert img[truth[:, CLASS["consolidation"]]].mean() < lung  # hypoechoic consolidation
    fluid = truth[:, CLASS["effusion"]]
    interior = fluid[:, 2:-2] & fluid[:, :-4] & fluid[:, 4:]  # 2 px from its upper and lower boundary lines
    assert img[:, 2:-2][interior].mean() < lung - 40  # anechoic effusion


@pytest.mark.parametrize(("size", "patients"), [(32, 6), (256, 1)])
def test_small_and_large_images(size, patients):
    ds = make_synthetic_dataset(patients=str(patients), size=str(size), zones="2")
    assert ds.image_shape == (size, size) and ds.n_frames == patients * 2 * 2
    assert ds.true_masks[:, CLASS["pleural_line"]].any(axis=(1, 2)).all()
    assert ds.confidence[:, CLASS["pleural_line"]].max() == 10


def test_several_raters_keep_their_masks_and_agreement_is_their_vote():
    ds = make_synthetic_dataset(patients="4", size="32", raters="3", confidence_source="agreement")
    n = ds.n_frames
    assert ds.rater_masks.shape == (n, 3, 5, 32, 32) and ds.rater_masks.dtype == bool
    experts = np.stack([ds.frame_info[f"rater{r}_expert"] for r in (1, 2, 3)], axis=1)
    assert all(len(set(row)) == 3 for row in experts.tolist())
    assert np.array_equal(ds.confidence, np.rint(ds.rater_masks.mean(axis=1) * 10).astype(np.uint8))
    assert set(np.unique(ds.confidence)) <= {0, 3, 7, 10}
    assert not np.array_equal(ds.rater_masks[:, 0], ds.rater_masks[:, 1])  # raters disagree somewhere


def test_mean_of_several_raters_agrees_with_their_masks():
    ds = make_synthetic_dataset(patients="4", size="32", raters="2", experts="2")
    votes = ds.rater_masks.sum(axis=1)
    assert ds.confidence[votes == 2].min() >= 5
    assert ds.confidence[votes == 0].max() <= 5


def test_confidence_scale_and_visits_are_configurable():
    ds = make_synthetic_dataset(patients="3", size="32", confidence_scale="4", visits="3")
    assert ds.confidence_scale == 4 and ds.confidence.max() == 4
    assert set(np.unique(ds.visit)) == {1, 2, 3} and len(ds.visits["patient"]) == 9
    single = make_synthetic_dataset(patients="3", size="32", visits="1")
    assert "sf_change" not in single.patients and "readmission_30d" in single.patients


def test_convex_probe_draws_a_sector():
    ds = make_synthetic_dataset(patients="2", size="64", probe="convex")
    corner = ds.images[:, -8:, :8]
    centre = ds.images[:, 20:40, 24:40]
    assert corner.max() == 0 and centre.mean() > 20  # nothing is imaged outside the sector
    assert not ds.true_masks[:, :, -8:, :8].any() and not ds.confidence[:, :, -8:, :8].any()
    assert ds.true_masks[:, CLASS["pleural_line"]].any(axis=(1, 2)).all()


def test_registered_through_the_plugin_manager():
    dataset = load_plugins().datasets.create("synthetic-lus:patients=2,size=32,seed=5")
    assert isinstance(dataset, LUSDataset) and dataset.name == "synthetic-lus:patients=2,seed=5,size=32"
    entry = next(e for e in load_plugins().datasets.entries() if e.name == "synthetic-lus")
    assert entry.plugin == "synthetic-lus" and entry.summary.startswith("Synthetic lung ultrasound")


def test_plugin_import_stays_light():
    heavy = "{'torch', 'sklearn', 'scipy', 'matplotlib'}"
    code = f"import sys, lusbench_builtins.synthetic; print(sorted({heavy} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
