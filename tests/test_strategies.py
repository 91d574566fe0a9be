"""Built-in label strategies through the real registry: specs, canonical names, targets, weights and loss."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.data.dataset import LUSDataset
from lusbench.data.staple import staple
from lusbench.errors import UserError
from lusbench.train.strategy import check_servable, check_strategy, strategy_targets


@pytest.fixture(scope="module")
def strategies():
    return load_plugins().strategies


def levels() -> torch.Tensor:
    """Every confidence level of a 0..10 scale, as float32 computed the way dataset_tensors does it."""
    return (torch.arange(11, dtype=torch.uint8).float() / 10.0).view(1, 1, 1, 11)


@pytest.mark.parametrize(("spec", "name"), [
    ("threshold:0.6", "threshold:0.6"),
    ("threshold:0.60", "threshold:0.6"),
    ("threshold:1", "threshold:1"),
    ("threshold:1.0", "threshold:1"),
    ("soft", "soft"),
    ("weighted", "weighted"),
    ("weighted:0.1", "weighted"),
    ("weighted:0.25", "weighted:0.25"),
    ("weighted:weight=c", "weighted:weight=c"),
    ("weighted:0.2,weight=c", "weighted:0.2,weight=c"),
    ("weighted:0.1,weight=agreement", "weighted"),
    ("band:0.20,0.8", "band:0.2,0.8"),
    ("smooth", "smooth:0.1"),
    ("smooth:0.05", "smooth:0.05"),
    ("svls", "svls:1"),
    ("svls:2.0", "svls:2"),
    ("stochastic-threshold:0.3,0.70", "stochastic-threshold:0.3,0.7"),
    ("random-rater", "random-rater"),
    ("staple", "staple:soft"),
    ("staple:soft", "staple:soft"),
    ("staple:0.50", "staple:0.5"),
])
def test_canonical_names(strategies, spec, name):
    assert strategies.create(spec).name == name


@pytest.mark.parametrize(("spec", "message"), [
    ("threshold:1.7", "(0, 1]"),
    ("threshold:abc", "must be a number"),
    ("threshold:0", "(0, 1]"),
    ("threshold", "needs a threshold"),
    ("threshold:0.5,0.6", "unexpected"),
    ("threshold:0.5,x=1", "unexpected"),
    ("soft:0.5", "unexpected"),
    ("weighted:2", "[0, 1]"),
    ("weighted:0.1,0.2", "unexpected"),
    ("weighted:weight=d", "one of agreement, c"),
    ("band", "needs two numbers"),
    ("band:0.8,0.2", "LO < HI"),
    ("band:0.5,0.5", "LO < HI"),
    ("band:-0.1,0.5", "[0, 1]"),
    ("band:0.1,0.5,0.9", "unexpected"),
    ("smooth:1", "[0, 1)"),
    ("smooth:x", "must be a number"),
    ("svls:0", "(0, 10]"),
    ("svls:nan", "(0, 10]"),
    ("stochastic-threshold:0,0.5", "(0, 1]"),
    ("stochastic-threshold:0.7,0.3", "LO < HI"),
    ("stochastic-threshold:0.5", "needs two numbers"),
    ("random-rater:2", "unexpected"),
    ("staple:hard", "must be a number"),
    ("staple:0", "(0, 1]"),
])
def test_bad_arguments_are_one_line_user_errors(strategies, spec, message):
    with pytest.raises(UserError) as info:
        strategies.create(spec)
    text = str(info.value)
    assert "\n" not in text and spec in text and message in text


def test_threshold_includes_the_level_itself(strategies):
    target, weight = strategies.create("threshold:0.6").targets(levels())
    assert weight is None
    assert target.flatten().tolist() == [0.0] * 6 + [1.0] * 5
    assert strategies.create("threshold:1").targets(levels())[0].flatten().tolist() == [0.0] * 10 + [1.0]


def test_soft_targets_are_the_confidence(strategies):
    conf = torch.rand(2, 5, 8, 8)
    target, weight = strategies.create("soft").targets(conf)
    assert weight is None and torch.equal(target, conf)


def test_weighted_weight_function(strategies):
    target, weight = strategies.create("weighted").targets(torch.tensor([0.0, 0.3, 0.5, 0.8, 1.0]).view(1, 1, 1, 5))
    assert target.flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert weight.flatten().tolist() == pytest.approx([1.0, 0.4, 0.1, 0.6, 1.0])
    _, no_floor = strategies.create("weighted:0").targets(torch.tensor([0.5]).view(1, 1, 1, 1))
    assert no_floor.item() == 0.0


ALL_BUILTINS = ["threshold:0.6", "soft", "weighted", "weighted:weight=c", "band:0.2,0.8", "smooth:0.1", "svls:1",
                "stochastic-threshold:0.3,0.7", "random-rater", "staple:soft", "staple:0.5"]


@pytest.mark.parametrize("spec", ALL_BUILTINS)
def test_targets_keep_shape_dtype_and_device(strategies, spec):
    conf = torch.rand(3, 5, 4, 6)
    raters = torch.rand(3, 3, 5, 4, 6) < conf
    target, weight = strategy_targets(strategies.create(spec), conf, raters)
    assert target.shape == conf.shape and target.dtype == conf.dtype and target.device == conf.device
    assert weight is None or (weight.shape == conf.shape and weight.device == conf.device)


def test_zero_weight_pixels_do_not_move_the_loss(strategies):
    strategy = strategies.create("weighted:0")
    conf = torch.rand(2, 5, 8, 8)
    conf[:, :, :4] = 0.5  # experts split: weight 0 with floor 0
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    loss = strategy.loss(logits, *strategy.targets(conf))
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad[:, :, :4].abs().max() == 0
    assert logits.grad[:, :, 4:].abs().max() > 0


def test_descriptions_come_from_factory_docstrings(strategies):
    for entry in strategies.entries():
        if entry.plugin == "label-strategies":
            assert len(entry.summary) > 20


def test_registering_does_not_import_torch():
    code = ("import sys, lusbench_builtins.strategies, lusbench_builtins.models; "
            "heavy = [m for m in ('torch', 'segmentation_models_pytorch') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_strategies_declare_what_they_are_swept_over():
    from lusbench_builtins.strategies import soft, threshold, weighted

    assert threshold("0.6").sweep() == {"family": "threshold", "parameter": "t", "value": 0.6}
    assert weighted("0.2").sweep() == {"family": "weighted", "parameter": "floor", "value": 0.2}
    assert soft().sweep() is None


@pytest.mark.parametrize(("spec", "parameter", "value"), [
    ("band:0.2,0.8", "lo", 0.2), ("smooth:0.05", "eps", 0.05), ("svls:2", "sigma", 2.0),
    ("stochastic-threshold:0.3,0.7", "lo", 0.3), ("staple:0.6", "t", 0.6), ("weighted:0.3,weight=c", "floor", 0.3),
])
def test_new_strategies_declare_their_sweep_parameter(strategies, spec, parameter, value):
    assert strategies.create(spec).sweep() == {"family": spec.partition(":")[0], "parameter": parameter, "value": value}


@pytest.mark.parametrize("spec", ["random-rater", "staple:soft"])
def test_no_sweep_without_a_number(strategies, spec):
    assert strategies.create(spec).sweep() is None


def test_the_builtins_are_registered_and_the_literature_ones_cite_their_source(strategies):
    from lusbench_builtins import strategies as module

    names = {e.name for e in strategies.entries() if e.plugin == "label-strategies"}
    assert names == {"threshold", "soft", "weighted", "band", "smooth", "svls", "stochastic-threshold", "random-rater",
                     "staple"}
    assert {spec.partition(":")[0] for spec in ALL_BUILTINS} == names  # the shape test above covers every one
    for cls in (module.SVLSStrategy, module.SmoothStrategy, module.StapleStrategy, module.RandomRaterStrategy):
        assert any(year in cls.__doc__ for year in ("2004", "2016", "2019", "2021"))


# Planted examples: each strategy does what its docstring claims.

def test_band_ignores_exactly_the_hesitant_levels(strategies):
    target, weight = strategies.create("band:0.2,0.8").targets(levels())
    assert target.flatten().tolist() == [0.0] * 8 + [1.0] * 3
    assert weight.flatten().tolist() == [1.0] * 3 + [0.0] * 5 + [1.0] * 3
    logits = torch.randn(1, 1, 1, 11, requires_grad=True)
    strategies.create("band:0.2,0.8").loss(logits, target, weight).backward()
    assert logits.grad[..., 3:8].abs().max() == 0 and logits.grad[..., :3].abs().min() > 0


def test_smooth_moves_hard_targets_in_by_half_eps(strategies):
    target, weight = strategies.create("smooth:0.2").targets(levels())
    assert weight is None
    assert target.flatten().tolist() == pytest.approx([0.1] * 5 + [0.9] * 6)
    assert strategies.create("smooth:0").targets(levels())[0].flatten().tolist() == [0.0] * 5 + [1.0] * 6


def test_weighted_by_c_weights_each_pixel_by_its_confidence(strategies):
    target, weight = strategies.create("weighted:0.1,weight=c").targets(levels())
    assert target.flatten().tolist() == [0.0] * 5 + [1.0] * 6
    assert weight.flatten().tolist() == pytest.approx([0.1, 0.1] + [i / 10 for i in range(2, 11)])


def test_svls_spreads_a_single_pixel_by_the_papers_kernel(strategies):
    conf = torch.zeros(1, 2, 7, 7)
    conf[0, 1, 3, 3] = 1.0
    target, weight = strategies.create("svls:1").targets(conf)
    assert weight is None and target[0, 0].abs().max() == 0
    # Gaussian exp(-d^2 / 2) with the centre replaced by the neighbours' sum, normalised: centre 1/2.
    edge, corner = math.exp(-0.5), math.exp(-1.0)
    total = 2 * (4 * edge + 4 * corner)
    expected = torch.tensor([[corner, edge, corner], [edge, total / 2, edge], [corner, edge, corner]]) / total
    assert torch.allclose(target[0, 1, 2:5, 2:5], expected, atol=1e-6)
    assert target[0, 1].sum().item() == pytest.approx(1.0)
    assert target[0, 1, 3, 3].item() == pytest.approx(0.5)


def test_svls_keeps_interiors_and_softens_only_boundaries(strategies):
    conf = torch.zeros(1, 1, 8, 8)
    conf[..., 4:] = 1.0  # left half 0, right half 1
    target, _ = strategies.create("svls:1").targets(conf)
    assert torch.all(target[..., :3] == 0) and torch.allclose(target[..., 5:], torch.ones(1, 1, 8, 3))
    assert torch.all((target[..., 3] > 0) & (target[..., 3] < 0.5))  # the last background column, every row
    assert torch.all((target[..., 4] > 0.5) & (target[..., 4] < 1))  # replicate padding: edge rows too
    wide = strategies.create("svls:5").targets(conf)[0]
    assert torch.all(wide[..., 3] > target[..., 3])  # a wider Gaussian moves more mass across the edge


def test_stochastic_threshold_draws_one_threshold_per_sample_in_range(strategies):
    strategy = strategies.create("stochastic-threshold:0.25,0.75")
    conf = levels().expand(400, 1, 1, 11)
    target, weight = strategy.targets(conf, generator=torch.Generator().manual_seed(3))
    assert weight is None
    steps = (1 - target).sum((1, 2, 3)).long()  # the number of levels below each sample's threshold
    for i, first_positive in enumerate(steps.tolist()):  # a step function: 0 below the threshold, 1 from it on
        assert target[i].flatten().tolist() == [0.0] * first_positive + [1.0] * (11 - first_positive)
    # thresholds in [0.25, 0.75] put the first positive level at 0.3 .. 0.7 (or 0.8 for t above 0.7); all occur
    assert set(steps.tolist()) == {3, 4, 5, 6, 7, 8}
    again, _ = strategy.targets(conf, generator=torch.Generator().manual_seed(3))
    other, _ = strategy.targets(conf, generator=torch.Generator().manual_seed(4))
    assert torch.equal(target, again) and not torch.equal(target, other)


def planted_raters(b=64):
    """Three raters with distinct masks on (b, 1, 4, 4) frames: rater j marks column j only."""
    raters = torch.zeros(b, 3, 1, 4, 4, dtype=torch.bool)
    for j in range(3):
        raters[:, j, :, :, j] = True
    return raters


def test_random_rater_trains_on_one_raters_own_mask_per_sample(strategies):
    strategy = strategies.create("random-rater")
    raters = planted_raters(300)
    conf = raters.float().mean(1)
    target, weight = strategy.targets(conf, raters=raters, generator=torch.Generator().manual_seed(0))
    assert weight is None and target.dtype == conf.dtype
    picks = target[:, 0].sum(1).argmax(-1)  # the column each sample's target marks
    for i, j in enumerate(picks.tolist()):
        assert torch.equal(target[i], raters[i, j].float())
    counts = torch.bincount(picks, minlength=3).tolist()
    assert min(counts) > 70  # uniform: 100 expected each
    again, _ = strategy.targets(conf, raters=raters, generator=torch.Generator().manual_seed(0))
    assert torch.equal(target, again)


def test_staple_follows_the_good_rater_where_a_mean_threshold_follows_the_noisy_pair(strategies):
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(4, 2, 32, 32, generator=gen) < 0.3
    flips = torch.tensor([0.02, 0.3, 0.3]).view(1, 3, 1, 1, 1)
    raters = truth[:, None] ^ (torch.rand(4, 3, 2, 32, 32, generator=gen) < flips)
    conf = raters.float().mean(1)
    soft_target, _ = strategies.create("staple:soft").targets(conf, raters=raters)
    for b in range(4):
        for k in range(2):
            np.testing.assert_allclose(soft_target[b, k].numpy(), staple(raters[b, :, k].numpy()), atol=1e-6)
    hard, _ = strategies.create("staple:0.5").targets(conf, raters=raters)
    vote, _ = strategies.create("threshold:0.5").targets(conf)
    outvoted = (raters[:, 1] == raters[:, 2]) & (raters[:, 0] != raters[:, 1])
    assert torch.equal(hard[outvoted], raters[:, 0][outvoted].float())
    assert torch.equal(vote[outvoted], raters[:, 1][outvoted].float())
    assert (hard.bool() == truth).float().mean() > (vote.bool() == truth).float().mean() + 0.05


def test_staple_of_agreeing_raters_is_their_mask(strategies):
    raters = planted_raters(2)[:, :1].expand(2, 3, 1, 4, 4)
    target, _ = strategies.create("staple:soft").targets(raters.float().mean(1), raters=raters)
    assert torch.allclose(target, raters[:, 0].float(), atol=1e-4)


# The rater contract: who gets which arguments, and a dataset that cannot serve a strategy.

def test_only_strategies_that_ask_receive_raters_and_a_generator(strategies):
    class Plain:  # an outside strategy with the one-argument form, not even subclassing LabelStrategy
        name = "plain"

        def targets(self, confidence):
            return confidence, None

    conf = torch.rand(2, 1, 4, 4)
    assert torch.equal(strategy_targets(Plain(), conf, planted_raters(2), torch.Generator())[0], conf)
    with pytest.raises(ValueError, match="needs rater masks"):
        strategy_targets(strategies.create("random-rater"), conf)
    # Without a generator, a stochastic strategy gets a fixed one: the same draw every time.
    first = strategy_targets(strategies.create("stochastic-threshold:0.2,0.9"), levels().expand(50, 1, 1, 11))[0]
    assert torch.equal(first, strategy_targets(strategies.create("stochastic-threshold:0.2,0.9"),
                                               levels().expand(50, 1, 1, 11))[0])


def test_check_strategy_passes_raters_to_rater_strategies(strategies):
    raters = planted_raters(4)
    check_strategy(strategies.create("random-rater"), raters.float().mean(1), raters)
    check_strategy(strategies.create("staple:soft"), raters.float().mean(1), raters)


def _dataset(raters: bool) -> LUSDataset:
    n, k = 2, 1
    rater_masks = np.zeros((n, 3, k, 4, 4), dtype=bool) if raters else None
    return LUSDataset(name="tiny", images=np.zeros((n, 4, 4), np.uint8), confidence=np.zeros((n, k, 4, 4), np.uint8),
                      confidence_scale=10, patient=np.arange(n), visit=np.ones(n, int), zone=np.zeros(n, int),
                      classes=("a",), rater_masks=rater_masks)


@pytest.mark.parametrize("spec", ["random-rater", "staple:soft", "staple:0.5"])
def test_rater_strategy_on_a_dataset_without_raters_is_one_line(strategies, spec):
    strategy = strategies.create(spec)
    check_servable(strategy, _dataset(raters=True))
    with pytest.raises(UserError) as info:
        check_servable(strategy, _dataset(raters=False))
    text = str(info.value)
    assert "\n" not in text and f"'{strategy.name}'" in text and "'tiny'" in text


@pytest.mark.parametrize("spec", ["threshold:0.5", "soft", "band:0.2,0.8", "stochastic-threshold:0.3,0.7"])
def test_confidence_strategies_serve_any_dataset(strategies, spec):
    check_servable(strategies.create(spec), _dataset(raters=False))


def test_training_keys_include_rater_masks_only_for_rater_strategies(strategies):
    from lusbench.results.keys import training_fields

    a, b = _dataset(raters=True), _dataset(raters=True)
    b.rater_masks[0, 1, 0, 2, 2] = True
    for spec in ALL_BUILTINS:
        strategy = strategies.create(spec)
        changed = a.content_hash(training_fields(strategy)) != b.content_hash(training_fields(strategy))
        assert changed == strategy.needs_raters, spec


def test_the_plugin_guides_rater_strategy_example_runs():
    """The ``FirstRater`` example of docs/plugin-guide.md, executed as written, through the engine's call."""
    from lusbench.train.strategy import LabelStrategy

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugin-guide.md").read_text()
    section = guide[guide.index("## Strategies that see the raters"):]
    namespace = {"LabelStrategy": LabelStrategy}
    exec(section[section.index("```python\n") + 10:section.index("```", section.index("```python\n") + 10)], namespace)
    raters = planted_raters(3)
    target, weight = strategy_targets(namespace["FirstRater"](), raters.float().mean(1), raters)
    assert torch.equal(target, raters[:, 0].float()) and weight is None
