"""Spec strings: ``name`` or ``name:arg1,k=v,...`` (docs/plugin-guide.md).

An argument (or a keyword's value) that itself holds a comma, such as a path, is quoted:
``folder:"/data/run 3, left lung"`` or ``npz-frames:path='/data/a,b.npz'``. Inside quotes every character is
literal; a backslash escapes a quote or a backslash.

A sweep ``A..B/STEP`` in place of a number (``threshold:0.5..1.0/0.1``) stands for several specs, one per value
``A, A+STEP, ...`` up to ``B`` (included when on the grid); :func:`expand_spec` writes them out. The values are
computed in decimal, so ``0.5..1.0/0.1`` gives exactly 0.5, 0.6, ..., 0.9, 1. A quoted argument is never a sweep.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# What reads as a sweep: starts like a number, then '..' and one '/' (so a path such as ../data/x never does).
_SWEEP = re.compile(r"^[-+]?\.?\d[^/]*\.\.[^/]*/[^/]*$")
#: The most specs one sweep may expand to: more is almost surely a typo in STEP, and each costs a training.
MAX_SWEEP = 100


@dataclass(frozen=True)
class Spec:
    """A parsed spec: the registered name, positional and keyword arguments, all strings."""

    text: str
    name: str
    args: tuple[str, ...]
    kwargs: tuple[tuple[str, str], ...]


def parse_spec(text: str) -> Spec:
    """Parse ``name`` or ``name:a,b,k=v``; raise ValueError with a one-line reason."""
    text = text.strip()
    name, sep, rest = text.partition(":")
    if not _NAME.match(name):
        raise ValueError(f"'{name}' is not a valid name (letters, digits, '-', '_', '.')")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    if sep:
        # Only the first ':' separates the name, so a path argument like folder:/data/x works.
        for part in _split_arguments(rest):
            if not part:
                raise ValueError("empty argument")
            key, eq, value = part.partition("=")
            # A quoted "x=1" is positional: the quote before '=' makes the key no valid name.
            if eq and _NAME.match(key):
                if key in kwargs:
                    raise ValueError(f"argument '{key}' given twice")
                kwargs[key] = _unquote(value)
            else:
                if kwargs:
                    raise ValueError(f"positional argument '{part}' after keyword arguments")
                args.append(_unquote(part))
    return Spec(text=text, name=name, args=tuple(args), kwargs=tuple(kwargs.items()))


def _split_arguments(rest: str) -> list[str]:
    """Split at the commas outside quotes, each part stripped (quotes kept, for :func:`_unquote`)."""
    parts: list[str] = []
    current, quote, escaped = "", "", False
    for char in rest:
        if escaped:
            escaped = False
        elif quote and char == "\\":
            escaped = True
        elif quote and char == quote:
            quote = ""
        elif not quote and char in "\"'":
            quote = char
        elif not quote and char == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += char
    if quote:
        raise ValueError(f"unclosed quote {quote} in arguments '{rest}'")
    parts.append(current.strip())
    return parts


def _unquote(value: str) -> str:
    """``"a,b"`` or ``'a,b'`` -> ``a,b`` (backslash escapes the quote and itself); anything else unchanged."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner, out, escaped = value[1:-1], "", False
        for char in inner:
            if escaped:
                out, escaped = out + char, False
            elif char == "\\":
                escaped = True
            else:
                out += char
        return out
    return value


def expand_spec(text: str) -> list[str]:
    """The specs a spec with sweeps ``A..B/STEP`` stands for (several sweeps: every combination, the last varying
    fastest), or ``[text]`` without one; raise ValueError with a one-line reason for a bad range."""
    text = text.strip()
    name, sep, rest = text.partition(":")
    if not sep:
        return [text]
    choices: list[list[str]] = []
    swept = False
    for part in _split_arguments(rest):
        key, eq, value = part.partition("=")
        prefix, value = (f"{key}=", value) if eq and _NAME.match(key) else ("", part)
        if _SWEEP.match(value.strip()):
            swept = True
            choices.append([prefix + v for v in sweep_values(value)])
        else:
            choices.append([part])
    if not swept:
        return [text]
    combinations = 1
    for options in choices:
        combinations *= len(options)
    if combinations > MAX_SWEEP:
        raise ValueError(f"the sweeps expand to {combinations} specs, more than {MAX_SWEEP}; use a larger step")
    return [f"{name}:{','.join(combo)}" for combo in itertools.product(*choices)]


def sweep_values(text: str) -> list[str]:
    """``A..B/STEP`` -> the canonical numbers ``A, A+STEP, ...`` up to B (``0.5..1.0/0.1`` -> 0.5 ... 0.9, 1)."""
    bounds, _, step_text = text.strip().partition("/")
    start_text, _, end_text = bounds.partition("..")
    try:
        start, end, step = Decimal(start_text), Decimal(end_text), Decimal(step_text)
    except InvalidOperation:
        raise ValueError(f"sweep '{text}' is not A..B/STEP with numbers A, B and STEP") from None
    if not all(v.is_finite() for v in (start, end, step)):
        raise ValueError(f"sweep '{text}' is not A..B/STEP with finite numbers A, B and STEP")
    if step <= 0:
        raise ValueError(f"sweep '{text}': STEP must be positive, got {step_text}")
    if end < start:
        raise ValueError(f"sweep '{text}': B must not be below A ({end_text} < {start_text})")
    count = int((end - start) / step) + 1
    if count > MAX_SWEEP:
        raise ValueError(f"sweep '{text}' has {count} values, more than {MAX_SWEEP}; use a larger step")
    return [_canonical_decimal(start + i * step) for i in range(count)]


def _canonical_decimal(value: Decimal) -> str:
    """0.50 -> '0.5', 1.0 -> '1', 100 -> '100' (never '1E+2')."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "+0") else text
