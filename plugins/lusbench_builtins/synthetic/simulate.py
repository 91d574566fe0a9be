"""Assemble a LUSDataset: the cohort, then for each chunk of frames a scene, its rendering and its annotation."""

from __future__ import annotations

import numpy as np

from lusbench.data.dataset import LUSDataset
from lusbench_builtins.synthetic.annotation import annotate, assign_raters, expert_exponents
from lusbench_builtins.synthetic.config import SyntheticConfig
from lusbench_builtins.synthetic.echo import visibility
from lusbench_builtins.synthetic.population import clinical_tables, lung_sf_loss, sample_cohort
from lusbench_builtins.synthetic.probe import SectorScan
from lusbench_builtins.synthetic.raster import Grid
from lusbench_builtins.synthetic.rendering import CLASSES, EXTENTS, SpeckleBank, finding_extents, line_bands, render, true_masks
from lusbench_builtins.synthetic.scene import sample_scenes

#: Seed-sequence key of the annotation's own random stream (protocols region and raters): their images and true
#: masks are those of every other protocol at the same seed. Protocol pixel draws from the main stream, as it
#: always has, so a seed gives the arrays it gave before the other protocols existed.
LABEL_STREAM = 1
CHUNK_PIXELS = 2**18  # pixels rendered together: enough to amortize numpy's per-call cost, few enough to stay in cache


def simulate(config: SyntheticConfig) -> LUSDataset:
    """Generate the dataset ``config`` describes; the same config always gives bit-identical arrays."""
    rng = np.random.default_rng(config.seed)
    cohort = sample_cohort(config, rng)
    raters = assign_raters(config, rng)
    label_rng = rng if config.protocol == "pixel" else np.random.default_rng([config.seed, LABEL_STREAM])
    exponents = expert_exponents(config)
    size = config.size
    grid = Grid(size, size)
    bank = SpeckleBank(size, size, rng)
    sector = SectorScan(size) if config.probe == "convex" else None

    n = len(cohort.patient)
    k = len(CLASSES)
    images = np.empty((n, size, size), dtype=np.uint8)
    confidence = np.empty((n, k, size, size), dtype=np.uint8)
    truth = np.empty((n, k, size, size), dtype=bool)
    rater_masks = np.empty((n, config.raters, k, size, size), dtype=bool) if config.raters > 1 else None
    b_lines = np.empty(n, dtype=np.int32)
    extents = {name: np.empty(n, dtype=np.float32) for name in EXTENTS}
    zone_position = ((cohort.zone - 1) / max(config.zones - 1, 1)).astype(np.float32)

    chunk = max(1, CHUNK_PIXELS // (size * size))
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        scene = sample_scenes(config, cohort.severity[part], zone_position[part], rng, size, size)
        lines = line_bands(scene, grid, config.taper)
        image = render(scene, lines, grid, config, bank.draw(part.stop - start, rng))
        seen = visibility(scene, config)
        if sector is None:  # linear probe: beams are image columns, write in place
            annotate(scene, lines, seen, grid, exponents[raters[cohort.patient[part]]], config, label_rng,
                     confidence[part], None if rater_masks is None else rater_masks[part])
            images[part] = image
            truth[part] = true_masks(scene, lines, seen, grid)
        else:
            levels = np.empty_like(confidence[part])
            masks = None if rater_masks is None else np.empty_like(rater_masks[part])
            annotate(scene, lines, seen, grid, exponents[raters[cohort.patient[part]]], config, label_rng, levels, masks)
            images[part] = sector.convert(image)
            truth[part] = sector.convert(true_masks(scene, lines, seen, grid))
            confidence[part] = sector.convert(levels)
            if masks is not None:
                rater_masks[part] = sector.convert(masks)
        b_lines[part] = scene.b_line_count
        for name, values in finding_extents(scene, grid).items():
            extents[name][part] = values

    visits, patients, visit_loss = clinical_tables(config, cohort, lung_sf_loss(config, extents))

    frame_info = {
        "severity": cohort.severity,
        "visit_severity": cohort.visit_severity,
        "risk": cohort.risk,
        "b_line_count": b_lines,
        **extents,
        "visit_sf_loss": visit_loss[cohort.patient, cohort.visit - 1].astype(np.float32),
        **{f"rater{r + 1}_expert": raters[cohort.patient, r] for r in range(config.raters)},
    }
    return LUSDataset(
        name=config.spec(),
        images=images,
        confidence=confidence,
        confidence_scale=config.confidence_scale,
        patient=cohort.patient,
        visit=cohort.visit,
        zone=cohort.zone,
        classes=CLASSES,
        true_masks=truth,
        rater_masks=rater_masks,
        visits=visits,
        patients=patients,
        frame_info=frame_info,
    )
