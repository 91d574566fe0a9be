import pytest

from lusbench.api.specs import parse_spec


@pytest.mark.parametrize(
    ("text", "name", "args", "kwargs"),
    [
        ("soft", "soft", (), ()),
        ("threshold:0.6", "threshold", ("0.6",), ()),
        ("synthetic-lus:patients=40,size=64", "synthetic-lus", (), (("patients", "40"), ("size", "64"))),
        ("unet:resnet18,depth=3", "unet", ("resnet18",), (("depth", "3"),)),
        ("folder:/data/lus:v2", "folder", ("/data/lus:v2",), ()),
        (" weighted ", "weighted", (), ()),
        ('folder:"/data/run 3, left"', "folder", ("/data/run 3, left",), ()),
        ("npz:path='/x,y.npz',k=2", "npz", (), (("path", "/x,y.npz"), ("k", "2"))),
        ('a:"x=1"', "a", ("x=1",), ()),  # quoted: a positional value, not a keyword
        ('a:"say \\"hi\\", twice"', "a", ('say "hi", twice',), ()),
    ],
)
def test_parse_spec(text, name, args, kwargs):
    spec = parse_spec(text)
    assert (spec.name, spec.args, spec.kwargs) == (name, args, kwargs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a valid name"),
        (":0.6", "not a valid name"),
        ("threshold:", "empty argument"),
        ("a:x=1,x=2", "given twice"),
        ("a:k=1,2", "positional argument '2' after keyword"),
        ("bad name", "not a valid name"),
        ('folder:"/data/a,b', "unclosed quote"),
    ],
)
def test_parse_spec_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(text)
