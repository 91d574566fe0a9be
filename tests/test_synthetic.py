"""The synthetic lung-ultrasound dataset, judged by statistics of the data it generates (no snapshots)."""

import hashlib
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
from lusbench_builtins.synthetic.rendering import EXTENTS

CLASS = {name: k for k, name in enumerate(DEFAULT_CLASSES)}


#: Each annotation protocol, with the arguments it is tested with (protocol raters needs several raters).
PROTOCOLS = {"region": {}, "pixel": {"protocol": "pixel"}, "raters": {"protocol": "raters", "raters": "3"}}

#: Cases of make_synthetic_dataset, with the SHA-256 (16 hex digits) of images, confidence, true masks and rater masks
#: made by the committed simulator at b3c8536, before the protocol argument existed (its only model is today's
#: protocol=pixel), by ``_array_hash(make_synthetic_dataset(**case))``: protocol=pixel must keep giving those
#: arrays. The arrays differ in their last bits between CPUs with AVX-512 and without (numpy and OpenBLAS choose
#: their kernels by CPU), so the hashes are per vector unit, each made with b3c8536's simulator (a ``git worktree``
#: of it on the import path) on such a machine: an Intel Xeon with AVX-512 and an AMD EPYC with AVX2 only.
PIXEL_CASES = [
    {"patients": "25", "size": "32", "seed": "2"},  # two chunks of frames
    {"patients": "4", "size": "48", "seed": "3"},
    {"patients": "3", "size": "32", "seed": "5", "raters": "3", "confidence_source": "agreement", "probe": "convex",
     "frames": "2"},
    {"patients": "3", "size": "64", "seed": "1", "raters": "2", "experts": "2", "confidence_scale": "4", "visits": "3"},
]
PIXEL_GOLDEN = {
    "AVX512F": ["7dc991fe6bbc613e", "241192dc71cc9df7", "27c4e542db2c2f74", "94be274b0036ec85"],
    "AVX2": ["e429b9793110e39f", "241192dc71cc9df7", "27c4e542db2c2f74", "755bd49d0ffcc5e8"],
}


def _vector_unit() -> str | None:
    """The widest of PIXEL_GOLDEN's vector units numpy dispatches to on this CPU, or None if it has neither."""
    from numpy._core._multiarray_umath import __cpu_features__ as features

    return next((unit for unit in PIXEL_GOLDEN if features.get(unit)), None)


@pytest.fixture(scope="module", params=list(PROTOCOLS))
def labelled(request) -> LUSDataset:
    """960 frames at 64x64 under each protocol: enough frames for stable statistics, fast enough for the suite."""
    return make_synthetic_dataset(patients="80", size="64", **PROTOCOLS[request.param])


@pytest.fixture(scope="module")
def data() -> LUSDataset:
    """The default protocol (region) at 960 frames of 64x64."""
    return make_synthetic_dataset(patients="80", size="64")


@pytest.fixture(scope="module")
def pixel() -> LUSDataset:
    """Protocol pixel at 960 frames of 64x64: the tapering confidence."""
    return make_synthetic_dataset(patients="80", size="64", protocol="pixel")


def _array_hash(ds: LUSDataset) -> str:
    digest = hashlib.sha256()
    for name in ("images", "confidence", "true_masks", "rater_masks"):
        array = getattr(ds, name)
        if array is not None:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("index", range(len(PIXEL_CASES)))
def test_protocol_pixel_gives_the_arrays_it_gave_before_protocols_existed(index):
    unit = _vector_unit()
    if unit is None:
        pytest.skip("no pre-protocol hashes for this CPU's vector unit (neither AVX-512 nor AVX2)")
    assert _array_hash(make_synthetic_dataset(protocol="pixel", **PIXEL_CASES[index])) == PIXEL_GOLDEN[unit][index]


def test_protocols_region_and_raters_label_the_same_images():
    region = make_synthetic_dataset(patients="25", size="32", seed="4", raters="3")
    raters = make_synthetic_dataset(patients="25", size="32", seed="4", raters="3", protocol="raters")
    assert np.array_equal(region.images, raters.images) and np.array_equal(region.true_masks, raters.true_masks)
    assert all(np.array_equal(region.visits[k], raters.visits[k]) for k in region.visits)
    assert not np.array_equal(region.confidence, raters.confidence)


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
    assert all(data.frame_info[name].shape == (n,) for name in EXTENTS)


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


def _visit_means(ds: LUSDataset, per_frame: np.ndarray) -> np.ndarray:
    return np.array([per_frame[(ds.patient == p) & (ds.visit == v)].mean()
                     for p, v in zip(ds.visits["patient"], ds.visits["visit"], strict=True)])


def test_sf_ratio_falls_with_the_findings_and_stays_physiologic(data):
    sf = data.visits["sf_ratio"]
    assert sf.min() >= 75 and sf.max() <= 476
    for name in ("b_line_coverage", "consolidation_area", "effusion_depth"):
        assert spearmanr(_visit_means(data, data.frame_info[name]), sf)[0] < -0.3, name
    b_line_area = data.true_masks[:, CLASS["b_lines"]].mean(axis=(1, 2))
    assert spearmanr(_visit_means(data, b_line_area), sf)[0] < -0.5


def test_sf_ratio_is_the_documented_function_of_the_measured_extents():
    config = SyntheticConfig()
    ds = make_synthetic_dataset(patients="10", size="32", sf_noise="0")
    info = ds.frame_info
    weights = (config.sf_per_b_lines, config.sf_per_consolidation_area, config.sf_per_consolidation_depth,
               config.sf_per_effusion, config.sf_per_irregularity)
    loss = sum(w * info[name].astype(np.float64) for w, name in zip(weights, EXTENTS, strict=True))
    expected = np.clip(config.sf_healthy - _visit_means(ds, loss), 75, 476)
    np.testing.assert_allclose(ds.visits["sf_ratio"], expected, rtol=1e-5)
    np.testing.assert_allclose(_visit_means(ds, info["visit_sf_loss"]), _visit_means(ds, loss), rtol=1e-5)
    # With noise, the residual around the rule has the documented SD.
    noisy = make_synthetic_dataset(patients="300", size="32", zones="2")
    residual = noisy.visits["sf_ratio"] - (config.sf_healthy - _visit_means(noisy, noisy.frame_info["visit_sf_loss"]))
    inside = (noisy.visits["sf_ratio"] > 75) & (noisy.visits["sf_ratio"] < 476)
    assert 0.85 * config.sf_noise < residual[inside].std() < 1.15 * config.sf_noise


def test_extents_are_what_the_true_masks_show(data):
    truth = data.true_masks
    depth = truth[:, CLASS["consolidation"]].sum(axis=1).max(axis=1) / 64
    assert np.abs(depth - data.frame_info["consolidation_depth"]).max() <= 2 / 64
    area = truth[:, CLASS["consolidation"]].mean(axis=(1, 2))
    assert np.abs(area - data.frame_info["consolidation_area"]).max() <= 0.01
    fluid = truth[:, CLASS["effusion"]].sum(axis=1).max(axis=1) / 64
    assert np.abs(fluid - data.frame_info["effusion_depth"]).max() <= 2 / 64
    columns = truth[:, CLASS["b_lines"]].any(axis=1).mean(axis=1)  # B-line columns over the whole width
    coverage = data.frame_info["b_line_coverage"]
    assert np.all(columns <= coverage + 1e-6) and spearmanr(columns, coverage)[0] > 0.95


def test_outcomes_follow_the_findings_not_the_latent_severity(data):
    # Among visits of similar latent severity, more measured lung injury still means a lower S/F.
    severity = _visit_means(data, data.frame_info["visit_severity"])
    loss = _visit_means(data, data.frame_info["visit_sf_loss"])
    sf = data.visits["sf_ratio"]
    middle = (severity > np.quantile(severity, 0.35)) & (severity < np.quantile(severity, 0.65))
    assert spearmanr(loss[middle], sf[middle])[0] < -0.5


def test_sf_change_class_follows_the_documented_rule(data):
    sf = data.visits["sf_ratio"].reshape(-1, 2)
    rule = (sf[:, 1] - sf[:, 0] >= SyntheticConfig().sf_change_margin).astype(int)
    assert np.array_equal(data.patients["sf_change"], rule)
    assert 0.2 < rule.mean() < 0.8


def test_readmission_base_rate_is_realistic_and_driven_by_the_lungs_and_risk():
    ds = make_synthetic_dataset(patients="3000", size="32", zones="2")
    readmitted = ds.patients["readmission_30d"]
    assert 0.10 <= readmitted.mean() <= 0.30
    last = ds.visit == 2
    loss = np.zeros(len(readmitted))
    loss[ds.patient[last]] = ds.frame_info["visit_sf_loss"][last]
    risk = np.zeros(len(readmitted))
    risk[ds.patient] = ds.frame_info["risk"]
    high = loss > np.median(loss)
    assert readmitted[high].mean() > 1.5 * readmitted[~high].mean()
    risky = risk > np.median(risk)
    assert readmitted[risky].mean() > 1.5 * readmitted[~risky].mean()


#: Levels holding fewer labelled pixels than this give no stable fraction and are left out.
MIN_LEVEL_PIXELS = 1000


def _precision_by_level(ds: LUSDataset) -> np.ndarray:
    """Fraction of the pixels at each confidence level (that holds enough of them) that are truly the finding."""
    levels = [level for level in range(1, ds.confidence_scale + 1) if (ds.confidence == level).sum() >= MIN_LEVEL_PIXELS]
    return np.array([ds.true_masks[ds.confidence == level].mean() for level in levels])


def test_fraction_truly_the_finding_rises_with_confidence(labelled):
    precision = _precision_by_level(labelled)
    assert len(precision) >= 3 and np.all(np.diff(precision) > 0), precision.round(3)


def test_low_confidence_labels_hold_false_positives_and_high_confidence_nearly_none(labelled):
    precision = _precision_by_level(labelled)
    assert precision[:3].min() < 0.5 and precision[0] < 0.2  # the lowest levels: mostly spill-over and mimics
    assert precision[-1] > 0.97  # level 100%
    for k in range(labelled.n_classes):
        top = labelled.confidence[:, k] == labelled.confidence_scale
        assert labelled.true_masks[:, k][top].mean() > 0.95, DEFAULT_CLASSES[k]


def test_experts_label_mimics_and_miss_faint_findings(labelled):
    levels, truth = labelled.confidence, labelled.true_masks
    for name in ("b_lines", "consolidation"):
        k = CLASS[name]
        no_finding = ~truth[:, k].any(axis=(1, 2))
        labelled_anyway = levels[:, k].any(axis=(1, 2)) & no_finding
        assert labelled_anyway.sum() >= 5, name  # streaks taken for B-lines, speckle clusters for consolidation
        mimic = levels[:, k][labelled_anyway]
        if labelled.rater_masks is None:
            assert mimic.max() <= 7, name  # ...and never with (near) full confidence
        else:  # binary raters may all fall for the same mimic, but agree on it less often than on real findings
            full = levels[:, k][truth[:, k] & (levels[:, k] > 0)] == labelled.confidence_scale
            assert (mimic[mimic > 0] == labelled.confidence_scale).mean() < 0.5 * full.mean(), name
    missed = (levels[:, CLASS["b_lines"]] == 0) & truth[:, CLASS["b_lines"]]
    assert 0 < missed.sum() < 0.2 * truth[:, CLASS["b_lines"]].sum()


def test_region_protocol_gives_each_outlined_finding_one_level(data):
    # A consolidation (one region per frame) carries a single level over its whole outline.
    levels = data.confidence[:, CLASS["consolidation"]]
    truth = data.true_masks[:, CLASS["consolidation"]]
    single = [len(np.unique(levels[i][truth[i] & (levels[i] > 5)])) for i in np.flatnonzero(truth.any(axis=(1, 2)))]
    assert np.mean(np.array(single) <= 1) > 0.9


def test_threshold_1_has_a_target_in_every_class_with_findings_under_protocol_region(data):
    import torch

    strategy = load_plugins().strategies.create("threshold:1")
    target, _ = strategy.targets(torch.from_numpy(data.confidence_float()))
    for k, name in enumerate(data.classes):
        assert data.true_masks[:, k].any(), name
        truly = data.true_masks[:, k].sum()
        assert target[:, k].sum() > 0.2 * truly, name  # most of every class reaches full confidence


def test_protocol_pixel_confidence_tapers_at_boundaries(pixel):
    k = CLASS["effusion"]
    truth, levels = pixel.true_masks[:, k], pixel.confidence[:, k]
    depth = np.diff(truth.astype(np.int8), axis=1)  # +1 where the effusion starts going down a column
    frame, row, col = np.nonzero(depth == 1)
    inside = levels[frame, np.minimum(row + 6, truth.shape[1] - 1), col]
    at_edge = levels[frame, row + 1, col]
    outside = levels[frame, np.maximum(row - 2, 0), col]
    assert outside.mean() < at_edge.mean() < inside.mean()


@pytest.mark.parametrize("protocol", ["region", "pixel"])
def test_expert_styles_differ(data, pixel, protocol):
    ds = data if protocol == "region" else pixel
    expert = ds.frame_info["rater1_expert"]
    truth = ds.true_masks
    mean_level = [ds.confidence[expert == e][truth[expert == e]].mean() for e in range(3)]
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


def test_protocol_raters_confidence_is_the_vote_of_binary_masks():
    ds = make_synthetic_dataset(patients="4", size="32", protocol="raters", raters="3")
    assert np.array_equal(ds.confidence, np.rint(ds.rater_masks.mean(axis=1) * 10).astype(np.uint8))
    assert set(np.unique(ds.confidence)) == {0, 3, 7, 10}
