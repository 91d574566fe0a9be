"""synthetic-lus spec arguments: parsing, range checks, one-line errors naming the key, the canonical name."""

from dataclasses import fields
from pathlib import Path

import pytest

from lusbench_builtins.synthetic import annotation, echo
from lusbench_builtins.synthetic.config import SyntheticConfig, config_from_args


def test_defaults_give_the_bare_name():
    assert config_from_args() == SyntheticConfig()
    assert SyntheticConfig().spec() == "synthetic-lus"


def test_strings_are_parsed_to_the_field_types():
    config = config_from_args(patients="40", size="64", seed="3", taper="0.05", probe="convex")
    assert (config.patients, config.size, config.seed, config.taper, config.probe) == (40, 64, 3, 0.05, "convex")
    assert config_from_args(patients=40) == config_from_args(patients="40")  # Python callers may pass values


def test_canonical_name_lists_changed_fields_in_declaration_order_and_round_trips():
    config = config_from_args(size="64", patients="40", taper="0.050", raters="1")
    assert config.spec() == "synthetic-lus:patients=40,size=64,taper=0.05"  # raters=1 is the default
    args = dict(part.split("=") for part in config.spec().split(":", 1)[1].split(","))
    assert config_from_args(**args) == config


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"patients": "0"}, "patients"),
        ({"patients": "-3"}, "patients"),
        ({"size": "abc"}, "size"),
        ({"size": "16"}, "size"),
        ({"size": "512"}, "size"),
        ({"size": "64.5"}, "size"),
        ({"taper": "nan"}, "taper"),
        ({"change_sd": "inf"}, "change_sd"),
        ({"probe": "phased"}, "probe"),
        ({"colour": "blue"}, "colour"),
        ({"raters": "4", "experts": "3"}, "raters"),
        ({"protocol": "raters"}, "raters"),
        ({"protocol": "boxes"}, "protocol"),
    ],
)
def test_bad_arguments_fail_with_one_line_naming_the_key(kwargs, key):
    with pytest.raises(ValueError) as info:
        config_from_args(**kwargs)
    message = str(info.value)
    assert key in message and "\n" not in message


def test_protocol_defaults_to_region_and_is_named_when_changed():
    assert SyntheticConfig().protocol == "region"
    assert config_from_args(protocol="pixel").spec() == "synthetic-lus:protocol=pixel"
    assert config_from_args(protocol="raters", raters="3").spec() == "synthetic-lus:protocol=raters,raters=3"


def test_positional_arguments_are_refused():
    with pytest.raises(ValueError, match="key=value"):
        config_from_args("40")


def test_every_parameter_has_a_range_and_a_description():
    for f in fields(SyntheticConfig):
        assert len(f.metadata["doc"]) > 15, f.name
        if isinstance(f.default, str):
            assert f.default in f.metadata["choices"]
        else:
            assert f.metadata["low"] <= f.default <= f.metadata["high"], f.name


def test_model_card_documents_every_parameter_and_constant_with_its_value():
    card = " ".join((Path(__file__).resolve().parents[1] / "docs" / "synthetic-dataset.md").read_text().split())
    for f in fields(SyntheticConfig):
        assert f"| `{f.name}` | `{f.default}` |" in card, f"model card lacks the parameter {f.name} (default {f.default})"
    for module in (echo, annotation):
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, float):
                assert f"`{name}` {value!r}" in card, f"model card lacks the constant {name} = {value!r}"
