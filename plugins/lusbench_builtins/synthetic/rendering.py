"""From a scene to a B-mode image and the true masks of the five classes.

The echo map (linear power, see ``echo.py``) is painted column-wise: soft tissue above the pleura; below
it aerated-lung haze, A-lines, consolidation (hypoechoic, shred border, air-bronchogram dots), speckle
clusters, effusion (anechoic) and the lung surface under it; the pleural line and the rib cortex; depth
attenuation and the ribs' acoustic shadow; B-lines and Z-line streaks, which do not fade with depth; and
the noise floor. Structures are drawn with smooth (Gaussian) profiles. The image is ``10 log10(echo) +
speckle`` log-compressed over ``dynamic_range`` dB; the speckle is multiplicative, fully developed
(Rayleigh amplitude) and blurred by an anisotropic point-spread function (wider laterally than axially).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

from lusbench_builtins.synthetic import echo as E
from lusbench_builtins.synthetic.config import SyntheticConfig
from lusbench_builtins.synthetic.raster import Band, Grid, band
from lusbench_builtins.synthetic.scene import A_LINE_ORDERS, Scene

CLASSES = ("pleural_line", "a_lines", "b_lines", "consolidation", "effusion")


def _rows(profile: np.ndarray) -> np.ndarray:
    """(n, W) lateral profile -> (n, 1, W), to broadcast against depth."""
    return profile[:, None, :]


def half_width(scene: Scene, grid: Grid) -> np.ndarray:
    """(n,) half width at half maximum of the pleural line and its A-line echoes (at least half a pixel)."""
    return np.maximum(E.HWHM * scene.pleura_sd, np.float32(0.5 / grid.height))


@dataclass
class Lines:
    """Pixels near the pleural line and near each A-line order, shared by rendering, truth and annotation."""

    pleura: Band
    a_lines: list[Band]
    half_width: np.ndarray  # (n,)


def line_bands(scene: Scene, grid: Grid, taper: float) -> Lines:
    """Bands around the pleural line and each A-line, wide enough for their echo and their tapered labels."""
    hw = half_width(scene, grid)
    reach = max(3.0 * float(scene.pleura_sd.max()), float(hw.max()) + taper / 2)
    bands = [band(grid, scene.a_line_depth(order), reach, reach) for order in A_LINE_ORDERS]
    return Lines(band(grid, scene.pleura_depth, reach, reach), bands, hw)


def _add(echo: np.ndarray, where: Band, values: np.ndarray) -> None:
    echo[where.frame, where.row, where.col] += values


def _line(where: Band, sd: np.ndarray) -> np.ndarray:
    """Gaussian profile across a line of standard deviation ``sd`` (n,) at the band's pixels."""
    return np.exp(-0.5 * (where.offset / where.pick_frame(sd)) ** 2)


def render(scene: Scene, lines: Lines, grid: Grid, config: SyntheticConfig, speckle_db: np.ndarray) -> np.ndarray:
    """(n, H, W) uint8 B-mode image."""
    y = grid.y
    d, top = scene.pleura_depth, scene.lung_top
    sd = scene.pleura_sd
    reach = 3.0 * float(sd.max())
    # Fluid barely attenuates: whatever lies below an effusion is brighter by the attenuation it skipped.
    lift = np.exp(scene.attenuation[:, None] * scene.effusion)

    echo = np.zeros((len(sd), grid.height, grid.width), dtype=np.float32)
    rows = grid.span(0.0, d)
    echo[:, rows] = scene.tissue[:, rows, None] * _rows(scene.lateral_gain) * (y[:, rows] < _rows(d))
    # Aerated-lung haze, brighter just below the surface: base * (1 + extra * exp(-(y - top) / depth)), factored.
    rows = grid.span(top, 1.0)
    haze = np.exp(-y[:, rows] / np.float32(E.HAZE_DEPTH)) * _rows(E.LUNG_ECHO * E.HAZE_EXTRA * lift * np.exp(top / E.HAZE_DEPTH))
    haze += _rows(E.LUNG_ECHO * lift)
    haze *= y[:, rows] > _rows(top)
    echo[:, rows] += haze
    a_echo = E.a_line_echo(scene) * lift[:, None, :]
    for i, where in enumerate(lines.a_lines):
        _add(echo, where, where.pick(a_echo[:, i]) * _line(where, sd))

    frames = np.flatnonzero(scene.consolidation.any(axis=1))
    if frames.size:
        bottom = top + scene.consolidation
        rows = grid.span(top[frames], bottom[frames])
        part = echo[frames, rows]
        inside = (y[:, rows] > _rows(top[frames])) & (y[:, rows] < _rows(bottom[frames]))
        np.copyto(part, _rows(E.CONSOLIDATION_ECHO * lift[frames]), where=inside)
        echo[frames, rows] = part
        border = band(grid, bottom, reach, reach, frames)
        _add(echo, border, border.pick(E.SHRED_ECHO * lift * np.clip(scene.consolidation / 0.05, 0.0, 1.0)) * _line(border, sd))
        _add_bronchograms(echo, scene, grid, lift)
    _darken_clusters(echo, scene, grid)
    frames = np.flatnonzero((scene.effusion > E.EFFUSION_MIN).any(axis=1))
    if frames.size:
        rows = grid.span(d[frames], top[frames])
        part = echo[frames, rows]
        np.copyto(part, np.float32(E.EFFUSION_ECHO), where=(y[:, rows] > _rows(d[frames])) & (y[:, rows] <= _rows(top[frames])))
        echo[frames, rows] = part
        surface = band(grid, top, reach, reach, frames)
        _add(echo, surface, surface.pick(E.VISCERAL_ECHO * lift * (scene.effusion > E.EFFUSION_MIN)) * _line(surface, sd))

    _add(echo, lines.pleura, lines.pleura.pick(scene.pleura_echo) * _line(lines.pleura, sd))
    frames = np.flatnonzero(scene.rib_cover.max(axis=1) > 0.01)
    if frames.size:
        rib = band(grid, scene.rib_top, 0.025, 0.025, frames)
        _add(echo, rib, rib.pick(E.RIB_ECHO * scene.rib_cover) * np.exp(-0.5 * (rib.offset / 0.008) ** 2))
    echo *= np.exp(-scene.attenuation[:, None, None] * y)
    if frames.size:
        start = scene.rib_top[frames] + E.SHADOW_START
        rows = grid.span(start, 1.0)
        part = echo[frames, rows]
        np.multiply(part, _rows(1.0 - (1.0 - E.RIB_SHADOW) * scene.rib_cover[frames]), out=part, where=y[:, rows] > _rows(start))
        echo[frames, rows] = part

    # B-lines and streaks keep the brightness they have at the lung surface all the way down.
    surface_gain = E.Beams.of(scene).gain(top) * (1.0 - scene.rib_cover)
    start = top + scene.consolidation
    rows = grid.span(start, 1.0)
    echo[:, rows] += (y[:, rows] > _rows(start)) * _rows(E.b_profile(scene) * surface_gain)
    _add_streaks(echo, scene, grid, surface_gain)
    echo += np.float32(config.noise_floor)
    return _b_mode(echo, speckle_db, config)


def _add_bronchograms(echo: np.ndarray, scene: Scene, grid: Grid, lift: np.ndarray) -> None:
    """Bright air-bronchogram dots inside the consolidation."""
    frame, slot = np.nonzero(scene.bronchogram_on)
    col = grid.columns(scene.bronchogram_x[frame, slot])
    thickness = scene.consolidation[frame, col]
    row = grid.rows(scene.lung_top[frame, col] + scene.bronchogram_depth[frame, slot] * thickness)
    inside = thickness > 1.5 / grid.height
    brightness = E.BRONCHOGRAM_ECHO * (1.0 + scene.bronchogram_depth[frame, slot]) * lift[frame, col]  # varied, not random again
    np.add.at(echo, (frame[inside], row[inside], col[inside]), brightness[inside])


def _patch(grid: Grid, top: np.ndarray, left: np.ndarray, rows: int, cols: int, active: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat (frame, object, row, col) of a rows x cols window per active object; ``top``/``left`` are (n, J) pixel indices."""
    frame, obj = np.nonzero(active)
    r = top[frame, obj][:, None, None] + np.arange(rows)[None, :, None]
    c = left[frame, obj][:, None, None] + np.arange(cols)[None, None, :]
    r, c = np.broadcast_arrays(r, c)
    keep = (r >= 0) & (r < grid.height) & (c >= 0) & (c < grid.width)
    index = np.broadcast_to(np.arange(len(frame))[:, None, None], r.shape)[keep]
    return frame[index], obj[index], r[keep], c[keep]


def cluster_patches(scene: Scene, grid: Grid, reach: float) -> tuple[np.ndarray, ...]:
    """Pixels within ``reach`` (fraction) of each speckle cluster's edge: frame, cluster, row, col, signed distance."""
    size = int(np.ceil((float(scene.cluster_r.max(initial=0.0)) + reach) * grid.height)) + 1
    top = grid.rows(scene.cluster_y) - size
    left = grid.columns(scene.cluster_x) - size
    frame, k, r, c = _patch(grid, top, left, 2 * size + 1, 2 * size + 1, scene.cluster_r > 0)
    dist = np.hypot((c + 0.5) / grid.width - scene.cluster_x[frame, k], (r + 0.5) / grid.height - scene.cluster_y[frame, k])
    inside = scene.cluster_r[frame, k] - dist
    keep = inside >= -reach
    return frame[keep], k[keep], r[keep], c[keep], inside[keep].astype(np.float32)


def _darken_clusters(echo: np.ndarray, scene: Scene, grid: Grid) -> None:
    frame, k, r, c, inside = cluster_patches(scene, grid, 0.0)
    factor = 1.0 - (1.0 - E.CLUSTER_ECHO) * np.clip(inside / (0.4 * scene.cluster_r[frame, k]), 0.0, 1.0)  # soft edge
    for slot in np.unique(k):  # the pixels of one slot are distinct; overlapping clusters darken twice
        mine = k == slot
        echo[frame[mine], r[mine], c[mine]] *= factor[mine]


def _streak_patches(scene: Scene, grid: Grid) -> tuple[np.ndarray, ...]:
    """Pixels of each Z-line streak's window: frame, streak, row, col."""
    cols = int(np.ceil(3.0 * float(scene.streak_width.max(initial=0.0)) * grid.width)) + 1
    rows = int(np.ceil(E.STREAK_REACH * float(scene.streak_length.max(initial=0.0)) * grid.height)) + 2
    left = grid.columns(scene.streak_center) - cols
    top = grid.rows(np.take_along_axis(scene.lung_top, grid.columns(scene.streak_center), axis=1))
    return _patch(grid, top, left, rows, 2 * cols + 1, scene.streak_amp > 0)


def _add_streaks(echo: np.ndarray, scene: Scene, grid: Grid, surface_gain: np.ndarray) -> None:
    frame, j, r, c = _streak_patches(scene, grid)
    across = ((c + 0.5) / grid.width - scene.streak_center[frame, j]) / scene.streak_width[frame, j]
    along = np.maximum((r + 0.5) / grid.height - scene.lung_top[frame, c], 0.0) / scene.streak_length[frame, j]
    value = (scene.streak_amp[frame, j] * surface_gain[frame, c] * np.exp(-0.5 * across**2 - along)).astype(np.float32)
    for slot in np.unique(j):  # the pixels of one slot are distinct; overlapping streaks add up
        mine = j == slot
        echo[frame[mine], r[mine], c[mine]] += value[mine]


def true_masks(scene: Scene, lines: Lines, seen: E.Visibility, grid: Grid) -> np.ndarray:
    """(n, K, H, W) bool ground truth of the five classes.

    The pleural line and A-lines are image features: they are where their echo stands out from the lung
    around them by a contrast of at least LINE_CONTRAST_MIN (so a gap, or the part under a rib, is not).
    B-lines span their full width at half maximum; consolidation and effusion are where the tissue is.
    """
    n = len(scene.severity)
    y = grid.y
    d, top = _rows(scene.pleura_depth), _rows(scene.lung_top)
    hw = lines.half_width
    out = np.zeros((n, len(CLASSES), grid.height, grid.width), dtype=bool)
    where = lines.pleura
    inside = (np.abs(where.offset) <= where.pick_frame(hw)) & (where.pick(seen.pleura_contrast) >= E.LINE_CONTRAST_MIN)
    out[where.frame[inside], 0, where.row[inside], where.col[inside]] = True
    for i, where in enumerate(lines.a_lines):
        inside = (np.abs(where.offset) <= where.pick_frame(hw)) & (where.pick(seen.a_line_contrast[:, i]) >= E.LINE_CONTRAST_MIN)
        out[where.frame[inside], 1, where.row[inside], where.col[inside]] = True
    columns = _b_line_columns(scene, grid)
    f = np.flatnonzero(columns.any(axis=1))
    out[f, 2] = (y >= top[f] + _rows(scene.consolidation[f])) & _rows(columns[f])
    f = np.flatnonzero(scene.consolidation.any(axis=1))
    out[f, 3] = (y >= top[f]) & (y < top[f] + _rows(scene.consolidation[f]))
    f = np.flatnonzero((scene.effusion > E.EFFUSION_MIN).any(axis=1))
    out[f, 4] = (y >= d[f] + hw[f, None, None]) & (y < top[f]) & _rows(scene.effusion[f] > E.EFFUSION_MIN)
    return out


#: The measured extent of the findings in each frame, which the clinical outcomes follow (population.py).
EXTENTS = ("b_line_coverage", "consolidation_area", "consolidation_depth", "effusion_depth", "pleural_irregularity")


def finding_extents(scene: Scene, grid: Grid) -> dict[str, np.ndarray]:
    """(n,) float32 per name of :data:`EXTENTS`: what a clinician measures on the true findings of each frame.

    - ``b_line_coverage``: fraction of the intercostal pleural line (columns not under a rib) under B-lines,
      the columns of their true masks;
    - ``consolidation_area``: consolidated area, a fraction of the image (the thickness averaged over columns);
    - ``consolidation_depth`` / ``effusion_depth``: largest thickness below the lung surface / the pleural line,
      a fraction of the image height;
    - ``pleural_irregularity``: RMS deviation of the pleural line's depth from its smooth course (fraction of
      the height).

    Measured in beam coordinates (before a convex probe's scan conversion), so they do not depend on the probe.
    """
    open_beam = scene.rib_cover < 0.5
    covered = _b_line_columns(scene, grid).sum(axis=1) / np.maximum(open_beam.sum(axis=1), 1)
    fluid = np.where(scene.effusion > E.EFFUSION_MIN, scene.effusion, 0.0)
    values = (covered, scene.consolidation.mean(axis=1), scene.consolidation.max(axis=1), fluid.max(axis=1),
              np.sqrt((scene.pleura_wobble**2).mean(axis=1)))
    return {name: v.astype(np.float32) for name, v in zip(EXTENTS, values, strict=True)}


def _b_line_columns(scene: Scene, grid: Grid) -> np.ndarray:
    """(n, W) bool: columns within the full width at half maximum of a B-line (not under a rib)."""
    z = (grid.x[:, 0, :][:, None, :] - scene.b_center[:, :, None]) / scene.b_width[:, :, None]
    inside = (np.abs(z) <= E.HWHM) & (scene.b_amp[:, :, None] > 0)
    return inside.any(axis=1) & (scene.rib_cover < 0.5)


def _kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(2.5 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t / max(sigma, 1e-3)) ** 2)
    return k / k.sum()


def _psf(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Axial and lateral point-spread kernels: the lateral one is three times wider."""
    return _kernel(0.004 * height), _kernel(0.012 * width)


class SpeckleBank:
    """Log-amplitude speckle fields shared by a dataset; each frame takes a random crop, maybe mirrored.

    The amplitude of fully developed speckle is Rayleigh-distributed: ``|PSF * complex Gaussian|``, with
    the PSF's anisotropic grain. Drawing a few large fields once and cropping them costs a fraction of
    drawing fresh noise for every frame.
    """

    FIELDS = 4

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.height, self.width = height, width
        axial, lateral = _psf(height, width)
        shape = (self.FIELDS, 2 * height, 2 * width)
        power = np.zeros(shape, dtype=np.float32)
        for _ in range(2):  # real and imaginary parts of the backscattered signal
            part = correlate1d(rng.standard_normal(shape, dtype=np.float32), axial, axis=1, mode="wrap")
            power += correlate1d(part, lateral, axis=2, mode="wrap") ** 2
        self.fields_db = (10.0 * np.log10(power / power.mean() + 1e-12)).astype(np.float32)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, H, W) dB speckle for ``n`` frames."""
        which = rng.integers(0, self.FIELDS, n)
        top = rng.integers(0, self.height + 1, n)
        left = rng.integers(0, self.width + 1, n)
        mirror = rng.random(n) < 0.5
        out = np.empty((n, self.height, self.width), dtype=np.float32)
        for i in range(n):
            crop = self.fields_db[which[i], top[i] : top[i] + self.height, left[i] : left[i] + self.width]
            out[i] = crop[:, ::-1] if mirror[i] else crop
        return out


def _b_mode(echo: np.ndarray, speckle_db: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Multiplicative speckle and log compression to uint8 grey levels: 0 dB (the pleural line) is 255, and
    ``-dynamic_range`` dB is 0."""
    grey = np.log10(echo, out=echo)
    grey *= np.float32(10.0 * 255.0 / config.dynamic_range)
    grey += speckle_db * np.float32(255.0 / config.dynamic_range)
    grey += np.float32(255.0)
    np.clip(grey, 0.0, 255.0, out=grey)
    return np.rint(grey, out=grey).astype(np.uint8)
