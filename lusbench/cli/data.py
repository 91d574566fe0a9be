"""``lusbench data``: look at, check and export any registered dataset.

- ``lusbench data preview SPEC --out preview.png``: a montage of frames across severities, each with its
  confidence overlay and its true masks.
- ``lusbench data validate SPEC``: build the dataset, check it, print a one-screen summary.
- ``lusbench data export SPEC --out FILE.npz``: every array of the dataset in one compressed npz, written
  atomically (layout in docs/cli/data.md).

numpy and matplotlib are imported inside the handlers so that building the CLI stays instant.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lusbench.errors import UserError
from lusbench.fileio import atomic_write_bytes, atomic_write_npz

if TYPE_CHECKING:
    import numpy as np

    from lusbench.data.dataset import LUSDataset

# One colour per class in the preview, in class order (more classes cycle).
CLASS_COLOURS = ("#ffd400", "#00d5ff", "#ff3df2", "#ff8c00", "#3d7bff", "#7dff3d", "#ff4040")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="preview, validate or export a dataset",
                       description="Preview, validate or export any registered dataset (e.g. synthetic-lus:size=64).")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    preview = actions.add_parser("preview", help="save a montage of frames with confidence overlays and true masks",
                                 description="Save a PNG montage: frames across severities, their expert confidence "
                                             "overlaid, and their true masks where the dataset has them.")
    preview.add_argument("spec", metavar="DATASET_SPEC", help="dataset spec, e.g. synthetic-lus or synthetic-lus:size=64")
    preview.add_argument("--out", required=True, type=Path, metavar="PNG", help="image file to write")
    preview.add_argument("--frames", type=int, default=6, metavar="N", help="frames in the montage (default 6)")
    preview.set_defaults(func=run_preview)

    validate = actions.add_parser("validate", help="build a dataset, check it and print a summary",
                                  description="Build the dataset, check its arrays and clinical tables, and print a "
                                              "summary. Exit 2 with a one-line error if it is invalid.")
    validate.add_argument("spec", metavar="DATASET_SPEC", help="dataset spec")
    validate.set_defaults(func=run_validate)

    export = actions.add_parser("export", help="write every array of a dataset to one compressed .npz",
                                description="Write every array of the dataset to one compressed .npz file (written "
                                            "to a temporary file, then renamed). Layout: docs/cli/data.md.")
    export.add_argument("spec", metavar="DATASET_SPEC", help="dataset spec")
    export.add_argument("--out", required=True, type=Path, metavar="NPZ", help="file to write")
    export.set_defaults(func=run_export)


def load_dataset(args: argparse.Namespace) -> LUSDataset:
    """Build the dataset named by ``args.spec`` through the plugin registries; UserError if it is not valid."""
    from lusbench.api.plugins import load_plugins
    from lusbench.data.dataset import LUSDataset

    dataset = load_plugins(args.plugins).datasets.create(args.spec, label="dataset")
    if not isinstance(dataset, LUSDataset):
        raise UserError(f"dataset '{args.spec}': the factory returned {type(dataset).__name__}, not a LUSDataset")
    problem = find_problem(dataset)
    if problem:
        raise UserError(f"dataset '{args.spec}' is invalid: {problem}")
    return dataset


def find_problem(dataset: LUSDataset) -> str | None:
    """The first inconsistency between the arrays and the clinical tables, or None.

    The array shapes and dtypes were checked when the LUSDataset was built; this checks what they mean.
    """
    import numpy as np

    try:
        dataset.validate()
    except ValueError as exc:
        return str(exc)
    if dataset.visit.min() < 1:
        return "visits must be numbered from 1"
    if dataset.visits is not None:
        rows = set(zip(dataset.visits["patient"].tolist(), dataset.visits["visit"].tolist(), strict=True))
        if len(rows) != len(dataset.visits["patient"]):
            return "clinical table 'visits' has duplicate (patient, visit) rows"
        missing = set(zip(dataset.patient.tolist(), dataset.visit.tolist(), strict=True)) - rows
        if missing:
            patient, visit = min(missing)
            return f"clinical table 'visits' has no row for patient {patient} visit {visit}"
    if dataset.patients is not None:
        ids = dataset.patients["patient"]
        if len(np.unique(ids)) != len(ids):
            return "clinical table 'patients' has duplicate patients"
        missing = np.setdiff1d(dataset.patient, ids)
        if missing.size:
            return f"clinical table 'patients' has no row for patient {missing[0]}"
        for column in ("sf_change", "readmission_30d"):
            if column in dataset.patients and not np.isin(dataset.patients[column], (0, 1)).all():
                return f"clinical column 'patients.{column}' must be 0 or 1"
    if dataset.has_column("visits", "sf_ratio"):
        sf = np.asarray(dataset.visits["sf_ratio"], dtype=float)
        if not np.isfinite(sf).all() or sf.min() <= 0:
            return "clinical column 'visits.sf_ratio' must be finite and positive"
    return None


def pick_frames(dataset: LUSDataset, count: int) -> np.ndarray:
    """Frame indices spread across severity (the latent ``severity`` if known, else the labelled area)."""
    import numpy as np

    if "severity" in dataset.frame_info:
        score = np.asarray(dataset.frame_info["severity"], dtype=float)
    else:
        score = dataset.confidence.reshape(dataset.n_frames, -1).mean(axis=1, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    return order[np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))]


def run_preview(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise UserError("--frames must be at least 1")
    _check_parent(args.out)
    dataset = load_dataset(args)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    frames = pick_frames(dataset, args.frames)
    colours = np.array([to_rgb(CLASS_COLOURS[k % len(CLASS_COLOURS)]) for k in range(dataset.n_classes)])
    rows = [("B-mode", None), ("expert confidence", "confidence")]
    if dataset.true_masks is not None:
        rows.append(("true masks", "truth"))
    fig, axes = plt.subplots(len(rows), len(frames), figsize=(2.3 * len(frames), 2.4 * len(rows) + 0.6), squeeze=False)
    for col, i in enumerate(frames):
        grey = dataset.images[i].astype(np.float32) / 255.0
        for row, (label, layer) in enumerate(rows):
            ax = axes[row, col]
            if layer is None:
                ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0)
            else:
                if layer == "confidence":
                    weight = dataset.confidence[i].astype(np.float32) / dataset.confidence_scale
                else:
                    weight = dataset.true_masks[i].astype(np.float32)
                ax.imshow(_overlay(grey, weight, colours))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label)
        axes[0, col].set_title(_frame_title(dataset, i), fontsize=9)
    handles = [Patch(color=colours[k], label=name) for k, name in enumerate(dataset.classes)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    fig.suptitle(f"{dataset.name}: {dataset.n_frames} frames; overlay opacity = confidence", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(args.out, png.getvalue())
    print(f"wrote {args.out} ({len(frames)} frames of {dataset.name})")
    return 0


def _overlay(grey: np.ndarray, weight: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGB image: grey frame, with each class's colour blended in at opacity ``weight`` (K, H, W)."""
    import numpy as np

    out = np.repeat(grey[:, :, None] * 0.7, 3, axis=2)
    for k in range(weight.shape[0]):
        alpha = weight[k][:, :, None] * 0.85
        out = out * (1.0 - alpha) + colours[k] * alpha
    return np.clip(out, 0.0, 1.0)


def _frame_title(dataset: LUSDataset, i: int) -> str:
    parts = [f"p{dataset.patient[i]} v{dataset.visit[i]} z{dataset.zone[i]}"]
    if "severity" in dataset.frame_info:
        parts.append(f"sev {float(dataset.frame_info['severity'][i]):.2f}")
    return " · ".join(parts)


def run_validate(args: argparse.Namespace) -> int:
    dataset = load_dataset(args)
    for line in summary_lines(dataset):
        print(line)
    print("valid")
    return 0


def summary_lines(dataset: LUSDataset) -> list[str]:
    """The one-screen summary printed by ``lusbench data validate``."""
    import numpy as np

    h, w = dataset.image_shape
    raters = 1 if dataset.rater_masks is None else dataset.rater_masks.shape[1]
    size = sum(a.nbytes for a in _arrays(dataset).values()) / 2**20
    lines = [
        f"dataset     {dataset.name}",
        f"frames      {dataset.n_frames} images {h}x{w} uint8, {len(np.unique(dataset.patient))} patients, "
        f"visits {dataset.visit.min()}..{dataset.visit.max()}, zones {dataset.zone.min()}..{dataset.zone.max()}",
        f"labels      {dataset.n_classes} classes, confidence scale {dataset.confidence_scale} "
        f"({dataset.confidence_scale + 1} levels, uint8), {raters} rater(s) per frame, "
        f"true masks: {'yes' if dataset.true_masks is not None else 'no'}",
        f"memory      {size:.1f} MiB",
        "",
        f"{'class':<16}{'labelled px':>12}{'conf>=50% px':>14}{'true px':>10}{'frames labelled':>17}",
    ]
    pixels = dataset.confidence.shape[0] * h * w
    for k, name in enumerate(dataset.classes):
        levels = dataset.confidence[:, k]
        labelled = np.count_nonzero(levels) / pixels
        confident = np.count_nonzero(levels * 2 >= dataset.confidence_scale) / pixels
        truth = f"{np.count_nonzero(dataset.true_masks[:, k]) / pixels:.1%}" if dataset.true_masks is not None else "-"
        frames = np.count_nonzero(levels.reshape(len(levels), -1).any(axis=1)) / dataset.n_frames
        lines.append(f"{name:<16}{labelled:>12.1%}{confident:>14.1%}{truth:>10}{frames:>17.0%}")
    lines.append("")
    for table in ("visits", "patients"):
        rows = getattr(dataset, table)
        if rows is None:
            lines.append(f"{table:<12}none")
            continue
        described = [_describe(col, np.asarray(values)) for col, values in rows.items() if col not in ("patient", "visit")]
        lines.append(f"{table:<12}{len(rows['patient'])} rows: " + "; ".join(described))
    if dataset.frame_info:
        lines.append(f"{'frame_info':<12}{', '.join(dataset.frame_info)}")
    return lines


def _describe(column: str, values: np.ndarray) -> str:
    import numpy as np

    if values.dtype.kind not in "biuf":
        return column
    if values.dtype.kind in "biu" and np.isin(values, (0, 1)).all():
        return f"{column} ({values.mean():.0%} = 1)"
    return f"{column} (mean {values.mean():.4g}, {values.min():.4g}..{values.max():.4g})"


def _arrays(dataset: LUSDataset) -> dict[str, Any]:
    """Every array of the dataset under its npz key (layout documented in docs/cli/data.md)."""
    import numpy as np

    arrays: dict[str, Any] = {
        "name": np.array(dataset.name),
        "classes": np.array(dataset.classes),
        "confidence_scale": np.array(dataset.confidence_scale, dtype=np.int64),
        "images": dataset.images,
        "confidence": dataset.confidence,
        "patient": dataset.patient,
        "visit": dataset.visit,
        "zone": dataset.zone,
    }
    if dataset.true_masks is not None:
        arrays["true_masks"] = dataset.true_masks
    if dataset.rater_masks is not None:
        arrays["rater_masks"] = dataset.rater_masks
    for table in ("visits", "patients"):
        for column, values in (getattr(dataset, table) or {}).items():
            arrays[f"{table}.{column}"] = np.asarray(values)
    for column, values in dataset.frame_info.items():
        arrays[f"frame_info.{column}"] = np.asarray(values)
    return arrays


def run_export(args: argparse.Namespace) -> int:
    _check_parent(args.out)
    dataset = load_dataset(args)
    arrays = _arrays(dataset)
    atomic_write_npz(args.out, arrays)
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out}: {dataset.n_frames} frames, {len(arrays)} arrays, {size:.1f} MiB")
    return 0


def _check_parent(path: Path) -> None:
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: directory {path.parent} does not exist")
