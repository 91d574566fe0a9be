"""The echo model shared by rendering and annotation: echo strengths, attenuation, and visibility.

Echo is linear power, relative to the pleural line (~1). Every finding's visibility comes from this same
model: the ratio ``q`` of the echo with the finding to the echo its surroundings would have without it,
both attenuated, shadowed and raised by the noise floor, turned into ``g^2 / (g^2 + h^2)`` with
``g = max(q, 1/q) - 1`` and ``h = visibility_half``. Fully developed speckle has the same log-amplitude
spread everywhere (5.6 dB), so this contrast is the finding's contrast against the local speckle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lusbench_builtins.synthetic.config import SyntheticConfig
from lusbench_builtins.synthetic.scene import A_LINE_ORDERS, Scene

LUNG_ECHO = 0.006  # aerated lung below the pleura (-22 dB): a haze of reverberation ...
HAZE_EXTRA = 1.5  # ... up to 2.5 times brighter just under the pleural line ...
HAZE_DEPTH = 0.05  # ... fading over this depth
CONSOLIDATION_ECHO = 0.002  # hypoechoic, tissue-like (-27 dB)
SHRED_ECHO = 0.15  # the bright, irregular deep border of a consolidation
BRONCHOGRAM_ECHO = 0.3  # air-bronchogram dots inside a consolidation (up to twice this)
EFFUSION_ECHO = 0.0003  # anechoic fluid (-35 dB)
VISCERAL_ECHO = 0.2  # the lung surface seen through an effusion
CLUSTER_ECHO = 0.25  # a hypoechoic speckle cluster keeps this fraction of the lung's echo
RIB_ECHO = 0.9  # the rib's cortex
RIB_SHADOW = 0.01  # fraction of the echo left below a rib
SHADOW_START = 0.01  # the shadow starts this far below the rib surface
LINE_CONTRAST_MIN = 0.5  # the pleural line and A-lines are truly present where their contrast g reaches this
HWHM = 1.18  # a Gaussian's half width at half maximum, in SDs: the edge of a line's or a B-line's mask
STREAK_REACH = 2.0  # a Z-line streak's extent below the pleura, in units of its fading length
EFFUSION_MIN = 0.002  # thinner fluid (fraction of the height) is no effusion


@dataclass
class Beams:
    """What the beam of each column meets on its way down: pleura, effusion, rib. Arrays are (n, columns)."""

    pleura_depth: np.ndarray
    effusion: np.ndarray
    rib_cover: np.ndarray
    rib_top: np.ndarray
    attenuation: np.ndarray  # (n, 1)

    @classmethod
    def of(cls, scene: Scene) -> Beams:
        return cls(scene.pleura_depth, scene.effusion, scene.rib_cover, scene.rib_top, scene.attenuation[:, None])

    def at(self, col: np.ndarray) -> Beams:
        """The beams of columns ``col`` (n, objects), one per object."""
        frames = np.arange(col.shape[0])[:, None]
        return Beams(self.pleura_depth[frames, col], self.effusion[frames, col], self.rib_cover[frames, col],
                     self.rib_top[frames, col], self.attenuation)

    def gain(self, depth: np.ndarray) -> np.ndarray:
        """Attenuation down to ``depth``, none inside an effusion (fluid barely attenuates), times the rib shadow."""
        fluid = np.clip(depth - self.pleura_depth, 0.0, self.effusion)
        shadow = 1.0 - (1.0 - RIB_SHADOW) * self.rib_cover * (depth > self.rib_top + SHADOW_START)
        return np.exp(-self.attenuation * (depth - fluid)) * shadow

    def haze(self, depth: np.ndarray) -> np.ndarray:
        """Echo of aerated lung at ``depth``, below the lung surface, attenuated and shadowed."""
        below = np.maximum(depth - self.pleura_depth - self.effusion, 0.0)
        return LUNG_ECHO * (1.0 + HAZE_EXTRA * np.exp(-below / HAZE_DEPTH)) * self.gain(depth)


def b_profile(scene: Scene) -> np.ndarray:
    """(n, W) B-line echo by column: the brightest line at each column (confluent lines merge)."""
    width = scene.pleura_depth.shape[1]
    x = (np.arange(width, dtype=np.float32) + 0.5) / width
    z = (x[None, None, :] - scene.b_center[:, :, None]) / scene.b_width[:, :, None]
    return (scene.b_amp[:, :, None] * np.exp(-0.5 * z**2)).max(axis=1) * (1.0 - scene.rib_cover)


def a_line_columns(scene: Scene) -> np.ndarray:
    """(n, W) factor of the A-line echo per column: no A-lines under ribs, B-lines, effusion or consolidation."""
    b_cover = np.clip(b_profile(scene) / 0.25, 0.0, 1.0)
    blocked = (scene.effusion > EFFUSION_MIN) | (scene.consolidation > 0)
    return (1.0 - scene.rib_cover) * (1.0 - b_cover) * ~blocked


def a_line_echo(scene: Scene) -> np.ndarray:
    """(n, orders, W) echo of each A-line order by column, before attenuation."""
    return scene.a_amp[:, :, None] * a_line_columns(scene)[:, None, :]


@dataclass
class Visibility:
    """How visible each object is, in [0, 1], per column where it has an extent, else per object."""

    pleura: np.ndarray  # (n, W)
    a_lines: np.ndarray  # (n, orders, W)
    pleura_contrast: np.ndarray  # (n, W) g of the pleural line, which defines where it truly is
    a_line_contrast: np.ndarray  # (n, orders, W) g of each A-line order
    b_lines: np.ndarray  # (n, MAX_B_LINES)
    streaks: np.ndarray  # (n, MAX_STREAKS)
    consolidation: np.ndarray  # (n, W)
    clusters: np.ndarray  # (n, MAX_CLUSTERS)
    effusion: np.ndarray  # (n, W)


def visibility(scene: Scene, config: SyntheticConfig) -> Visibility:
    """Visibility of every object of ``scene`` against its surroundings (see the module docstring)."""
    floor = config.noise_floor
    half = config.visibility_half

    def contrast(with_: np.ndarray, without: np.ndarray) -> np.ndarray:
        q = (with_ + floor) / (without + floor)
        return (np.maximum(q, 1.0 / q) - 1.0).astype(np.float32)

    def seen(with_: np.ndarray, without: np.ndarray) -> np.ndarray:
        g2 = contrast(with_, without) ** 2
        return g2 / (g2 + np.float32(half * half))

    beams = Beams.of(scene)
    d = scene.pleura_depth
    top = scene.lung_top
    width = d.shape[1]
    just_below = beams.haze(d)
    pleura_g = contrast(just_below + scene.pleura_echo * beams.gain(d), just_below)

    a_echo = a_line_echo(scene)
    a_line_g = np.empty_like(a_echo)
    for i, order in enumerate(A_LINE_ORDERS):
        haze = beams.haze(scene.a_line_depth(order))
        a_line_g[:, i] = contrast(haze + a_echo[:, i] * beams.gain(scene.a_line_depth(order)), haze)
    pleura, a_lines = (g**2 / (g**2 + np.float32(half * half)) for g in (pleura_g, a_line_g))

    # B-lines and streaks do not fade past the lung surface; they are judged halfway down / along their fade.
    surface = beams.gain(top) * (1.0 - scene.rib_cover)
    col = np.clip((scene.b_center * width).astype(np.int64), 0, width - 1)
    at = beams.at(col)
    haze = at.haze(np.take_along_axis(top + 0.5 * (1.0 - top), col, axis=1))
    b_lines = seen(haze + scene.b_amp * np.take_along_axis(surface, col, axis=1), haze)
    col = np.clip((scene.streak_center * width).astype(np.int64), 0, width - 1)
    at = beams.at(col)
    haze = at.haze(np.take_along_axis(top, col, axis=1) + 0.5 * scene.streak_length)
    streaks = seen(haze + np.exp(-0.5) * scene.streak_amp * np.take_along_axis(surface, col, axis=1), haze)

    # Consolidation and effusion: judged halfway down their column, against the lung that would be there.
    mid = top + 0.5 * scene.consolidation
    consolidation = seen(CONSOLIDATION_ECHO * beams.gain(mid), beams.haze(mid) + b_profile(scene) * surface)
    col = np.clip((scene.cluster_x * width).astype(np.int64), 0, width - 1)
    haze = beams.at(col).haze(scene.cluster_y)
    clusters = seen(CLUSTER_ECHO * haze, haze)
    mid = d + 0.5 * scene.effusion
    effusion = seen(EFFUSION_ECHO * beams.gain(mid), beams.haze(mid))
    return Visibility(pleura, a_lines, pleura_g, a_line_g, b_lines, streaks, consolidation, clusters, effusion)
