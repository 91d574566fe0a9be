"""Spec strings: ``name`` or ``name:arg1,k=v,...`` (docs/plugin-guide.md).

An argument (or a keyword's value) that itself holds a comma, such as a path, is quoted:
``folder:"/data/run 3, left lung"`` or ``npz-frames:path='/data/a,b.npz'``. Inside quotes every character is
literal; a backslash escapes a quote or a backslash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


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
