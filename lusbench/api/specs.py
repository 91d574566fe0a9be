"""Spec strings: ``name`` or ``name:arg1,k=v,...`` (docs/plugin-guide.md)."""

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
        for part in rest.split(","):
            part = part.strip()
            if not part:
                raise ValueError("empty argument")
            key, eq, value = part.partition("=")
            if eq and _NAME.match(key):
                if key in kwargs:
                    raise ValueError(f"argument '{key}' given twice")
                kwargs[key] = value
            else:
                if kwargs:
                    raise ValueError(f"positional argument '{part}' after keyword arguments")
                args.append(part)
    return Spec(text=text, name=name, args=tuple(args), kwargs=tuple(kwargs.items()))
