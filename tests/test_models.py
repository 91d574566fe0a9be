"""Built-in smp models through the real registry: specs, shapes, fresh weights, local encoder weights."""

import pytest
import torch

from lusbench.api.plugins import load_plugins
from lusbench.errors import UserError


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return load_plugins().models


@pytest.mark.parametrize(("spec", "name"), [
    ("unet", "unet:resnet18"),
    ("unet:resnet18", "unet:resnet18"),
    ("unet:resnet18,depth=4,decoder=64-32-16-8", "unet:resnet18"),
    ("unet:mobilenet_v2,depth=3", "unet:mobilenet_v2,depth=3"),
    ("unet:resnet18,decoder=32-16-8-8", "unet:resnet18,decoder=32-16-8-8"),
    ("fpn", "fpn:resnet18"),
    ("fpn:resnet18,depth=5,decoder=128-64", "fpn:resnet18,depth=5,decoder=128-64"),
    ("unetplusplus:resnet18,depth=3", "unetplusplus:resnet18,depth=3"),
    ("unet:tu-resnet10t", "unet:tu-resnet10t"),
])
def test_canonical_names(models, spec, name):
    assert models.create(spec).name == name


@pytest.mark.parametrize("spec", ["unet", "unet:resnet18,depth=3", "fpn", "fpn:resnet18,depth=3", "fpn:resnet18,depth=5",
                                  "unetplusplus:resnet18,depth=3"])
def test_logits_have_the_input_size_one_channel_per_class(models, spec):
    model = models.create(spec).build(1, 5)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 5, 32, 32)
    assert out.min() < 0 or out.max() > 1  # logits, no activation


def test_shallow_resnet_encoders_drop_the_stages_they_never_run(models):
    assert not hasattr(models.create("unet").build(1, 5).encoder, "layer4")  # depth 4
    encoder = models.create("unet:resnet18,depth=2").build(1, 5).encoder
    assert hasattr(encoder, "layer1") and not hasattr(encoder, "layer2")
    assert hasattr(models.create("unet:resnet18,depth=5").build(1, 5).encoder, "layer4")


def test_each_build_is_fresh_and_seeded(models):
    builder = models.create("unet")
    torch.manual_seed(3)
    a = builder.build(1, 5)
    torch.manual_seed(3)
    b = builder.build(1, 5)
    c = builder.build(1, 5)
    assert a is not b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.encoder.conv1.weight, c.encoder.conv1.weight)


@pytest.mark.parametrize(("spec", "message"), [
    ("unet:nosuchnet", "resnet18"),
    ("unet:tu-nosuchnet", "tu-<any timm model>"),
    ("unet:resnet18,depth=9", "1..5"),
    ("unet:resnet18,depth=x", "integer"),
    ("unet:resnet18,decoder=64-32", "4 widths"),
    ("unet:resnet18,decoder=64-a-16-8", "positive integers"),
    ("fpn:resnet18,depth=2", "3..5"),
    ("unet:resnet18,resnet34", "unexpected"),
    ("unet:resnet18,colour=red", "unexpected"),
    ("unet:resnet18,weights=/no/such/file.pth", "does not exist"),
])
def test_bad_arguments_are_one_line_user_errors(models, spec, message):
    with pytest.raises(UserError) as info:
        models.create(spec)
    text = str(info.value)
    assert "\n" not in text and message in text


def test_local_encoder_weights_are_loaded(models, tmp_path):
    source = models.create("unet").build(1, 5)
    path = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    builder = models.create(f"unet:resnet18,weights={path}")
    assert builder.name == f"unet:resnet18,weights={path}"
    model = builder.build(1, 3)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key


def test_rgb_checkpoint_first_conv_is_summed_to_one_channel(models, tmp_path):
    import torchvision

    state = torchvision.models.resnet18().state_dict()  # ImageNet-style layout, 3-channel conv1, fc.* keys
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = models.create(f"unet:resnet18,depth=5,weights={path}").build(1, 5)
    assert torch.allclose(model.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    shallow = models.create(f"unet:resnet18,weights={path}").build(1, 5)  # depth 4: layer4.* keys are skipped
    assert torch.equal(shallow.encoder.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])


def test_unreadable_or_mismatched_weights_are_user_errors(models, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        models.create(f"unet:resnet18,weights={garbage}")
    other = tmp_path / "mobilenet.pth"
    torch.save(models.create("unet:mobilenet_v2").build(1, 5).encoder.state_dict(), other)
    with pytest.raises(UserError, match="does not fit encoder"):
        models.create(f"unet:resnet18,weights={other}")
