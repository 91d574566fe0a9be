"""`lusbench strategies show`: a real PNG with one panel pair per frame and strategy; bad input is one line, exit 2."""

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from lusbench.api.plugins import load_plugins
from lusbench.cli.strategies import _frames, draw

TINY = "synthetic-lus:patients=4,size=32"
RATERS = "synthetic-lus:patients=4,size=32,raters=3"


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def test_writes_a_png_with_one_row_per_strategy(tmp_path):
    out = tmp_path / "show.png"
    proc = run_cli("strategies", "show", "threshold:0.5", "random-rater", "staple:soft", "--dataset", RATERS,
                   "--out", str(out), "--frames", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}: 2 frames x 3 strategies, class ")
    with Image.open(out) as image:
        assert image.format == "PNG"
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # drawn panels and colour bars, not an empty canvas


def test_panel_layout_and_what_each_panel_shows(plugins):
    dataset = plugins.datasets.create(RATERS)
    strategies = [plugins.strategies.create(s) for s in ("band:0.2,0.8", "soft", "stochastic-threshold:0.3,0.7")]
    k = 2
    frames = _frames(dataset, k, 3)
    figure = draw(dataset, strategies, frames, k, seed=0)
    panels = [ax for ax in figure.axes if ax.images]
    colorbars = [ax for ax in figure.axes if not ax.images]
    assert len(panels) == (1 + 3) * 2 * 3 and len(colorbars) == 3
    grid = np.array(panels).reshape(4, 6)
    conf = dataset.confidence_float()[frames, k]
    np.testing.assert_array_equal(grid[0, 0].images[0].get_array(), dataset.images[frames[0]])
    np.testing.assert_allclose(grid[0, 1].images[0].get_array(), conf[0])
    # band: hard target at HI, zero weight in the band; soft: the confidence, uniform weight
    np.testing.assert_array_equal(grid[1, 2].images[0].get_array(), (conf[1] >= 0.8 - 1e-6).astype(np.float32))
    band_weight = grid[1, 3].images[0].get_array()
    assert set(np.unique(band_weight)) <= {0.0, 1.0}
    np.testing.assert_allclose(grid[2, 0].images[0].get_array(), conf[0])
    assert grid[2, 1].get_title() == "weight (uniform)" and grid[3, 0].get_title() == "target (one draw)"


def test_frames_are_those_with_the_most_uncertain_pixels(plugins):
    dataset = plugins.datasets.create(TINY)
    levels = dataset.confidence[:, 1]
    uncertain = ((levels > 0) & (levels < dataset.confidence_scale)).sum((1, 2))
    chosen = _frames(dataset, 1, 3)
    assert list(chosen) == sorted(chosen)
    assert uncertain[chosen].min() >= np.sort(uncertain)[-3]


@pytest.mark.parametrize(("args", "message"), [
    (("nosuch",), "SPEC 'nosuch': unknown name 'nosuch'"),
    (("threshold:2",), "SPEC 'threshold:2': threshold must be in (0, 1], got 2"),
    (("threshold:0.9..0.1/0.1",), "B must not be below A"),
    (("random-rater", "--dataset", TINY), "strategy 'random-rater' trains on per-rater masks, and dataset"),
    (("soft", "--frames", "0"), "--frames must be in 1..8"),
    (("soft", "--class", "ribs", "--dataset", TINY), "--class ribs: dataset"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    out = tmp_path / "x.png"
    proc = run_cli("strategies", "show", *args, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and not out.exists()


def test_out_must_be_a_png(tmp_path):
    proc = run_cli("strategies", "show", "soft", "--out", str(tmp_path / "x.jpg"))
    assert proc.returncode == 2 and "expected a .png file" in proc.stderr
