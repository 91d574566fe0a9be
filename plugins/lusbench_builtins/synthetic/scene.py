"""The layout of each frame: where the pleura, ribs and findings are, and how strong their echoes are.

A scene is a set of per-frame parameters and lateral profiles (one value per image column), drawn from
the frame's zone severity. Rendering (``rendering.py``) turns it into an echo map and true masks; the
annotation layer (``annotation.py``) uses its list of objects (each B-line, each A-line order, the
consolidation, the effusion, each mimic) to decide which ones an expert notices.

Coordinates: ``x`` (lateral) and ``y`` (depth) are fractions of the image width and height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lusbench_builtins.synthetic.config import SyntheticConfig

MAX_B_LINES = 12
MAX_STREAKS = 4  # Z-line streaks: short comet tails that are not B-lines
MAX_CLUSTERS = 3  # hypoechoic speckle clusters that resemble a small consolidation
MAX_BRONCHOGRAMS = 24
A_LINE_ORDERS = np.array([2.0, 3.0, 4.0], dtype=np.float32)  # reverberations of the pleura at 2x, 3x, 4x its depth
LUNG_BOTTOM = 0.96  # deepest extent of a consolidation or effusion


@dataclass
class Scene:
    """Per-frame layout of ``n`` frames of width ``W`` columns (shapes given as (n,), (n, W), (n, objects))."""

    severity: np.ndarray  # (n,)
    pleura_depth: np.ndarray  # (n, W) depth of the (parietal) pleural line
    pleura_wobble: np.ndarray  # (n, W) the line's irregularity (part of pleura_depth), not echoed by A-lines
    pleura_sd: np.ndarray  # (n,) half-thickness of the pleural line (Gaussian SD)
    pleura_echo: np.ndarray  # (n, W) brightness of the pleural line, 0 in gaps and under ribs
    rib_cover: np.ndarray  # (n, W) 1 where a rib shadows the column, soft edges
    rib_top: np.ndarray  # (n, W) depth of the rib surface where rib_cover > 0
    effusion: np.ndarray  # (n, W) thickness of the pleural effusion below the pleural line
    consolidation: np.ndarray  # (n, W) thickness of the consolidation below the lung surface
    a_amp: np.ndarray  # (n, orders) echo of each A-line order
    b_center: np.ndarray  # (n, MAX_B_LINES)
    b_width: np.ndarray  # (n, MAX_B_LINES) Gaussian SD of the B-line's lateral profile
    b_amp: np.ndarray  # (n, MAX_B_LINES) echo; 0: no B-line in this slot
    streak_center: np.ndarray  # (n, MAX_STREAKS)
    streak_width: np.ndarray  # (n, MAX_STREAKS)
    streak_amp: np.ndarray  # (n, MAX_STREAKS) echo; 0: no streak
    streak_length: np.ndarray  # (n, MAX_STREAKS) depth over which the streak fades (1/e)
    cluster_x: np.ndarray  # (n, MAX_CLUSTERS)
    cluster_y: np.ndarray  # (n, MAX_CLUSTERS)
    cluster_r: np.ndarray  # (n, MAX_CLUSTERS) radius; 0: no cluster
    bronchogram_x: np.ndarray  # (n, MAX_BRONCHOGRAMS) column of each air-bronchogram dot
    bronchogram_depth: np.ndarray  # (n, MAX_BRONCHOGRAMS) relative depth inside the consolidation (0..1)
    bronchogram_on: np.ndarray  # (n, MAX_BRONCHOGRAMS) bool
    tissue: np.ndarray  # (n, H) echo of the soft tissue above the pleura, by depth
    lateral_gain: np.ndarray  # (n, W) slow lateral variation of tissue echo
    attenuation: np.ndarray  # (n,) nepers over the image depth

    @property
    def lung_top(self) -> np.ndarray:
        """(n, W) depth of the lung surface: the pleural line, pushed down by an effusion."""
        return self.pleura_depth + self.effusion

    def a_line_depth(self, order: float) -> np.ndarray:
        """(n, W) depth of the A-line of ``order``: a multiple of the probe-to-pleura distance, without its irregularity."""
        return order * (self.pleura_depth - self.pleura_wobble) + self.pleura_wobble

    @property
    def b_line_count(self) -> np.ndarray:
        """(n,) number of B-lines in each frame."""
        return (self.b_amp > 0).sum(axis=1)


def smooth_noise(rng: np.random.Generator, n: int, length: int, correlation: float) -> np.ndarray:
    """(n, length) Gaussian noise with unit SD per row, correlated over ``correlation`` x length samples."""
    white = rng.standard_normal((n, length))
    smooth = gaussian_filter1d(white, max(correlation * length, 1e-3), axis=1, mode="reflect")
    return (smooth - smooth.mean(axis=1, keepdims=True)) / (smooth.std(axis=1, keepdims=True) + 1e-9)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def sample_scenes(config: SyntheticConfig, severity: np.ndarray, zone_position: np.ndarray,
                  rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw the layout of ``len(severity)`` frames; ``zone_position`` is 0 (upper) .. 1 (lower zone)."""
    n = len(severity)
    s = severity.astype(np.float64)[:, None]
    x = (np.arange(width) + 0.5)[None, :] / width
    y = (np.arange(height) + 0.5)[None, :] / height

    # Pleural line: deeper or shallower by chest wall, thicker, more irregular and fragmented with severity.
    base_depth = rng.uniform(0.2, 0.3, (n, 1))
    tilt = rng.uniform(-0.03, 0.03, (n, 1))
    wobble = (0.002 + 0.01 * s) * smooth_noise(rng, n, width, 0.04)
    pleura_depth = base_depth + tilt * (x - 0.5) + wobble
    pleura_sd = np.maximum(0.003 + 0.008 * s[:, 0], 0.45 / height)
    gaps = _sigmoid((smooth_noise(rng, n, width, 0.04) - (2.8 - 2.0 * s)) / 0.1)
    pleura_echo = rng.uniform(0.85, 1.0, (n, 1)) * (1.0 - gaps)

    # Ribs: none, one at a side, or two framing the intercostal space (the "bat sign").
    n_ribs = rng.choice(3, size=n, p=[0.25, 0.35, 0.4])
    side = rng.integers(0, 2, size=n)
    centers = np.stack([rng.uniform(-0.04, 0.08, n), rng.uniform(0.92, 1.04, n)], axis=1)
    halfwidth = rng.uniform(0.08, 0.13, (n, 2))
    active = np.stack([(n_ribs == 2) | ((n_ribs == 1) & (side == 0)), (n_ribs == 2) | ((n_ribs == 1) & (side == 1))], axis=1)
    u = (x[:, None, :] - centers[:, :, None]) / halfwidth[:, :, None]  # (n, 2, W)
    cover = _sigmoid((1.0 - np.abs(u)) / 0.08) * active[:, :, None]
    arc = np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
    tops = base_depth[:, :, None] - rng.uniform(0.02, 0.04, (n, 2, 1)) - 0.03 * arc
    nearest = cover.argmax(axis=1)[:, None, :]
    rib_cover = np.take_along_axis(cover, nearest, axis=1)[:, 0]
    rib_top = np.take_along_axis(tops, nearest, axis=1)[:, 0]
    pleura_echo = pleura_echo * (1.0 - rib_cover)

    # Effusion: anechoic fluid below the parietal pleura, in dependent (lower) zones of severe lungs.
    has_effusion = rng.random(n) < _sigmoid((severity + 0.2 * zone_position - config.effusion_onset) / 0.07)
    thickness = (0.05 + 0.18 * s) * rng.uniform(0.7, 1.2, (n, 1))
    start = rng.uniform(0.0, 0.5, (n, 1))
    ramp = np.clip((x - start) / 0.3, 0.0, 1.0) ** 0.7
    ramp = np.where(rng.random((n, 1)) < 0.5, ramp, ramp[:, ::-1])
    # At least a quarter of the depth stays for the lung under the fluid.
    effusion = np.minimum(thickness * ramp, LUNG_BOTTOM - 0.25 - pleura_depth) * has_effusion[:, None]
    effusion = np.maximum(effusion, 0.0)

    # Consolidation: subpleural, tissue-like, with an irregular ("shred") deep border.
    has_consolidation = rng.random(n) < _sigmoid((severity - config.consolidation_onset) / 0.07)
    center = rng.uniform(0.3, 0.7, (n, 1))
    half = (0.08 + 0.22 * s) * rng.uniform(0.8, 1.2, (n, 1))
    depth = (0.08 + 0.3 * s) * rng.uniform(0.8, 1.2, (n, 1))
    shape = np.sqrt(np.clip(1.0 - ((x - center) / half) ** 2, 0.0, 1.0))
    shred = 1.0 + 0.2 * smooth_noise(rng, n, width, 0.05)
    room = LUNG_BOTTOM - pleura_depth - effusion
    consolidation = np.clip(depth * shape * shred, 0.0, room) * has_consolidation[:, None]
    pleura_echo = pleura_echo * (1.0 - 0.5 * (consolidation > 0))  # the line is blurred over consolidated lung
    n_dots = rng.poisson(4.0 + 14.0 * s[:, 0])
    bronchogram_on = (np.arange(MAX_BRONCHOGRAMS)[None, :] < n_dots[:, None]) & has_consolidation[:, None]
    bronchogram_x = center + half * rng.uniform(-0.8, 0.8, (n, MAX_BRONCHOGRAMS))
    bronchogram_depth = rng.uniform(0.15, 0.8, (n, MAX_BRONCHOGRAMS))

    # A-lines fade as the lung loses air; B-lines grow in number and width and merge when confluent.
    a_amp = 0.25 * 0.5 ** (A_LINE_ORDERS[None, :] - 2) * (1.0 - s) ** 2 * rng.uniform(0.6, 1.2, (n, 1))
    n_b = np.minimum(rng.poisson(config.b_line_rate * s[:, 0] ** 1.5), MAX_B_LINES)
    b_on = np.arange(MAX_B_LINES)[None, :] < n_b[:, None]
    b_center = rng.uniform(0.05, 0.95, (n, MAX_B_LINES))
    b_width = np.maximum((0.008 + 0.022 * s) * rng.uniform(0.7, 1.3, (n, MAX_B_LINES)), 0.45 / width)  # >= 1 column
    b_amp = rng.uniform(0.15, 0.45, (n, MAX_B_LINES)) * (0.6 + 0.4 * s) * b_on

    # Mimics: Z-line streaks (short, fading comet tails) and hypoechoic speckle clusters.
    n_streaks = np.minimum(rng.poisson(0.6 * config.mimic_rate, n), MAX_STREAKS)
    streak_on = np.arange(MAX_STREAKS)[None, :] < n_streaks[:, None]
    streak_center = rng.uniform(0.1, 0.9, (n, MAX_STREAKS))
    streak_width = np.maximum(rng.uniform(0.005, 0.01, (n, MAX_STREAKS)), 0.45 / width)
    streak_amp = rng.uniform(0.05, 0.2, (n, MAX_STREAKS)) * streak_on
    streak_length = rng.uniform(0.05, 0.15, (n, MAX_STREAKS))
    n_clusters = np.minimum(rng.poisson(0.4 * config.mimic_rate, n), MAX_CLUSTERS)
    cluster_on = np.arange(MAX_CLUSTERS)[None, :] < n_clusters[:, None]
    cluster_x = rng.uniform(0.15, 0.85, (n, MAX_CLUSTERS))
    cluster_y = base_depth + rng.uniform(0.1, 0.45, (n, MAX_CLUSTERS))
    cluster_r = rng.uniform(0.02, 0.045, (n, MAX_CLUSTERS)) * cluster_on

    # Soft tissue above the pleura: skin, subcutaneous fat, muscle with fascia and striations.
    fat_end = base_depth * rng.uniform(0.3, 0.5, (n, 1))
    muscle_end = base_depth - 0.015
    striation = 1.0 + 0.5 * smooth_noise(rng, n, height, 0.012)
    tissue = np.where(y < 0.02, 0.12, np.where(y < fat_end, 0.003, 0.012 * np.clip(striation, 0.1, None) ** 2))
    fascia = 0.08 * (np.exp(-0.5 * ((y - fat_end) / 0.006) ** 2) + np.exp(-0.5 * ((y - muscle_end) / 0.006) ** 2))
    tissue = (tissue + fascia) * (y < muscle_end + 0.01)
    lateral_gain = 1.0 + 0.2 * smooth_noise(rng, n, width, 0.15)

    f32 = np.float32
    return Scene(
        severity=severity.astype(f32),
        pleura_depth=pleura_depth.astype(f32),
        pleura_wobble=wobble.astype(f32),
        pleura_sd=pleura_sd.astype(f32),
        pleura_echo=pleura_echo.astype(f32),
        rib_cover=rib_cover.astype(f32),
        rib_top=rib_top.astype(f32),
        effusion=effusion.astype(f32),
        consolidation=consolidation.astype(f32),
        a_amp=a_amp.astype(f32),
        b_center=b_center.astype(f32),
        b_width=b_width.astype(f32),
        b_amp=b_amp.astype(f32),
        streak_center=streak_center.astype(f32),
        streak_width=streak_width.astype(f32),
        streak_amp=streak_amp.astype(f32),
        streak_length=streak_length.astype(f32),
        cluster_x=cluster_x.astype(f32),
        cluster_y=cluster_y.astype(f32),
        cluster_r=cluster_r.astype(f32),
        bronchogram_x=bronchogram_x.astype(f32),
        bronchogram_depth=bronchogram_depth.astype(f32),
        bronchogram_on=bronchogram_on,
        tissue=tissue.astype(f32),
        lateral_gain=lateral_gain.astype(f32),
        attenuation=(config.attenuation * rng.uniform(0.8, 1.2, n)).astype(f32),
    )
