"""Built-in label strategies through the real registry: specs, canonical names, targets, weights and loss."""

import subprocess
import sys

import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.errors import UserError


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


@pytest.mark.parametrize("spec", ["threshold:0.6", "soft", "weighted"])
def test_targets_keep_shape_dtype_and_device(strategies, spec):
    conf = torch.rand(3, 5, 4, 6)
    target, weight = strategies.create(spec).targets(conf)
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
