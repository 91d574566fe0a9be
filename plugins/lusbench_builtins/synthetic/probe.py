"""Probe geometry. A linear probe images a rectangle: rows are depth, columns are parallel beams. A convex
(curvilinear) probe fans its beams out from a curved face; the simulator renders its beams as columns, as
for a linear probe, then scan-converts them into the sector (nearest neighbour), so speckle and findings
widen with depth as on a real curvilinear image. Pixels outside the sector are black and unlabelled.
"""

from __future__ import annotations

import numpy as np

FACE_RADIUS = 0.25  # radius of the probe face, as a fraction of the imaging depth
HALF_ANGLE = np.deg2rad(30.0)  # half the sector's opening angle


class SectorScan:
    """Nearest-neighbour scan conversion of (depth, beam) frames of ``size`` x ``size`` into a sector."""

    def __init__(self, size: int) -> None:
        # The square output is as wide as the sector at full depth; the face's centre touches its top edge.
        side = 2.0 * (1.0 + FACE_RADIUS) * np.sin(HALF_ANGLE)
        top = FACE_RADIUS * np.cos(HALF_ANGLE) - FACE_RADIUS
        centres = (np.arange(size) + 0.5) / size * side
        x = centres[None, :] - side / 2.0
        y = top + centres[:, None] + FACE_RADIUS
        depth = np.hypot(x, y) - FACE_RADIUS
        beam = (np.arctan2(x, y) + HALF_ANGLE) / (2.0 * HALF_ANGLE)
        inside = (depth >= 0.0) & (depth < 1.0) & (beam >= 0.0) & (beam < 1.0)
        rows = np.floor(depth[inside] * size).astype(np.int64)
        cols = np.floor(beam[inside] * size).astype(np.int64)
        self.inside = inside.ravel()
        self.source = rows * size + cols

    def convert(self, frames: np.ndarray) -> np.ndarray:
        """(..., H, W) beam-space arrays -> the same shape in image space; zero outside the sector."""
        flat = frames.reshape(*frames.shape[:-2], -1)
        out = np.zeros_like(flat)
        out[..., self.inside] = flat[..., self.source]
        return out.reshape(frames.shape)
