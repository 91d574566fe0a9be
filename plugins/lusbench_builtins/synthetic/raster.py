"""Pixel grids and the two cheap ways the simulator paints them.

Almost everything in a linear-probe lung image is organised by columns (one ultrasound beam per column):
a structure is either a narrow horizontal band around a per-column depth (pleural line, A-lines, rib
surface) or a per-column depth interval (lung below the pleura, B-line, consolidation, effusion). Bands
are painted by scattering values into the few rows they cover instead of evaluating every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Grid:
    """Pixel-centre coordinates as broadcastable (1, H, 1) depth and (1, 1, W) lateral arrays (fractions)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.y = ((np.arange(height, dtype=np.float32) + 0.5) / height)[None, :, None]
        self.x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, None, :]

    def columns(self, lateral: np.ndarray) -> np.ndarray:
        """Column index of lateral positions (fractions of the width)."""
        return np.clip((lateral * self.width).astype(np.int64), 0, self.width - 1)

    def rows(self, depth: np.ndarray) -> np.ndarray:
        """Row index of depths (fractions of the height)."""
        return np.clip((depth * self.height).astype(np.int64), 0, self.height - 1)


    def span(self, top: np.ndarray | float, bottom: np.ndarray | float) -> slice:
        """Rows covering every depth from the smallest ``top`` to the largest ``bottom`` (plus a row of margin)."""
        first = int(np.floor(float(np.min(top)) * self.height)) - 1
        last = int(np.ceil(float(np.max(bottom)) * self.height)) + 1
        return slice(min(max(first, 0), self.height), min(max(last, 0), self.height))


@dataclass
class Band:
    """The pixels within reach of a per-column depth: flat (frame, row, col) indices and signed offsets."""

    frame: np.ndarray
    row: np.ndarray
    col: np.ndarray
    offset: np.ndarray  # pixel-centre depth minus the band's centre depth (fraction of the height)

    def pick(self, per_column: np.ndarray) -> np.ndarray:
        """Values of an (n, W) per-column array at the band's pixels."""
        return per_column[self.frame, self.col]

    def pick_frame(self, per_frame: np.ndarray) -> np.ndarray:
        """Values of an (n,) per-frame array at the band's pixels."""
        return per_frame[self.frame]


def band(grid: Grid, centre: np.ndarray, above: float, below: float, frames: np.ndarray | None = None) -> Band:
    """Pixels from ``above`` over to ``below`` under ``centre`` (n, W) in every column (fractions of the height).

    ``frames`` limits the band to those frames (indices into ``centre``'s first axis).
    """
    frame_ids = np.arange(centre.shape[0]) if frames is None else frames
    centre = centre[frame_ids]
    width = centre.shape[1]
    steps = np.arange(-int(np.ceil(above * grid.height)) - 1, int(np.ceil(below * grid.height)) + 2)
    rows = np.floor(centre * grid.height).astype(np.int64)[:, None, :] + steps[None, :, None]
    offset = (rows + 0.5) / grid.height - centre[:, None, :]
    keep = (rows >= 0) & (rows < grid.height) & (offset >= -above) & (offset <= below)
    frame = np.broadcast_to(frame_ids[:, None, None], rows.shape)
    col = np.broadcast_to(np.arange(width)[None, None, :], rows.shape)
    return Band(frame[keep], rows[keep], col[keep], offset[keep].astype(np.float32))


def membership(dist: np.ndarray, taper: np.ndarray | float) -> np.ndarray:
    """Membership of a pixel at signed distance ``dist`` from a boundary (positive inside): a linear ramp of
    width ``taper`` centred on the boundary (a step where ``taper`` is 0)."""
    return np.clip(dist / np.maximum(taper, np.float32(1e-6)) + np.float32(0.5), 0.0, 1.0)
