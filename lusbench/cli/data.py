"""``lusbench data``: scaffold, look at, check and export datasets, registered ones or folders on disk.

- ``lusbench data init PATH``: write the manifest and tables of a folder dataset from a folder of images and
  confidence maps or per-rater masks (docs/data-format.md), for the user to edit.
- ``lusbench data preview SPEC --out preview.png``: a montage of frames across severities: the frame, each
  class's confidence on a colour scale with its colour bar, and the true masks.
- ``lusbench data validate SPEC``: build the dataset, check it, print a one-screen summary; for a folder, every
  problem with its file and line.
- ``lusbench data export SPEC --out DIR``: any dataset in the folder format (or, ``--out FILE.npz``, one
  compressed npz); written to a temporary name and renamed, so nothing is half-written.

Wherever a spec is taken, a path to a folder dataset works too (``data validate ./my-lus`` is
``folder:./my-lus``). numpy and matplotlib are imported inside the handlers so that building the CLI stays instant.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lusbench.cli import data_sensitivity
from lusbench.errors import UserError
from lusbench.fileio import atomic_write_bytes, atomic_write_npz, atomic_write_text

if TYPE_CHECKING:
    import numpy as np

    from lusbench.data.dataset import LUSDataset

# One colour per class in the preview, in class order (more classes cycle).
CLASS_COLOURS = ("#ffd400", "#00d5ff", "#ff3df2", "#ff8c00", "#3d7bff", "#7dff3d", "#ff4040")


SPEC_HELP = "dataset spec (synthetic-lus:size=64, folder:PATH) or the path of a folder dataset"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="scaffold, preview, validate or export a dataset",
                       description="Scaffold a folder dataset, or preview, validate or export any dataset: a registered "
                                   "one (e.g. synthetic-lus:size=64) or a folder (docs/data-format.md).")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    init = actions.add_parser("init", help="write the manifest and tables of a folder dataset from its images and maps",
                              description="Scan PATH/images and PATH/confidence/<class>/ (or PATH/raters/<rater>/<class>/) "
                                          "and write lusbench.json, frames.csv, visits.csv and patients.csv for you to "
                                          "edit. Existing files are kept unless --force.")
    init.add_argument("path", type=Path, metavar="PATH", help="the dataset folder")
    init.add_argument("--images", default="images", metavar="DIR", help="folder of the frames, inside PATH (default images)")
    init.add_argument("--confidence", default="confidence", metavar="DIR",
                      help="folder of per-class confidence maps DIR/<class>/<frame>.png, inside PATH (default confidence)")
    init.add_argument("--raters", default="raters", metavar="DIR",
                      help="folder of per-rater masks DIR/<rater>/<class>/<frame>.png, inside PATH (default raters)")
    init.add_argument("--true", default="true", metavar="DIR",
                      help="folder of true masks DIR/<class>/<frame>.png, inside PATH, if any (default true)")
    init.add_argument("--classes", metavar="A,B,...", help="class names in channel order (default: the class folders)")
    init.add_argument("--scale", type=int, metavar="N",
                      help="confidence scale: the pixel value of 100%% confidence (required with confidence maps; "
                           "default with rater masks: the number of raters)")
    init.add_argument("--pattern", metavar="REGEX",
                      help="regular expression with named groups patient, visit, zone, matched against each frame's "
                           "name (default: p<N>, v<N>, z<N> anywhere in the name, e.g. p12_v1_z3)")
    init.add_argument("--name", metavar="NAME", help="dataset name in the manifest (default: the folder's name)")
    init.add_argument("--force", action="store_true", help="overwrite existing manifest and tables")
    init.set_defaults(func=run_init)

    preview = actions.add_parser("preview", help="save a montage of frames with confidence on a colour scale and true masks",
                                 description="Save a PNG montage: frames across severities, each class's expert "
                                             "confidence on a colour scale (with its colour bar), and the true masks "
                                             "where the dataset has them.")
    preview.add_argument("spec", metavar="DATASET", help=SPEC_HELP)
    preview.add_argument("--out", required=True, type=Path, metavar="PNG", help="image file to write")
    preview.add_argument("--frames", type=int, default=6, metavar="N", help="frames in the montage (default 6)")
    preview.set_defaults(func=run_preview)

    validate = actions.add_parser("validate", help="build a dataset, check it and print a summary",
                                  description="Build the dataset, check its arrays and clinical tables, and print a "
                                              "summary. For a folder dataset every problem is listed, one line each with "
                                              "its file and line. Exit 2 if there is any.")
    validate.add_argument("spec", metavar="DATASET", help=SPEC_HELP)
    validate.set_defaults(func=run_validate)

    export = actions.add_parser("export", help="write a dataset as a folder dataset (or one .npz)",
                                description="Write the dataset in the folder format (docs/data-format.md), or every "
                                            "array to one compressed .npz; written under a temporary name, then "
                                            "renamed. Layouts: docs/cli/data.md.")
    export.add_argument("spec", metavar="DATASET", help=SPEC_HELP)
    export.add_argument("--out", required=True, type=Path, metavar="PATH", help="folder (or .npz file) to write")
    export.add_argument("--format", choices=("folder", "npz"), default=None,
                        help="folder or npz (default: npz if --out ends in .npz, else folder)")
    export.add_argument("--force", action="store_true", help="replace an existing folder dataset at --out")
    export.set_defaults(func=run_export)
    data_sensitivity.add_parser(actions, load_dataset)


def dataset_spec(text: str) -> str:
    """``text`` as a dataset spec: a path to a folder (one holding a ``/``, or an existing directory not named like
    a registered dataset's spec) becomes ``folder:PATH``."""
    name = text.partition(":")[0]
    if "/" in name or name in (".", "..") or (Path(text).is_dir() and ":" not in text and not _registered(name)):
        if any(c in text for c in ",\"'\\"):
            # Quoted as lusbench.api.specs reads it: a comma would otherwise split the path into arguments.
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"folder:{text}"
    return text


def _registered(name: str) -> bool:
    from lusbench.api.plugins import load_plugins

    return name in load_plugins().datasets.names()


def load_dataset(args: argparse.Namespace) -> LUSDataset:
    """Build the dataset named by ``args.spec`` through the plugin registries; UserError if it is not valid."""
    from lusbench.api.plugins import load_plugins
    from lusbench.data.dataset import LUSDataset

    spec = dataset_spec(args.spec)
    dataset = load_plugins(args.plugins).datasets.create(spec, label="dataset")
    if not isinstance(dataset, LUSDataset):
        raise UserError(f"dataset '{spec}': the factory returned {type(dataset).__name__}, not a LUSDataset")
    problem = find_problem(dataset)
    if problem:
        raise UserError(f"dataset '{spec}' is invalid: {problem}")
    return dataset


def find_problem(dataset: LUSDataset) -> str | None:
    """The first inconsistency between the arrays and the clinical tables, or None.

    The array shapes and dtypes were checked when the LUSDataset was built; this checks what they mean. A NaN
    clinical value is an unknown one (the tasks leave its row out), so only known values are checked.
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
            values = np.asarray(dataset.patients.get(column, []), dtype=float)
            if not np.isin(values[~np.isnan(values)], (0, 1)).all():
                return f"clinical column 'patients.{column}' must be 0 or 1"
    if dataset.has_column("visits", "sf_ratio"):
        sf = np.asarray(dataset.visits["sf_ratio"], dtype=float)
        known = sf[~np.isnan(sf)]
        if not np.isfinite(known).all() or (known.size and known.min() <= 0):
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
    from matplotlib.colors import BoundaryNorm, to_rgb
    from matplotlib.patches import Patch

    frames = pick_frames(dataset, args.frames)
    colours = np.array([to_rgb(CLASS_COLOURS[k % len(CLASS_COLOURS)]) for k in range(dataset.n_classes)])
    scale = dataset.confidence_scale
    # Confidence is a quantity, so it gets a colour scale (one colour per level, with a colour bar), one row per
    # class; the true masks are categories, so they get the class colours. The two rows cannot be confused.
    cmap = plt.get_cmap("viridis", scale + 1)
    norm = BoundaryNorm(np.arange(-0.5, scale + 1), scale + 1)
    rows: list[tuple[str, int | None]] = [("B-mode", None)]
    rows += [(f"confidence:\n{name}", k) for k, name in enumerate(dataset.classes)]
    if dataset.true_masks is not None:
        rows.append(("true masks", -1))
    fig, axes = plt.subplots(len(rows), len(frames), figsize=(2.1 * len(frames) + 1.4, 2.1 * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    shown = None
    for col, i in enumerate(frames):
        grey = dataset.images[i].astype(np.float32) / 255.0
        for row, (label, layer) in enumerate(rows):
            ax = axes[row, col]
            if layer is None:
                ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0)
            elif layer >= 0:
                # The frame dimmed underneath; unlabelled pixels (level 0) are left transparent to show it.
                ax.imshow(grey * 0.6, cmap="gray", vmin=0.0, vmax=1.0)
                levels = dataset.confidence[i, layer]
                shown = ax.imshow(np.ma.masked_equal(levels, 0), cmap=cmap, norm=norm, interpolation="nearest")
            else:
                ax.imshow(_overlay(grey, dataset.true_masks[i].astype(np.float32), colours))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
        axes[0, col].set_title(_frame_title(dataset, i), fontsize=9)
    bar = fig.colorbar(shown, ax=axes[1:1 + dataset.n_classes, :].ravel().tolist(), shrink=0.9, aspect=40,
                       ticks=range(scale + 1))
    bar.ax.set_yticklabels([f"{j / scale:.0%}" for j in range(scale + 1)], fontsize=8)
    bar.set_label(f"expert confidence (level / {scale}); unlabelled pixels show the frame", fontsize=9)
    if dataset.true_masks is not None:
        handles = [Patch(color=colours[k], label=name) for k, name in enumerate(dataset.classes)]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9,
                   title="true masks", title_fontsize=9)
    fig.suptitle(f"{dataset.name}: {dataset.n_frames} frames", fontsize=10)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(args.out, png.getvalue())
    print(f"wrote {args.out} ({len(frames)} frames of {dataset.name})")
    return 0


def _overlay(grey: np.ndarray, weight: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGB image: grey frame, with each class's colour blended in where ``weight`` (K, H, W) is 1."""
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
    from lusbench.data.folder import FolderDatasetError

    try:
        dataset = load_dataset(args)
    except FolderDatasetError as exc:
        # Every problem, one line each, so that a dataset is fixed in one pass rather than one error at a time.
        for problem in exc.problems:
            print(f"{Path(exc.root) / problem.file}{'' if problem.line is None else f':{problem.line}'}: {problem.message}",
                  file=sys.stderr)
        count = len(exc.problems)
        raise UserError(f"dataset folder {exc.root}: {count} problem{'s' if count > 1 else ''} (listed above)") from None
    for line in summary_lines(dataset):
        print(line)
    print("valid")
    return 0


def summary_lines(dataset: LUSDataset) -> list[str]:
    """The one-screen summary printed by ``lusbench data validate``."""
    import numpy as np

    h, w = dataset.image_shape
    raters = 1 if dataset.rater_masks is None else dataset.rater_masks.shape[1]
    from lusbench.data.folder.layout import dataset_arrays

    size = sum(a.nbytes for a in dataset_arrays(dataset).values()) / 2**20
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
    known = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    unknown = f", {len(values) - len(known)} unknown" if len(known) < len(values) else ""
    if not len(known):
        return f"{column} (all unknown)"
    if np.isin(known, (0, 1)).all():
        return f"{column} ({known.mean():.0%} = 1{unknown})"
    return f"{column} (mean {known.mean():.4g}, {known.min():.4g}..{known.max():.4g}{unknown})"


def run_export(args: argparse.Namespace) -> int:
    fmt = args.format or ("npz" if args.out.suffix.lower() == ".npz" else "folder")
    _check_parent(args.out)
    dataset = load_dataset(args)
    if fmt == "npz":
        from lusbench.data.folder.layout import dataset_arrays

        arrays = dataset_arrays(dataset)
        atomic_write_npz(args.out, arrays)
        size = args.out.stat().st_size / 2**20
        print(f"wrote {args.out}: {dataset.n_frames} frames, {len(arrays)} arrays, {size:.1f} MiB")
        return 0
    from lusbench.data.folder.export import export_folder

    files = export_folder(dataset, args.out, force=args.force)
    print(f"wrote {args.out}: {dataset.n_frames} frames, {files} files (folder format: lusbench data validate {args.out})")
    return 0


def run_init(args: argparse.Namespace) -> int:
    from lusbench.data.folder.scaffold import scaffold

    result = scaffold(args.path, images=args.images, confidence=args.confidence, raters=args.raters, true=args.true,
                      classes=args.classes.split(",") if args.classes else None, scale=args.scale, pattern=args.pattern,
                      name=args.name, force=args.force)
    for path, text in result.files.items():
        atomic_write_text(path, text)
    for line in result.report:
        print(line)
    print(f"wrote {', '.join(p.name for p in result.files)} in {args.path}: edit them, then lusbench data validate {args.path}")
    return 0


def _check_parent(path: Path) -> None:
    if not path.parent.is_dir():
        raise UserError(f"--out {path}: directory {path.parent} does not exist")
