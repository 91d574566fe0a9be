"""Decoding the files a frame table names: grey images and label maps, by file suffix.

- PNG and TIFF (Pillow): 8-bit, 16-bit and 32-bit float grey; RGB images are converted to grey (ITU-R 601 luma);
  multi-page TIFF with a frame index;
- NumPy ``.npy`` (no pickles): 2-D, or a stack with a frame index (or, for a stacked label layer, ``(K, H, W)``);
- DICOM ``.dcm`` (the optional ``dicom`` extra, pydicom): single-frame, or multi-frame with a frame index; grey
  levels span the stored bit depth (``BitsStored``), MONOCHROME1 is inverted, colour converted to grey; only
  what pydicom decodes without plugins (uncompressed, RLE, deflate) can be read.

Every failure is a :class:`ReadError` whose message says what is wrong with the file, never a traceback.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".dcm")


class ReadError(Exception):
    """A file cannot be used; the message is one line for the user."""


def safe_path(root: Path, text: str) -> Path:
    """``text`` (relative, ``/``-separated) resolved inside the dataset folder ``root`` (itself resolved).

    Absolute paths and paths that leave the folder (``..``, or a symlink pointing outside) are rejected: a
    dataset must be a self-contained folder, so that its content, and so its cache key, is the folder's.
    """
    if not text:
        raise ReadError("empty path")
    if text.startswith(("/", "\\")) or os.path.isabs(text) or (len(text) > 1 and text[1] == ":"):
        raise ReadError(f"path '{text}' is absolute: paths are relative to the dataset folder")
    joined = os.path.join(root, text)
    # Resolving every file is slow for thousands of them; the folders are few, so their real paths are cached and
    # only a file that is itself a symlink is resolved.
    directory = Path(_real_dir(os.path.dirname(joined)))
    path = directory / os.path.basename(joined)
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            path = path.resolve()
    except OSError:
        pass
    if path != root and root not in path.parents:
        raise ReadError(f"path '{text}' escapes the dataset folder")
    if not path.is_file():
        raise ReadError(f"file '{text}' does not exist")
    return path


_real_dir = functools.lru_cache(maxsize=4096)(os.path.realpath)


def read_array(path: Path, index: int | None) -> np.ndarray:
    """The pixel array of ``path`` as stored (grey: ``(H, W)``, colour: ``(H, W, 3)``), frame ``index`` of a stack.

    A stack read without an index comes back whole (``(F, H, W)``), for a stacked label layer."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _select(_read_npy(path), index, stack_ndim=3)
    if suffix == ".dcm":
        return _read_dicom(path, index)
    if suffix in (".png", ".tif", ".tiff"):
        return _read_pillow(path, index)
    raise ReadError(f"unsupported file type '{path.suffix}' (use {', '.join(IMAGE_SUFFIXES)})")


def _select(array: np.ndarray, index: int | None, stack_ndim: int) -> np.ndarray:
    if index is None:
        return array
    if array.ndim != stack_ndim:
        raise ReadError(f"a frame index was given but the file holds a single {array.ndim}-D array {array.shape}")
    if not 0 <= index < array.shape[0]:
        raise ReadError(f"frame index {index} is out of range: the file holds {array.shape[0]} frames")
    return array[index]


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ReadError(f"cannot read .npy ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ReadError("a .npy must hold one numeric array")
    return array


def _read_pillow(path: Path, index: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if index is not None:
                frames = getattr(image, "n_frames", 1)
                if not 0 <= index < frames:
                    raise ReadError(f"frame index {index} is out of range: the file holds {frames} frame(s)")
                image.seek(index)
            image.load()  # decode now: a truncated file fails here, not later
            if image.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                return np.asarray(image.convert("RGB"))
            if image.mode == "1":
                return np.asarray(image.convert("L")) // 255
            return np.asarray(image)
    except ReadError:
        raise
    except UnidentifiedImageError:
        raise ReadError("not a readable image (corrupt or not an image)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ReadError(f"cannot decode image ({' '.join(str(exc).split())[:120]})") from None


def _read_dicom(path: Path, index: int | None) -> np.ndarray:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ReadError("reading DICOM needs pydicom: pip install 'lusbench[dicom]'") from None
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except InvalidDicomError:
        raise ReadError("not a DICOM file") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for unreadable pixel data; all are the file's fault
        raise ReadError(f"cannot decode DICOM pixel data ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    colour = int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1
    if frames > 1:
        if index is None:
            raise ReadError(f"multi-frame DICOM with {frames} frames: give the frame in the 'image_frame' column")
        if not 0 <= index < frames:
            raise ReadError(f"frame index {index} is out of range: the file holds {frames} frames")
        pixels = pixels[index]
    elif index not in (None, 0):
        raise ReadError(f"frame index {index} is out of range: the file holds 1 frame")
    if getattr(ds, "PixelRepresentation", 0) == 1:
        raise ReadError("signed DICOM pixel data is not supported")
    if not colour and getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        # MONOCHROME1: 0 is white; flip so that bright tissue is a high grey level as in every other format.
        pixels = (2 ** int(ds.BitsStored) - 1) - pixels.astype(np.int64)
    if not colour and pixels.dtype.kind in "iu":
        # The stored bit depth, not the container's: 12-bit data in 16-bit words spans 0..4095, so it is returned
        # as a fraction of 2**BitsStored - 1 (the manifest's image_max does not apply to DICOM).
        pixels = pixels.astype(np.float32) / np.float32(2 ** int(ds.BitsStored) - 1)
    return pixels


def to_grey_uint8(array: np.ndarray, image_max: float | None) -> np.ndarray:
    """A decoded image as ``(H, W)`` uint8 grey levels.

    uint8 is kept as is; wider integers are scaled linearly from ``0..image_max`` (default: the type's full
    range, 65535 for 16-bit) to 0..255; floats must lie in ``[0, image_max or 1]``; colour becomes luma."""
    if array.ndim == 3 and array.shape[2] in (3, 4):
        rgb = array[..., :3].astype(np.float64)
        high = image_max or (255.0 if array.dtype == np.uint8 else float(np.iinfo(array.dtype).max)
                             if array.dtype.kind in "iu" else 1.0)
        array = (rgb @ np.array([0.299, 0.587, 0.114])) / high
        return np.clip(np.floor(array * 255 + 0.5), 0, 255).astype(np.uint8)
    if array.ndim != 2:
        raise ReadError(f"an image must be 2-D grey, got an array of shape {array.shape}")
    if array.dtype == np.uint8 and image_max is None:
        return array
    if array.dtype.kind == "b":
        raise ReadError("a binary (1-bit) file is not a grey image")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ReadError("the image has NaN or infinite values")
        high = float(image_max or 1.0)
    else:
        # Pillow reads some 16-bit files as int32: any integer wider than 8 bits is taken as 16-bit.
        high = float(image_max or (255 if array.dtype == np.uint8 else 65535))
    low_value, high_value = float(array.min()), float(array.max())
    if low_value < 0 or high_value > high:
        raise ReadError(f"grey levels {low_value:g}..{high_value:g} lie outside 0..{high:g} "
                        f"({'set image_max in the manifest' if array.dtype.kind != 'f' else 'float images must be in 0..1'})")
    return np.floor(array.astype(np.float64) * (255.0 / high) + 0.5).astype(np.uint8)


def to_levels(array: np.ndarray, scale: int) -> np.ndarray:
    """A confidence map as uint8 levels ``0..scale``: integer pixels are the levels; float pixels are confidences
    in [0, 1] that must lie on the scale's grid (``j / scale``)."""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ReadError("the confidence map has NaN or infinite values")
        levels = array.astype(np.float64) * scale
        rounded = np.floor(levels + 0.5)
        if array.min() < 0 or array.max() > 1 or np.abs(levels - rounded).max() > 1e-4 * scale:
            raise ReadError(f"float confidence must be levels j/{scale} in [0, 1], got values {array.min():g}..{array.max():g}")
        return rounded.astype(np.uint8)
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * np.uint8(scale)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > scale:
        raise ReadError(f"confidence levels {low}..{high} lie outside the declared scale 0..{scale}")
    return array.astype(np.uint8)


def to_mask(array: np.ndarray) -> np.ndarray:
    """A binary mask as bool: 0/1, or 0 and the type's maximum (255 for 8-bit PNG), or bool."""
    if array.dtype.kind == "b":
        return array
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ReadError("the mask has NaN or infinite values")
    on = np.iinfo(array.dtype).max if array.dtype.kind in "iu" else 1
    zero = array == 0
    if not ((zero | (array == 1)).all() or (zero | (array == on)).all()):
        values = np.unique(array)
        shown = ", ".join(f"{v:g}" for v in values[:5].tolist())
        raise ReadError(f"a mask must be binary (0/1 or 0/{on}), got values {shown}{'...' if len(values) > 5 else ''}")
    return array != 0
