"""Segmentation metrics of out-of-fold predictions, per frame, batched on the device (docs/segmentation-metrics.md).

The prediction is ``probs >= 0.5``. Overlap and distance metrics compare it with the labels
``confidence >= eval_threshold`` and, prefixed ``true.``, with the true masks when the dataset has
them, prefixed ``rater.``, with each rater's own mask when it has several raters; ``soft_dice``, ``mt_dice``,
``ece`` and ``brier`` also look at the probabilities.

The run's *primary metric* is one that no strategy trains on (:func:`primary_metric`): the labels at the eval
threshold are exactly what ``threshold:0.5`` trains on, so ``dice`` favours it by construction. Every metric is
computed per frame and class; a class that is empty in both the reference and the prediction has no
defined value for that frame (NaN) and is left out of the frame's mean over classes, as in nnU-Net.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lusbench.data.confidence import LEVEL_TOLERANCE, binarize
from lusbench.evaluate.metricdefs import MetricDef

PREDICTION_THRESHOLD = 0.5
MT_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))  # multi-threshold Dice levels 0.1..0.9
ECE_BINS = 10
# Frames are processed in chunks of about this many pixels (x classes) to bound device memory.
CHUNK_ELEMENTS = 1 << 23


def _family(name: str, higher_is_better: bool, what: str, classes: Sequence[str], *, tolerance: float | None = None,
            headline: bool = False) -> list[MetricDef]:
    """The macro metric ``name`` (mean over classes) followed by one ``name.<class>`` per class."""
    return [MetricDef(name, higher_is_better, f"{what}, mean over classes", tolerance, headline)] + [
        MetricDef(f"{name}.{c.lower()}", higher_is_better, f"{what}, class {c}", tolerance) for c in classes
    ]


# Gate tolerances (see MetricDef): Dice-like metrics use the fallback (0.05); distances are in pixels.
HD95_TOLERANCE = 5.0
CALIBRATION_TOLERANCE = 0.03


def segmentation_metric_defs(classes: Sequence[str], has_true_masks: bool, has_raters: bool = False) -> list[MetricDef]:
    """The metrics :func:`frame_metrics` returns, in display order."""
    defs = [
        *_family("dice", True, "Dice of the prediction vs the labels binarized at the eval threshold (favours strategies "
                 "that train on that binarization)", classes, headline=True),
        *_family("iou", True, "IoU (Jaccard) of the prediction vs the labels at the eval threshold", classes),
        *_family("hd95", False, "95th-percentile Hausdorff distance to the labels at the eval threshold, pixels", classes,
                 tolerance=HD95_TOLERANCE, headline=True),
        MetricDef("soft_dice", True, "soft-label Dice of the probabilities vs the confidence, 1 - sum|p-c| / (sum p + "
                  "sum c): 1 only at p = c, equal to Dice on binary labels; mean over classes"),
        MetricDef("mt_dice", True, "multi-threshold Dice: probabilities and confidence both binarized at 0.1..0.9"),
        MetricDef("ece", False, "expected calibration error of the probabilities vs the labels, 10 bins, per frame",
                  CALIBRATION_TOLERANCE, headline=True),
        MetricDef("brier", False, "Brier score of the probabilities vs the labels (mean squared error per pixel)",
                  CALIBRATION_TOLERANCE),
    ]
    if has_raters:
        defs += _family("rater.dice", True, "Dice of the prediction vs each rater's own mask, mean over raters", classes)
    if has_true_masks:
        defs += [
            *_family("true.dice", True, "Dice of the prediction vs the true masks", classes, headline=True),
            MetricDef("true.iou", True, "IoU of the prediction vs the true masks, mean over classes"),
            MetricDef("true.hd95", False, "95th-percentile Hausdorff distance to the true masks, pixels, mean over classes",
                      HD95_TOLERANCE),
        ]
    return defs


def primary_metric(has_true_masks: bool, has_raters: bool) -> str:
    """The metric a run is judged by: one no strategy trains on, from the best reference the dataset has.

    True masks (synthetic data) -> ``true.dice``; several raters -> ``rater.dice`` (agreement with each rater's
    own mask); confidence only -> ``soft_dice`` (scores the prediction against the whole confidence map, not
    against one binarization of it).
    """
    if has_true_masks:
        return "true.dice"
    if has_raters:
        return "rater.dice"
    return "soft_dice"


def frame_metrics(probs: torch.Tensor, confidence: torch.Tensor, true_masks: torch.Tensor | None, eval_threshold: float,
                  classes: Sequence[str], rater_masks: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per-frame metrics ``{name: (N,) float64}`` (NaN where undefined) for ``probs`` ``(N, K, H, W)``.

    ``confidence`` is ``(N, K, H, W)`` in [0, 1]; ``true_masks`` ``(N, K, H, W)`` bool or None; ``rater_masks``
    ``(N, R, K, H, W)`` bool or None. Keys and order are those of :func:`segmentation_metric_defs`.
    """
    k, h, w = probs.shape[1:]
    if confidence.shape != probs.shape or (true_masks is not None and true_masks.shape != probs.shape):
        raise ValueError(f"probs, confidence and true_masks must share a shape, got {tuple(probs.shape)}, "
                         f"{tuple(confidence.shape)}, {None if true_masks is None else tuple(true_masks.shape)}")
    if k != len(classes):
        raise ValueError(f"probs have {k} classes but {len(classes)} class names were given")
    return _in_chunks(lambda p, c, t, r: _chunk_metrics(p, c, t, eval_threshold, classes, r), k * h * w, probs,
                      confidence, true_masks, rater_masks)


def truth_metrics(masks: torch.Tensor, true_masks: torch.Tensor, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``true.*`` metrics of :func:`frame_metrics` alone, for binary ``masks`` ``(N, K, H, W)`` taken as the
    prediction: what the expert labels' own row needs, without the distance transforms of the metrics it drops."""
    k, h, w = masks.shape[1:]
    if true_masks.shape != masks.shape or k != len(classes):
        raise ValueError(f"masks {tuple(masks.shape)}, true_masks {tuple(true_masks.shape)} and {len(classes)} classes "
                         "do not match")
    return _in_chunks(lambda m, t: {name: v.numpy() for name, v in _truth_part(m.bool(), t, classes).items()},
                      k * h * w, masks, true_masks)


def _in_chunks(metrics: Callable[..., dict[str, np.ndarray]], frame_elements: int,
               *tensors: torch.Tensor | None) -> dict[str, np.ndarray]:
    """``metrics`` of the frames ``(N, ...)`` of ``tensors`` (None passed through), a chunk of frames at a time so
    that the intermediate tensors stay near ``CHUNK_ELEMENTS``; the per-frame results concatenated."""
    step = max(1, CHUNK_ELEMENTS // frame_elements)
    n = next(t for t in tensors if t is not None).shape[0]
    parts = [metrics(*(None if t is None else t[i:i + step] for t in tensors)) for i in range(0, n, step)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _chunk_metrics(probs: torch.Tensor, confidence: torch.Tensor, true_masks: torch.Tensor | None, eval_threshold: float,
                   classes: Sequence[str], rater_masks: torch.Tensor | None) -> dict[str, np.ndarray]:
    probs = probs.float()
    pred = probs >= PREDICTION_THRESHOLD
    labels = binarize(confidence, eval_threshold)
    out: dict[str, torch.Tensor] = {}
    dice, iou = _overlap(pred, labels)
    _put(out, "dice", dice, classes)
    _put(out, "iou", iou, classes)
    _put(out, "hd95", hd95(pred, labels), classes)
    out["soft_dice"] = _macro(_soft_dice(probs, confidence.float(), pred))
    out["mt_dice"] = _macro(_mt_dice(probs, confidence))
    out["ece"] = _ece(probs, labels)
    out["brier"] = (probs - labels.float()).square().flatten(1).mean(1).double().cpu()
    if rater_masks is not None:
        # Each rater's Dice per frame and class, averaged over the raters who have a defined value.
        per_rater = torch.stack([_overlap(pred, rater_masks[:, r].bool())[0] for r in range(rater_masks.shape[1])])
        _put(out, "rater.dice", per_rater.nanmean(0), classes)
    if true_masks is not None:
        out.update(_truth_part(pred, true_masks, classes))
    return {name: value.numpy() for name, value in out.items()}


def _truth_part(pred: torch.Tensor, true_masks: torch.Tensor, classes: Sequence[str]) -> dict[str, torch.Tensor]:
    truth = true_masks.bool()
    out: dict[str, torch.Tensor] = {}
    dice, iou = _overlap(pred, truth)
    _put(out, "true.dice", dice, classes)
    out["true.iou"] = _macro(iou)
    out["true.hd95"] = _macro(hd95(pred, truth))
    return out


def _put(out: dict[str, torch.Tensor], name: str, per_class: torch.Tensor, classes: Sequence[str]) -> None:
    out[name] = _macro(per_class)
    for j, c in enumerate(classes):
        out[f"{name}.{c.lower()}"] = per_class[:, j]


def _macro(per_class: torch.Tensor) -> torch.Tensor:
    """Mean over classes ignoring NaN; NaN for a frame where every class is NaN."""
    return per_class.nanmean(1)


def _histogram(codes: torch.Tensor, n_codes: int) -> torch.Tensor:
    """How often each code ``0..n_codes-1`` occurs per frame and class of an integer ``(N, K, H, W)`` tensor.

    One ``bincount`` pass, ``(N, K, n_codes)`` float64 on the CPU; much faster than a sum per quantity.
    """
    n, k = codes.shape[:2]
    offsets = torch.arange(n * k, device=codes.device).view(n, k, 1, 1) * n_codes
    counts = torch.bincount((codes + offsets).flatten(), minlength=n * k * n_codes)
    return counts.view(n, k, n_codes).double().cpu()


def _overlap(pred: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice and IoU per frame and class ``(N, K)`` float64 on the CPU; NaN where both sides are empty."""
    hist = _histogram(pred.long() * 2 + ref.long(), 4)
    tp, fp, fn = hist[..., 3], hist[..., 2], hist[..., 1]
    union = tp + fp + fn
    nan = torch.full_like(union, math.nan)
    dice = torch.where(union > 0, 2 * tp / (union + tp).clamp_min(1), nan)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    return dice, iou


def _boundary(masks: torch.Tensor) -> torch.Tensor:
    """Pixels of ``masks`` ``(M, H, W)`` with a background pixel among their 8 neighbours (outside counts as background)."""
    padded = F.pad(masks, (1, 1, 1, 1))
    rows = padded[:, :, :-2] & padded[:, :, 1:-1] & padded[:, :, 2:]  # 3x3 erosion, done separably
    interior = rows[:, :-2] & rows[:, 1:-1] & rows[:, 2:]
    return masks & ~interior


def hd95(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance in pixels per frame and class, ``(N, K)`` float64 on the CPU.

    ``max(P95 d(boundary pred -> boundary ref), P95 d(boundary ref -> boundary pred))``. Both empty:
    NaN. Exactly one empty: the image diagonal, the worst possible distance.
    """
    n, k, h, w = pred.shape
    has_pred = pred.flatten(2).any(-1)
    has_ref = ref.flatten(2).any(-1)
    out = torch.full((n, k), math.nan, dtype=torch.float64)
    out[(has_pred ^ has_ref).cpu()] = math.hypot(h, w)
    both = (has_pred & has_ref).flatten()
    if bool(both.any()):
        a = _boundary(pred.reshape(n * k, h, w)[both]).cpu().numpy()
        b = _boundary(ref.reshape(n * k, h, w)[both]).cpu().numpy()
        out.view(-1)[both.cpu()] = torch.from_numpy(_boundary_hd95(a, b))
    return out


def _boundary_hd95(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """HD95 of each pair of non-empty boundary images ``a[i]``, ``b[i]`` (``(M, H, W)`` bool), on the CPU.

    Each pair's distance transforms run on the bounding box of its two boundaries only: every boundary
    pixel lies inside it, so the distances there are exact, and most boxes are far smaller than the image.
    """
    union = a | b
    rows, cols = union.any(2), union.any(1)
    top, left = rows.argmax(1), cols.argmax(1)
    bottom = rows.shape[1] - rows[:, ::-1].argmax(1)
    right = cols.shape[1] - cols[:, ::-1].argmax(1)
    a_to_b, b_to_a = [], []
    for i in range(len(a)):
        ca, cb = a[i, top[i]:bottom[i], left[i]:right[i]], b[i, top[i]:bottom[i], left[i]:right[i]]
        a_to_b.append(ndimage.distance_transform_edt(~cb)[ca])
        b_to_a.append(ndimage.distance_transform_edt(~ca)[cb])
    return np.maximum(_quantiles(a_to_b, 0.95), _quantiles(b_to_a, 0.95))


def _quantiles(groups: list[np.ndarray], q: float) -> np.ndarray:
    """``np.quantile(g, q)`` (linear interpolation) of every non-empty group, in one sort instead of one call each."""
    sizes = np.array([len(g) for g in groups])
    values = np.concatenate(groups)
    order = np.lexsort((values, np.repeat(np.arange(len(groups)), sizes)))
    ordered = values[order]
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = q * (sizes - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, sizes - 1)
    return ordered[start + low] + (pos - low) * (ordered[start + high] - ordered[start + low])


def _soft_dice(probs: torch.Tensor, confidence: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Soft-label Dice per frame and class in the semimetric form of Wang & Blaschko (2023, "Dice semimetric
    losses"): intersection ``(|p| + |c| - |p - c|) / 2``, so ``1 - sum|p - c| / (sum p + sum c)``. It equals
    ``2 sum(p c) / (sum p + sum c)`` for binary confidence, and unlike that form it is 1 only at ``p = c`` when
    the confidence is soft. NaN where the confidence is all zero and no pixel is predicted (the soft
    counterpart of "empty in both")."""
    l1 = (probs - confidence).abs().sum((2, 3)).double()
    total = probs.sum((2, 3)).double() + confidence.sum((2, 3)).double()
    empty = (confidence.flatten(2).amax(-1) <= 0) & ~pred.flatten(2).any(-1)
    dice = 1 - l1 / total.clamp_min(1e-12)
    return torch.where(empty, torch.full_like(dice, math.nan), dice).cpu()


def _mt_dice(probs: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """Dice of ``probs >= t`` vs ``confidence >= t`` averaged over t in 0.1..0.9 (levels where both are
    empty are skipped), per frame and class.

    One histogram of (levels passed by p, levels passed by c) gives every level's counts: with ``S[i, j]``
    the pixels where p passes at least i levels and c at least j, level t_j has intersection ``S[j, j]``,
    prediction ``S[j, 0]`` and label ``S[0, j]`` pixels.
    """
    n_levels = len(MT_LEVELS) + 1
    edges = torch.tensor(MT_LEVELS, dtype=probs.dtype, device=probs.device)
    passed_p = torch.bucketize(probs, edges, right=True)
    passed_c = torch.bucketize(confidence.to(probs.dtype) + LEVEL_TOLERANCE, edges, right=True)
    hist = _histogram(passed_p * n_levels + passed_c, n_levels * n_levels).view(*probs.shape[:2], n_levels, n_levels)
    at_least = hist.flip(-1, -2).cumsum(-1).cumsum(-2).flip(-1, -2)
    j = torch.arange(1, n_levels)
    inter, pred, label = at_least[..., j, j], at_least[..., j, 0], at_least[..., 0, j]
    total = pred + label
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), math.nan)
    return dice.nanmean(-1)


def _ece(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-frame ECE over all its pixels and classes: ``sum over bins |sum (p - y)| / pixels``."""
    n = probs.shape[0]
    p = probs.reshape(n, -1)
    bins = (p * ECE_BINS).long().clamp_(0, ECE_BINS - 1) + ECE_BINS * torch.arange(n, device=p.device).view(n, 1)
    gap = torch.bincount(bins.flatten(), weights=(p.double() - labels.reshape(n, -1).double()).flatten(), minlength=n * ECE_BINS)
    return (gap.view(n, ECE_BINS).abs().sum(1) / p.shape[1]).cpu()


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Reliability-diagram bins pooled over every pixel of ``probs`` vs binary ``labels`` (same shape).

    Equal-width bins on [0, 1]; ``count`` pixels per bin; ``mean_prob`` and ``frac_positive`` are 0.0
    for an empty bin (its count, 0, says so), so bins of several folds pool by count-weighted sums.
    """
    p = probs.flatten().double()
    bins = (p * n_bins).long().clamp_(0, n_bins - 1)  # p = 1 falls in the last bin
    count = torch.bincount(bins, minlength=n_bins).double().cpu()
    sum_p = torch.bincount(bins, weights=p, minlength=n_bins).cpu()
    sum_y = torch.bincount(bins, weights=labels.flatten().double(), minlength=n_bins).cpu()
    safe = count.clamp_min(1)
    return {
        "bin_edges": [i / n_bins for i in range(n_bins + 1)],
        "count": [int(c) for c in count.tolist()],
        "mean_prob": (sum_p / safe).tolist(),
        "frac_positive": (sum_y / safe).tolist(),
    }
