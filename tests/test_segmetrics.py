"""Segmentation metrics against hand-computed values and an independent brute-force HD95."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from lusbench.evaluate import segmetrics
from lusbench.evaluate.segmetrics import calibration_bins, frame_metrics, segmentation_metric_defs, truth_metrics

CLASSES = ("pleural_line", "b_lines")


def square(n: int, top: int, left: int, side: int, size: int = 16) -> torch.Tensor:
    m = torch.zeros(n, size, size, dtype=torch.bool)
    m[:, top:top + side, left:left + side] = True
    return m


def stack(*classes: torch.Tensor) -> torch.Tensor:
    return torch.stack(classes, dim=1)


def empty(n: int = 1, size: int = 16) -> torch.Tensor:
    return torch.zeros(n, size, size, dtype=torch.bool)


def test_defs_and_keys_agree_and_are_lowercase():
    probs = torch.rand(3, 2, 16, 16)
    for truth in (None, torch.rand(3, 2, 16, 16) > 0.5):
        defs = segmentation_metric_defs(("Pleural_Line", "b_lines"), truth is not None)
        metrics = frame_metrics(probs, torch.rand(3, 2, 16, 16), truth, 0.5, ("Pleural_Line", "b_lines"))
        assert [d.name for d in defs] == list(metrics)
        assert all(d.name == d.name.lower() for d in defs)
        assert all(v.shape == (3,) and v.dtype == np.float64 for v in metrics.values())
    names = [d.name for d in defs]
    assert names[:3] == ["dice", "dice.pleural_line", "dice.b_lines"]
    assert {"iou", "hd95.b_lines", "soft_dice", "mt_dice", "ece", "brier", "true.dice", "true.dice.b_lines", "true.iou",
            "true.hd95"} <= set(names)
    better = {d.name: d.higher_is_better for d in defs}
    assert better["dice"] and better["mt_dice"] and not better["hd95"] and not better["ece"] and not better["brier"]


def test_truth_metrics_are_frame_metrics_true_part(monkeypatch):
    # The expert labels' row is scored by truth_metrics alone; it must give what frame_metrics gives, chunked or not.
    import lusbench.evaluate.segmetrics as segmetrics

    gen = torch.Generator().manual_seed(5)
    probs = torch.rand(7, 2, 16, 16, generator=gen)
    truth = torch.rand(7, 2, 16, 16, generator=gen) > 0.6
    truth[2] = False  # a frame without any true pixel: NaN or the diagonal, as in frame_metrics
    whole = frame_metrics(probs, torch.rand(7, 2, 16, 16, generator=gen), truth, 0.5, CLASSES)
    expected = {name: values for name, values in whole.items() if name.startswith("true.")}
    for chunk in (segmetrics.CHUNK_ELEMENTS, 3 * 2 * 16 * 16):  # all frames at once, then 3 at a time
        monkeypatch.setattr(segmetrics, "CHUNK_ELEMENTS", chunk)
        got = truth_metrics(probs >= 0.5, truth, CLASSES)
        assert list(got) == list(expected)
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], values, err_msg=name)
    with pytest.raises(ValueError, match="do not match"):
        truth_metrics(probs[:, :1] >= 0.5, truth, CLASSES)


def test_perfect_prediction():
    labels = stack(square(2, 2, 2, 6), square(2, 8, 4, 5))
    m = frame_metrics(labels.float(), labels.float(), labels, 0.5, CLASSES)
    for name in ("dice", "iou", "soft_dice", "mt_dice", "true.dice", "true.iou"):
        assert m[name].tolist() == [1.0, 1.0], name
    for name in ("hd95", "true.hd95", "ece", "brier"):
        assert m[name].tolist() == [0.0, 0.0], name


def test_shifted_square_dice_iou_hd95():
    label = square(1, 4, 4, 4)
    pred = square(1, 4, 5, 4)  # one pixel to the right: overlap 12 of 16
    m = frame_metrics(stack(pred, pred).float(), stack(label, label).float(), None, 0.5, CLASSES)
    assert m["dice.b_lines"][0] == pytest.approx(0.75)
    assert m["iou.b_lines"][0] == pytest.approx(0.6)
    assert m["hd95.b_lines"][0] == pytest.approx(1.0)
    assert m["dice"][0] == pytest.approx(0.75)


def test_empty_classes_follow_the_nnunet_rules():
    size = 16
    label = stack(empty(), square(1, 2, 2, 4))
    pred = stack(empty(), square(1, 2, 2, 4))
    m = frame_metrics(pred.float(), label.float(), None, 0.5, CLASSES)
    assert math.isnan(m["dice.pleural_line"][0]) and math.isnan(m["hd95.pleural_line"][0])
    assert m["dice"][0] == 1.0 and m["hd95"][0] == 0.0  # the NaN class is left out of the mean
    missed = frame_metrics(stack(empty(), empty()).float(), label.float(), None, 0.5, CLASSES)
    assert missed["dice.b_lines"][0] == 0.0 and missed["iou.b_lines"][0] == 0.0
    assert missed["hd95.b_lines"][0] == pytest.approx(math.hypot(size, size))
    nothing = frame_metrics(torch.zeros(1, 2, size, size), torch.zeros(1, 2, size, size), None, 0.5, CLASSES)
    for name in ("dice", "iou", "hd95", "soft_dice", "mt_dice"):
        assert math.isnan(nothing[name][0]), name
    assert nothing["brier"][0] == 0.0 and nothing["ece"][0] == 0.0


def brute_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """HD95 by explicit pairwise distances between boundary pixels (scipy erosion, 3x3, outside = background)."""
    def edge(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3)), border_value=0)).astype(float)

    pa, pb = edge(a), edge(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_matches_brute_force_on_random_shapes():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((12, 2, 24, 24)), sigma=(0, 0, 2.5, 2.5))
    a = smooth > np.quantile(smooth, 0.7)
    b = np.roll(smooth, 3, axis=-1) > np.quantile(smooth, 0.75)
    got = segmetrics.hd95(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    for i in range(12):
        for k in range(2):
            if a[i, k].any() and b[i, k].any():
                assert got[i, k] == pytest.approx(brute_hd95(a[i, k], b[i, k])), (i, k)


def test_soft_mt_dice_ece_brier_by_hand():
    size = 4
    conf = torch.zeros(1, 2, size, size)
    conf[0, 1, :2] = 1.0
    conf[0, 1, 2:] = 0.5  # half the pixels certain, half split
    probs = torch.full((1, 2, size, size), 0.7)
    m = frame_metrics(probs, conf, None, 0.5, CLASSES)
    # class 1: sum|p - c| = 8 x 0.3 + 8 x 0.2 = 4.0; sum p = 11.2; sum c = 12 -> 1 - 4 / 23.2
    # class 0: confidence empty but every pixel predicted -> 0; mean over the two classes
    assert m["soft_dice"][0] == pytest.approx((0 + 1 - 4.0 / 23.2) / 2)
    # labels: class 1 all positive (c >= 0.5); class 0 none. Every p = 0.7 -> one bin, 32 pixels, 16 positive.
    assert m["ece"][0] == pytest.approx(abs(0.7 - 0.5))
    assert m["brier"][0] == pytest.approx((16 * 0.3**2 + 16 * 0.7**2) / 32)
    # mt_dice, class 1: p >= t everywhere for t <= 0.7, nowhere above. conf >= t: 16 px for t <= 0.5, 8 px above.
    per_level = [1.0] * 5 + [2 * 8 / (16 + 8)] * 2 + [0.0] * 2
    # class 0: for t <= 0.7 prediction full, labels empty -> 0; above 0.7 both empty -> skipped.
    assert m["mt_dice"][0] == pytest.approx((np.mean(per_level) + 0.0) / 2)


def test_mt_dice_is_one_when_probabilities_equal_the_confidence():
    levels = torch.randint(0, 11, (3, 2, 16, 16), dtype=torch.uint8).float() / 10
    m = frame_metrics(levels, levels, None, 0.5, CLASSES)
    assert m["mt_dice"].tolist() == [1.0, 1.0, 1.0]


def test_eval_threshold_counts_the_level_itself():
    conf = torch.full((1, 2, 8, 8), 6, dtype=torch.uint8).float() / 10  # exactly the level 0.6
    m = frame_metrics(torch.ones(1, 2, 8, 8), conf, None, 0.6, CLASSES)
    assert m["dice"][0] == 1.0


def test_chunking_gives_the_same_numbers(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(7, 2, 16, 16, generator=gen)
    conf = torch.rand(7, 2, 16, 16, generator=gen)
    truth = torch.rand(7, 2, 16, 16, generator=gen) > 0.6
    whole = frame_metrics(probs, conf, truth, 0.5, CLASSES)
    monkeypatch.setattr(segmetrics, "CHUNK_ELEMENTS", 2 * 2 * 16 * 16)
    chunked = frame_metrics(probs, conf, truth, 0.5, CLASSES)
    for name, values in whole.items():
        np.testing.assert_allclose(chunked[name], values, err_msg=name)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="share a shape"):
        frame_metrics(torch.rand(2, 2, 8, 8), torch.rand(2, 2, 8, 4), None, 0.5, CLASSES)
    with pytest.raises(ValueError, match="class names"):
        frame_metrics(torch.rand(2, 2, 8, 8), torch.rand(2, 2, 8, 8), None, 0.5, ("only",))


def test_calibration_bins():
    probs = torch.tensor([0.0, 0.05, 0.15, 0.95, 1.0, 1.0])
    labels = torch.tensor([False, True, False, True, True, False])
    bins = calibration_bins(probs, labels)
    assert bins["bin_edges"] == pytest.approx([i / 10 for i in range(11)])
    assert bins["count"] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert bins["mean_prob"][0] == pytest.approx(0.025) and bins["mean_prob"][9] == pytest.approx(2.95 / 3)
    assert bins["frac_positive"][0] == 0.5 and bins["frac_positive"][9] == pytest.approx(2 / 3)
    assert bins["mean_prob"][2] == 0.0 and bins["frac_positive"][2] == 0.0  # empty bin


def test_soft_dice_equals_the_classic_form_on_binary_labels():
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(4, 2, 16, 16, generator=gen)
    binary = (torch.rand(4, 2, 16, 16, generator=gen) > 0.6).float()
    classic = 2 * (probs * binary).sum((2, 3)) / (probs.sum((2, 3)) + binary.sum((2, 3)))
    m = frame_metrics(probs, binary, None, 0.5, CLASSES)
    assert m["soft_dice"] == pytest.approx(classic.double().mean(1).numpy())


def test_soft_dice_is_best_only_where_the_prediction_equals_the_soft_confidence():
    conf = torch.full((1, 2, 8, 8), 0.5)
    scores = {p: frame_metrics(torch.full((1, 2, 8, 8), p), conf, None, 0.5, CLASSES)["soft_dice"][0]
              for p in (0.3, 0.5, 0.7, 1.0)}
    assert scores[0.5] == pytest.approx(1.0)
    assert max(scores, key=scores.get) == 0.5
    # The classic form 2 sum(p c) / (sum p + sum c) would rate p = 1 (0.667) above p = 0.5 (0.5).
    assert scores[1.0] < scores[0.5]


def test_rater_dice_is_the_mean_over_raters_of_each_raters_dice():
    a, b = square(1, 0, 0, 4, size=8), square(1, 0, 0, 8, size=8)  # 16 and 64 pixels
    raters = torch.stack([stack(a, a), stack(b, b)], dim=1)  # (N, R=2, K, H, W)
    m = frame_metrics(stack(a, a).float(), stack(a, a).float(), None, 0.5, CLASSES, rater_masks=raters)
    # vs rater 0: Dice 1; vs rater 1: 2 x 16 / (16 + 64) = 0.4
    assert m["rater.dice"][0] == pytest.approx((1.0 + 0.4) / 2)
    assert m["rater.dice.b_lines"][0] == pytest.approx(0.7)
    names = [d.name for d in segmentation_metric_defs(CLASSES, has_true_masks=False, has_raters=True)]
    assert set(m) == set(names)


def test_the_primary_metric_is_one_no_strategy_trains_on():
    assert segmetrics.primary_metric(has_true_masks=True, has_raters=True) == "true.dice"
    assert segmetrics.primary_metric(has_true_masks=False, has_raters=True) == "rater.dice"
    assert segmetrics.primary_metric(has_true_masks=False, has_raters=False) == "soft_dice"
