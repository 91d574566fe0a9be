"""The cohort: patients, visits, zones and frames, their latent severities, and the clinical outcomes.

Severity is a number in [0, 1] (0: normal aerated lung, 1: the worst injury the images show). Each
patient has one severity per visit (a random walk from a Beta-distributed start) and a latent risk that
has nothing to do with the lungs. A zone's severity is the visit's severity, shifted by the zone's
position (lower zones worse) and by noise; every frame of a zone shows that zone severity.

Outcomes are not drawn from the latent severity: they follow from what the frames show. After the scenes
are drawn, each frame's findings are measured (:func:`lusbench_builtins.synthetic.rendering.finding_extents`):
B-line coverage of the pleural line, consolidated area and depth, effusion depth, pleural-line
irregularity. Clinical rules (documented in docs/synthetic-dataset.md):

- Lung S/F loss of a visit = ``sum_k sf_per_k * (extent k averaged over the visit's frames)``.
- S/F ratio of a visit = ``sf_healthy - loss + N(0, sf_noise)``, clipped to the physiologic range 75..476.
- S/F change class of a patient = 1 (improved) when S/F at the last visit exceeds S/F at the first by at
  least ``sf_change_margin``, else 0. Only defined with two visits or more.
- 30-day readmission ~ Bernoulli(sigmoid(readmit_intercept + readmit_lung * last-visit loss / 100 +
  readmit_risk * latent risk)), latent risk ~ N(0, 1).

The outcome noise is drawn with the severities, before any scene, so that the images of a seed do not
depend on the clinical parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lusbench_builtins.synthetic.config import SyntheticConfig

SF_MIN, SF_MAX = 75.0, 476.0


@dataclass
class Cohort:
    """Frame metadata (one row per frame), the latent variables and the outcome noise of a simulated cohort."""

    patient: np.ndarray  # (N,) int32, patients numbered from 0
    visit: np.ndarray  # (N,) int32, visits numbered from 1
    zone: np.ndarray  # (N,) int32, zones numbered from 1
    severity: np.ndarray  # (N,) float32 zone severity shown by the frame
    visit_severity: np.ndarray  # (N,) float32 mean zone severity of the frame's visit
    risk: np.ndarray  # (N,) float32 the patient's latent non-lung risk (drives readmission)
    patient_risk: np.ndarray  # (P,) the same latent risk, per patient
    sf_noise: np.ndarray  # (P, V) standard normal S/F noise of each visit
    readmit_draw: np.ndarray  # (P,) uniform draw that decides readmission


def sample_cohort(config: SyntheticConfig, rng: np.random.Generator) -> Cohort:
    """Draw severities and the outcome noise for ``config.patients`` patients."""
    n_pat, n_vis, n_zone = config.patients, config.visits, config.zones
    start = rng.beta(config.severity_a, config.severity_b, size=n_pat)
    steps = rng.normal(config.change_mean, config.change_sd, size=(n_pat, n_vis - 1))
    visit_sev = np.empty((n_pat, n_vis))
    visit_sev[:, 0] = start
    for v in range(1, n_vis):
        visit_sev[:, v] = np.clip(visit_sev[:, v - 1] + steps[:, v - 1], 0.0, 1.0)

    # Zones are ordered from upper-anterior to lower-posterior; lower zones are worse by zone_gradient.
    position = np.linspace(-0.5, 0.5, n_zone) if n_zone > 1 else np.zeros(1)
    zone_sev = visit_sev[:, :, None] + config.zone_gradient * position + rng.normal(0.0, config.zone_sd, (n_pat, n_vis, n_zone))
    zone_sev = np.clip(zone_sev, 0.0, 1.0)
    lung_score = zone_sev.mean(axis=2)  # (P, V): the severity the images show, averaged over zones
    sf_noise = rng.standard_normal(lung_score.shape)
    risk = rng.standard_normal(n_pat)
    readmit_draw = rng.random(n_pat)

    # Frames: patient-major, then visit, zone, frame within the zone.
    grid = np.indices((n_pat, n_vis, n_zone, config.frames)).reshape(4, -1)
    return Cohort(
        patient=grid[0].astype(np.int32),
        visit=(grid[1] + 1).astype(np.int32),
        zone=(grid[2] + 1).astype(np.int32),
        severity=zone_sev[grid[0], grid[1], grid[2]].astype(np.float32),
        visit_severity=lung_score[grid[0], grid[1]].astype(np.float32),
        risk=risk[grid[0]].astype(np.float32),
        patient_risk=risk,
        sf_noise=sf_noise,
        readmit_draw=readmit_draw,
    )


def lung_sf_loss(config: SyntheticConfig, extents: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) S/F each frame's findings cost: the weighted sum of its measured extents (``EXTENTS`` order)."""
    weights = {"b_line_coverage": config.sf_per_b_lines, "consolidation_area": config.sf_per_consolidation_area,
               "consolidation_depth": config.sf_per_consolidation_depth, "effusion_depth": config.sf_per_effusion,
               "pleural_irregularity": config.sf_per_irregularity}
    return sum(weights[name] * np.asarray(values, dtype=np.float64) for name, values in extents.items())


def clinical_tables(config: SyntheticConfig, cohort: Cohort, frame_loss: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """The visits and patients tables, and each visit's lung S/F loss ``(P, V)``, from the frames' S/F losses."""
    n_pat, n_vis = cohort.sf_noise.shape
    # Frames are patient-major then visit, with the same number per visit: a reshape groups them by visit.
    loss = frame_loss.reshape(n_pat, n_vis, -1).mean(axis=2)
    sf = np.clip(config.sf_healthy - loss + config.sf_noise * cohort.sf_noise, SF_MIN, SF_MAX)
    logit = config.readmit_intercept + config.readmit_lung * loss[:, -1] / 100.0 + config.readmit_risk * cohort.patient_risk
    readmitted = cohort.readmit_draw < 1.0 / (1.0 + np.exp(-logit))

    pat_ids = np.arange(n_pat, dtype=np.int32)
    patients = {"patient": pat_ids}
    if n_vis >= 2:
        patients["sf_change"] = (sf[:, -1] - sf[:, 0] >= config.sf_change_margin).astype(np.int32)
    patients["readmission_30d"] = readmitted.astype(np.int32)
    visits = {
        "patient": np.repeat(pat_ids, n_vis),
        "visit": np.tile(np.arange(1, n_vis + 1, dtype=np.int32), n_pat),
        "sf_ratio": sf.reshape(-1).astype(np.float32),
    }
    return visits, patients, loss
