"""The simulated experts: which findings they notice, and how confident they are, pixel by pixel.

For every frame, each of its raters (``raters`` distinct experts from a pool of ``experts``, drawn per
patient) does the following, per class:

1. Notices each real object (each B-line, each A-line order, the consolidation, the effusion) with
   probability ``sigmoid((v - detect_half) / DETECT_SLOPE)``, ``v`` being the object's visibility at its
   centre; the pleural line, the landmark of every scan, is always noticed. Faint findings are missed.
2. Takes a visible mimic (a Z-line streak for a B-line, a dark speckle cluster for a consolidation) for the
   finding with probability ``mimic_label_prob`` times the same detection curve; its evidence (below) is
   at most ``mimic_confidence``, since an expert who suspects a mimic is never sure of it.
3. Perceives each noticed object's visibility with a multiplicative error ``exp(N(0, perception_sd))``.
4. Misplaces each object's boundary: its width (B-lines, streaks, clusters) or thickness (consolidation,
   effusion) grows or shrinks by ``N(0, extent_sd)`` times the boundary's taper (below).
5. Evidence at a pixel = membership of the object (a ramp of width ``taper`` across its boundary, so
   pixels just outside a boundary get some evidence and pixels just inside get less than full) times the
   local visibility, clipped to [0, 1].
6. Confidence = evidence ** style; the expert's style exponent is below 1 for over-confident experts and
   above 1 for under-confident ones (the pool spans ``exp(-expert_style) .. exp(expert_style)``).

The dataset's confidence is the mean of its raters' confidences (``confidence_source=mean``) or the
fraction of raters whose mask (confidence >= 0.5) covers the pixel (``agreement``), quantized to levels
``0..confidence_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lusbench_builtins.synthetic import echo as E
from lusbench_builtins.synthetic.config import SyntheticConfig
from lusbench_builtins.synthetic.raster import Grid, membership
from lusbench_builtins.synthetic.rendering import CLASSES, Lines, cluster_patches
from lusbench_builtins.synthetic.scene import Scene

DETECT_SLOPE = 0.05  # how sharply the chance of noticing a finding rises around detect_half
MASK_LEVEL = 0.5  # a rater's mask: the pixels the rater labels with confidence >= 0.5


def expert_exponents(config: SyntheticConfig) -> np.ndarray:
    """(experts,) confidence exponents of the expert pool, from most over- to most under-confident."""
    if config.experts == 1:
        return np.ones(1)
    return np.exp(np.linspace(-config.expert_style, config.expert_style, config.experts))


def assign_raters(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """(patients, raters) distinct expert ids: the experts who read each patient's scans."""
    return np.argsort(rng.random((config.patients, config.experts)), axis=1)[:, : config.raters].astype(np.int32)


@dataclass
class Noticed:
    """One rater's weight per object: 0 if not noticed, else its perceived strength (mimics: mimic_confidence)."""

    pleura: np.ndarray  # (n,)
    a_lines: np.ndarray  # (n, orders)
    b_lines: np.ndarray  # (n, MAX_B_LINES)
    streaks: np.ndarray  # (n, MAX_STREAKS)
    consolidation: np.ndarray  # (n,)
    clusters: np.ndarray  # (n, MAX_CLUSTERS)
    effusion: np.ndarray  # (n,)


def annotate(scene: Scene, lines: Lines, seen: E.Visibility, grid: Grid, exponents: np.ndarray, config: SyntheticConfig,
             rng: np.random.Generator, confidence: np.ndarray, rater_masks: np.ndarray | None) -> None:
    """Label the frames of ``scene`` into ``confidence`` (n, K, H, W) uint8 and, with several raters, ``rater_masks``.

    ``exponents`` is (n, R): the style exponent of each frame's raters.
    """
    n_raters = exponents.shape[1]
    share = np.float32(config.confidence_scale / n_raters)  # each rater's part of the confidence scale
    total = None
    for r in range(n_raters):
        exponent = exponents[:, r].astype(np.float32)
        noticed = _notice(scene, seen, config, rng)
        if config.protocol == "pixel":
            perceived = _misjudge_extent(scene, rng, config.extent_sd, _pixel_units(scene, config.taper))
            rating = _rate(perceived, lines, seen, noticed, exponent, grid, config.taper)
        else:
            rating = _outline(scene, lines, seen, noticed, exponent, grid, config, rng)
        if config.protocol == "raters":
            rating = (rating > 0).astype(np.float32)  # the rater's binary mask: every finding they believe in
        if rater_masks is not None:
            np.greater_equal(rating, MASK_LEVEL, out=rater_masks[:, r])
        if config.confidence_source == "agreement":
            rating = (rating >= MASK_LEVEL).astype(np.float32)
        rating *= share
        if total is None:
            total = rating
        else:
            total += rating
    np.copyto(confidence, np.rint(total, out=total), casting="unsafe")


def _notice(scene: Scene, seen: E.Visibility, config: SyntheticConfig, rng: np.random.Generator) -> Noticed:
    """Decide which objects one rater notices, and how strong each noticed object looks to them."""
    consolidated = scene.consolidation > 0
    fluid = scene.effusion > E.EFFUSION_MIN

    def notice(visible: np.ndarray, exists: np.ndarray, chance: float) -> np.ndarray:
        p = chance / (1.0 + np.exp(-(visible - config.detect_half) / DETECT_SLOPE))
        return (rng.random(visible.shape) < p) & exists

    def perceive(shape: tuple[int, ...]) -> np.ndarray:
        return np.exp(rng.normal(0.0, config.perception_sd, shape)).astype(np.float32)

    n = len(scene.severity)
    a_lines = seen.a_lines.max(axis=2)
    b_lines = seen.b_lines
    consolidation = np.where(consolidated, seen.consolidation, 0.0).max(axis=1)
    effusion = np.where(fluid, seen.effusion, 0.0).max(axis=1)
    mimic = np.float32(config.mimic_confidence)
    return Noticed(
        pleura=perceive((n,)),
        a_lines=notice(a_lines, a_lines > 0, 1.0) * perceive(a_lines.shape),
        b_lines=notice(b_lines, scene.b_amp > 0, 1.0) * perceive(b_lines.shape),
        streaks=notice(seen.streaks, scene.streak_amp > 0, config.mimic_label_prob) * mimic,
        consolidation=notice(consolidation, consolidated.any(axis=1), 1.0) * perceive((n,)),
        clusters=notice(seen.clusters, scene.cluster_r > 0, config.mimic_label_prob) * mimic,
        effusion=notice(effusion, fluid.any(axis=1), 1.0) * perceive((n,)),
    )


@dataclass
class Units:
    """How far one rater may misplace each boundary: one SD of the shift per object (or per frame for layers)."""

    b_lines: np.ndarray | float  # (n, MAX_B_LINES) or a scalar
    streaks: np.ndarray | float  # (n, MAX_STREAKS) or a scalar
    clusters: np.ndarray | float  # (n, MAX_CLUSTERS) or a scalar
    layers: np.ndarray | float  # (n, 1) or a scalar: consolidation and effusion thickness


def _pixel_units(scene: Scene, taper: float) -> Units:
    """Protocol pixel: every boundary is misplaced in units of its taper."""
    return Units(taper, taper, taper, taper)


def _misjudge_extent(scene: Scene, rng: np.random.Generator, sd: float, units: Units) -> Scene:
    """The scene as one rater sees it: each finding's boundary moved out (or in) by ``N(0, sd)`` units.

    A unit is never wider than the object (its half width for a line or cluster, its thickness for a layer), so a
    rater misplaces a thin object's boundary by less than the object itself.
    """
    def shift(unit: np.ndarray) -> np.ndarray:
        return (rng.normal(0.0, sd, unit.shape) * unit).astype(np.float32)

    half = E.HWHM * scene.b_width
    b_width = np.maximum(half + shift(np.minimum(units.b_lines, 2.0 * half)), 0.0) / E.HWHM
    half = E.HWHM * scene.streak_width
    streak_width = np.maximum(half + shift(np.minimum(units.streaks, 2.0 * half)), 0.0) / E.HWHM

    def thicker(thickness: np.ndarray) -> np.ndarray:
        """A per-column thickness moved by one shift per frame, in units of min(unit, thickness)."""
        unit = units.layers
        moved = thickness + shift(np.broadcast_to(unit, (len(thickness), 1))) * np.minimum(1.0, thickness / unit)
        return np.where(thickness > 0, np.maximum(moved, 0.0), 0.0).astype(np.float32)

    cluster_r = np.maximum(scene.cluster_r + shift(np.minimum(units.clusters, 2.0 * scene.cluster_r)), 0.0)
    return replace(scene, b_width=b_width, streak_width=streak_width, consolidation=thicker(scene.consolidation),
                   effusion=thicker(scene.effusion), cluster_r=cluster_r)


def _outline(scene: Scene, lines: Lines, seen: E.Visibility, noticed: Noticed, exponent: np.ndarray, grid: Grid,
             config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """(n, K, H, W) one rater's labels under protocol region: each noticed finding outlined, one confidence each.

    A line (the pleural line, each A-line order) is outlined where its perceived visibility reaches
    ``outline_level``; each run of such columns is one segment, labelled with the segment's mean perceived
    visibility. A consolidation or effusion is one region with its mean visibility; B-lines, streaks and
    clusters are objects already. The region's certainty ``c`` (perceived visibility, clipped to 1) sets its
    confidence ``c ** style`` and how well its boundary is placed: shifted by ``N(0, outline_sd * (1 - c))``, so
    the boundary of a finding the expert is sure of is where they see it and a doubtful one's is not. Outlines
    are sharp (no taper): every pixel of a region has its region's confidence.
    """
    def certainty(visible: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return np.clip(visible * weight, 0.0, 1.0)

    def unit(c: np.ndarray) -> np.ndarray:
        return (config.outline_sd * (1.0 - c)).astype(np.float32)

    pleura = certainty(seen.pleura, noticed.pleura[:, None])
    pleura = _segment_means(pleura, pleura >= config.outline_level)
    a_lines = certainty(seen.a_lines, noticed.a_lines[:, :, None])
    a_lines = _segment_means(a_lines, (a_lines >= config.outline_level) & (noticed.a_lines[:, :, None] > 0))
    consolidation = _segment_means(seen.consolidation, scene.consolidation > 0)
    effusion = _segment_means(seen.effusion, scene.effusion > E.EFFUSION_MIN)
    layer = np.maximum(certainty(consolidation, noticed.consolidation[:, None]).max(axis=1),
                       certainty(effusion, noticed.effusion[:, None]).max(axis=1))
    units = Units(unit(certainty(seen.b_lines, noticed.b_lines)), unit(certainty(seen.streaks, noticed.streaks)),
                  unit(certainty(seen.clusters, noticed.clusters)), np.maximum(unit(layer)[:, None], 1e-6))
    perceived = _misjudge_extent(scene, rng, 1.0, units)
    # A line's outlined thickness: one shift per frame and line (the rater draws it thick or thin), scaled per
    # column by the certainty of the segment it belongs to.
    hw = lines.half_width[:, None]
    pleura_half = hw + rng.standard_normal((len(hw), 1)) * np.minimum(unit(pleura), 2.0 * hw)
    a_half = hw[:, None] + rng.standard_normal(a_lines.shape[:2] + (1,)) * np.minimum(unit(a_lines), 2.0 * hw[:, None])
    # The line weights are folded into the segment visibilities above: the lines' noticed weight becomes 1.
    regions = replace(seen, pleura=pleura, a_lines=a_lines, consolidation=consolidation, effusion=effusion)
    weights = replace(noticed, pleura=np.ones_like(noticed.pleura), a_lines=(noticed.a_lines > 0).astype(np.float32))
    return _rate(perceived, lines, regions, weights, exponent, grid, 0.0, sharp=True,
                 line_half=(np.maximum(pleura_half, 0.0), np.maximum(a_half, 0.0)))


def _segment_means(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``values`` (..., W) replaced by their mean over each run of ``inside`` columns; 0 outside the runs."""
    flat, keep = values.reshape(-1, values.shape[-1]), inside.reshape(-1, inside.shape[-1])
    starts = keep & ~np.pad(keep, ((0, 0), (1, 0)))[:, :-1]
    run = np.cumsum(starts.ravel()) - 1  # rows are raveled one after another, and every run starts in its row
    members = keep.ravel()
    total = np.bincount(run[members], weights=flat.ravel()[members])
    count = np.bincount(run[members])
    mean = np.zeros(members.shape, dtype=np.float32)
    mean[members] = (total / np.maximum(count, 1))[run[members]]
    return mean.reshape(values.shape)


def _rate(scene: Scene, lines: Lines, seen: E.Visibility, noticed: Noticed, exponent: np.ndarray, grid: Grid,
          taper: float, sharp: bool = False, line_half: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(n, K, H, W) one rater's confidence in [0, 1]: boundary membership x (visibility x weight) ** exponent.

    The taper is never wider than the object itself, so the middle of a thin line still gets full membership.
    ``sharp``: B-lines end at a rib's edge (rib cover 0.5) instead of fading with the rib's soft shadow.
    ``line_half``: the half widths the rater gives the pleural line (n, W) and each A-line order (n, orders, W),
    instead of their true half width.
    """
    n = len(scene.severity)
    x = grid.x[:, 0, :]
    gamma = exponent[:, None]

    def certainty(visible: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Per column or per object: how sure the rater is that the finding is there."""
        return np.clip(visible * weight, 0.0, 1.0) ** gamma

    out = np.zeros((n, len(CLASSES), grid.height, grid.width), dtype=np.float32)
    hw = lines.half_width
    line_taper = np.minimum(taper, 2.0 * hw)
    where = lines.pleura
    sure = certainty(seen.pleura, noticed.pleura[:, None])
    half = where.pick_frame(hw) if line_half is None else where.pick(line_half[0])
    across = membership(half - np.abs(where.offset), where.pick_frame(line_taper))
    out[where.frame, 0, where.row, where.col] = across * where.pick(sure)
    for i, where in enumerate(lines.a_lines):
        sure = certainty(seen.a_lines[:, i], noticed.a_lines[:, i, None])
        half = where.pick_frame(hw) if line_half is None else where.pick(line_half[1][:, i])
        across = membership(half - np.abs(where.offset), where.pick_frame(line_taper))
        out[where.frame, 1, where.row, where.col] = across * where.pick(sure)  # orders are a pleural depth apart

    # B-lines: the most certain line (or streak) of each column decides where its label starts and ends.
    top, consolidation = scene.lung_top, scene.consolidation
    open_beam = (scene.rib_cover < 0.5).astype(np.float32) if sharp else 1.0 - scene.rib_cover
    b_cols = _columns(x, scene.b_center, scene.b_width, taper) * certainty(seen.b_lines, noticed.b_lines)[:, :, None]
    b_cols = b_cols.max(axis=1) * open_beam
    s_all = _columns(x, scene.streak_center, scene.streak_width, taper) * certainty(seen.streaks, noticed.streaks)[:, :, None]
    s_cols = s_all.max(axis=1) * open_beam
    s_len = np.take_along_axis(scene.streak_length, s_all.argmax(axis=1), axis=1)
    streak_wins = s_cols > b_cols
    start = np.where(streak_wins, top, top + consolidation)
    end = np.where(streak_wins, top + E.STREAK_REACH * s_len, 2.0)
    _interval(out[:, 2], start, end, np.maximum(b_cols, s_cols), np.minimum(taper, end - start), grid)

    sure = certainty(seen.consolidation, noticed.consolidation[:, None]) * (consolidation > 0)
    _interval(out[:, 3], top, top + consolidation, sure, np.minimum(taper, consolidation), grid)
    frame, k, row, col, inside = cluster_patches(scene, grid, taper / 2)
    sure = certainty(seen.clusters, noticed.clusters)
    edge = np.minimum(taper, 2.0 * scene.cluster_r[frame, k])
    np.maximum.at(out[:, 3], (frame, row, col), membership(inside, edge) * sure[frame, k])

    sure = certainty(seen.effusion, noticed.effusion[:, None]) * (scene.effusion > E.EFFUSION_MIN)
    start = scene.pleura_depth + hw[:, None]
    _interval(out[:, 4], start, top, sure, np.minimum(taper, top - start), grid)
    return out


def _columns(x: np.ndarray, centre: np.ndarray, sd: np.ndarray, taper: float) -> np.ndarray:
    """(n, objects, W) membership of each column in each vertical object (its full width at half maximum)."""
    half = E.HWHM * sd[:, :, None]
    return membership(half - np.abs(x[:, None, :] - centre[:, :, None]), np.minimum(taper, 2.0 * half))


def _interval(out: np.ndarray, start: np.ndarray, end: np.ndarray, value: np.ndarray, taper: np.ndarray, grid: Grid) -> None:
    """Paint ``value`` (n, W) between depths ``start`` and ``end`` (n, W) of each column, tapered at both ends.

    Membership is ``min(ramp(y - start), ramp(end - y))`` with ramps of width ``taper`` (n, W); only the frames
    with a non-zero value, and the rows they can reach, are computed.
    """
    frames = np.flatnonzero(value.max(axis=1) > 0)
    if frames.size == 0:
        return
    start, end, taper = start[frames], end[frames], np.maximum(taper[frames], 1e-6)
    rows = grid.span(start - taper, end + taper)
    inverse = (1.0 / taper)[:, None, :]
    scaled = grid.y[:, rows] * inverse
    lo = scaled - (start[:, None, :] * inverse - 0.5)
    hi = (end[:, None, :] * inverse + 0.5) - scaled
    np.minimum(lo, hi, out=lo)
    np.clip(lo, 0.0, 1.0, out=lo)
    lo *= value[frames][:, None, :]
    out[frames, rows] = lo
