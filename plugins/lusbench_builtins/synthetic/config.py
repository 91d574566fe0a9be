"""Every parameter of the synthetic lung-ultrasound simulator, with its default and its allowed range.

A spec such as ``synthetic-lus:patients=40,size=64,seed=3`` overrides fields by name; the values arrive
as strings and are parsed and range-checked here, so a bad value fails with a one-line message naming
its key. ``docs/synthetic-dataset.md`` explains what each parameter models.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

DATASET_NAME = "synthetic-lus"


def _param(default: Any, doc: str, low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its documentation and the range (or choices) a spec value must fall in."""
    return field(default=default, metadata={"doc": doc, "low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the simulator. Units: depths and widths are fractions of the image height / width."""

    # Cohort
    patients: int = _param(300, "number of patients", 1, 100_000)
    visits: int = _param(2, "visits per patient (the S/F change class needs at least 2)", 1, 20)
    zones: int = _param(6, "lung zones scanned per visit, ordered from upper-anterior to lower-posterior", 1, 32)
    frames: int = _param(1, "frames per zone and visit", 1, 64)
    seed: int = _param(0, "seed of every random draw; same seed and parameters give bit-identical arrays", 0, 2**63 - 1)

    # Latent severity
    severity_a: float = _param(2.0, "Beta(a, b) distribution of the patient's visit-1 severity: a", 0.05, 100)
    severity_b: float = _param(2.5, "Beta(a, b) distribution of the patient's visit-1 severity: b", 0.05, 100)
    change_mean: float = _param(-0.05, "mean severity change from one visit to the next (negative: improving)", -1, 1)
    change_sd: float = _param(0.2, "standard deviation of the severity change between visits", 0, 1)
    zone_gradient: float = _param(0.3, "severity added from the first zone to the last (lower zones are worse)", -1, 1)
    zone_sd: float = _param(0.1, "per-zone severity noise around the visit severity", 0, 1)

    # Clinical layer: outcomes from the findings' measured extent (docs/synthetic-dataset.md, "Clinical rules")
    sf_healthy: float = _param(460.0, "S/F ratio of lungs without findings (before noise)", 75, 476)
    sf_per_b_lines: float = _param(400.0, "S/F lost per unit of B-line coverage of the pleural line, averaged over zones",
                                   0, 2000)
    sf_per_consolidation_area: float = _param(500.0, "S/F lost per unit of consolidated area (fraction of the image), "
                                              "averaged over zones", 0, 5000)
    sf_per_consolidation_depth: float = _param(250.0, "S/F lost per unit of consolidation depth (fraction of the image "
                                               "height), averaged over zones", 0, 5000)
    sf_per_effusion: float = _param(200.0, "S/F lost per unit of effusion depth (fraction of the image height), "
                                    "averaged over zones", 0, 5000)
    sf_per_irregularity: float = _param(5000.0, "S/F lost per unit of pleural-line irregularity (RMS depth deviation, "
                                        "fraction of the image height), averaged over zones", 0, 50000)
    sf_noise: float = _param(20.0, "standard deviation of the S/F noise not explained by the lungs", 0, 200)
    sf_change_margin: float = _param(20.0, "S/F rise from the first to the last visit that counts as improved", 0, 400)
    readmit_intercept: float = _param(-3.4, "readmission log-odds of a patient without lung findings and average risk",
                                      -20, 20)
    readmit_lung: float = _param(1.0, "readmission log-odds added per 100 of S/F the lungs cost at the last visit", -20, 20)
    readmit_risk: float = _param(1.0, "readmission log-odds added per SD of the latent non-lung risk", -20, 20)

    # Image layer
    size: int = _param(128, "image height and width in pixels", 32, 256)
    probe: str = _param("linear", "probe geometry: linear (rectangle) or convex (curvilinear sector)",
                        choices=("linear", "convex"))
    b_line_rate: float = _param(6.0, "mean number of B-lines per frame at severity 1 (scales with severity^1.5)", 0, 20)
    consolidation_onset: float = _param(0.5, "zone severity at which a subpleural consolidation has a 50% chance", 0, 2)
    effusion_onset: float = _param(0.6, "zone severity (plus lower-zone bonus) at which an effusion has a 50% chance", 0, 2)
    mimic_rate: float = _param(1.0, "mean number of finding mimics per frame (Z-line streaks, dark speckle clusters)", 0, 10)
    attenuation: float = _param(1.2, "mean depth attenuation of the echo (nepers over the image depth)", 0, 5)
    noise_floor: float = _param(0.0002, "electronic noise power relative to the pleural line's echo", 0, 1)
    dynamic_range: float = _param(40.0, "log compression: dB of echo between white (the pleural line) and black", 20, 100)

    # Annotation layer
    protocol: str = _param("region", "annotation protocol: region (one confidence per outlined finding), pixel (confidence "
                           "tapering pixel by pixel) or raters (binary masks of several raters, confidence = their vote)",
                           choices=("region", "pixel", "raters"))
    confidence_scale: int = _param(10, "confidence is stored as levels 0..confidence_scale (10: 0..100% by 10%)", 1, 255)
    raters: int = _param(1, "experts who label each frame (several: per-rater masks are kept)", 1, 16)
    experts: int = _param(3, "size of the expert pool the raters of each patient are drawn from", 1, 64)
    expert_style: float = _param(0.4, "spread of expert styles: confidence exponents from e^-x (over-) to e^x (under-confident)",
                                 0, 3)
    confidence_source: str = _param("mean", "dataset confidence: mean of the raters' confidences, or agreement of their masks",
                                     choices=("mean", "agreement"))
    visibility_half: float = _param(0.5, "echo contrast (relative) at which a finding is half visible", 0.01, 10)
    detect_half: float = _param(0.25, "visibility at which an expert notices a true finding half the time", 0, 1)
    mimic_label_prob: float = _param(0.5, "chance that an expert labels a visible mimic as the finding it resembles", 0, 1)
    mimic_confidence: float = _param(0.4, "highest confidence an expert gives a mimic", 0, 1)
    perception_sd: float = _param(0.15, "log-SD of the expert's per-finding over- or under-estimate of visibility", 0, 2)
    outline_sd: float = _param(0.02, "protocols region, raters: SD of an outlined boundary's misplacement (fraction of the "
                               "image) for a finding the expert is barely sure of; it shrinks to 0 with certainty", 0, 0.1)
    outline_level: float = _param(0.5, "protocols region, raters: perceived visibility from which an expert includes a "
                                  "column of the pleural line or of an A-line in its outline", 0, 1)
    extent_sd: float = _param(0.35, "protocol pixel: SD of the expert's misplacement of a finding's boundary, in units of "
                              "its taper", 0, 5)
    taper: float = _param(0.03, "protocol pixel: width (fraction of the image) over which confidence tapers across a "
                          "finding's boundary", 0, 0.2)

    def __post_init__(self) -> None:
        if self.raters > self.experts:
            raise ValueError(f"raters={self.raters} exceeds experts={self.experts}: each frame's raters are distinct experts")
        if self.protocol == "raters" and self.raters < 2:
            raise ValueError(f"protocol=raters needs raters >= 2 (got raters={self.raters}): its confidence is the raters' "
                             "vote, e.g. synthetic-lus:protocol=raters,raters=3")

    def spec(self) -> str:
        """The canonical spec string: the dataset name and every field that differs from its default."""
        changed = [f"{f.name}={_format(getattr(self, f.name))}" for f in fields(self) if getattr(self, f.name) != f.default]
        return DATASET_NAME + (":" + ",".join(changed) if changed else "")


def _format(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def config_from_args(*args: str, **kwargs: Any) -> SyntheticConfig:
    """Build a config from spec arguments (strings, or values of the field's type); ValueError names the bad key."""
    if args:
        raise ValueError(f"{DATASET_NAME} takes key=value arguments only, got '{args[0]}'")
    by_name = {f.name: f for f in fields(SyntheticConfig)}
    values: dict[str, Any] = {}
    for key, raw in kwargs.items():
        spec_field = by_name.get(key)
        if spec_field is None:
            raise ValueError(f"unknown argument '{key}' (known: {', '.join(by_name)})")
        values[key] = _parse(key, raw, spec_field.default, spec_field.metadata)
    config = SyntheticConfig()
    return replace(config, **values) if values else config


def _parse(key: str, raw: Any, default: Any, meta: dict[str, Any]) -> Any:
    text = str(raw).strip()
    kind = type(default)
    if kind is str:
        if text not in meta["choices"]:
            raise ValueError(f"{key}={text!r}: expected one of {', '.join(meta['choices'])}")
        return text
    try:
        value = int(text) if kind is int else float(text)
    except ValueError:
        raise ValueError(f"{key}={text!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if value != value or not meta["low"] <= value <= meta["high"]:  # value != value: NaN
        raise ValueError(f"{key}={text}: must be between {_format(kind(meta['low']))} and {_format(kind(meta['high']))}")
    return value

