"""Registries: name -> factory, per kind of plugin, with the plugin that registered each name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lusbench.api.specs import expand_spec, parse_spec
from lusbench.errors import PluginError, UserError, exception_summary

KINDS = ("label_strategies", "datasets", "models", "downstream_tasks", "executors")

# The CLI flag that selects each kind, used in error messages.
FLAGS = {
    "label_strategies": "--strategy",
    "datasets": "--dataset",
    "models": "--model",
    "downstream_tasks": "--task",
    "executors": "--executor",
}


class NameTakenError(PluginError):
    """A plugin registered a name another plugin already holds: ambiguous, so never resolved silently."""


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    plugin: str

    @property
    def summary(self) -> str:
        """First line of the factory's docstring, for `lusbench plugins`."""
        doc = (self.factory.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class Registry:
    """All names registered for one kind (label strategies, datasets, models, tasks or executors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, factory: Callable[..., Any], plugin: str) -> None:
        if not isinstance(name, str) or not name or ":" in name or "," in name:
            raise PluginError(f"plugin '{plugin}' registered an invalid {self.kind} name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin '{plugin}' registered {self.kind} '{name}' with a non-callable factory")
        taken = self._entries.get(name)
        if taken is not None:
            raise NameTakenError(
                f"{self.kind} name '{name}' is registered by both plugin '{taken.plugin}' and plugin '{plugin}'"
            )
        self._entries[name] = Entry(name, factory, plugin)

    def remove_plugin(self, plugin: str) -> None:
        """Remove every name ``plugin`` registered (a plugin that failed leaves nothing behind)."""
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def expand(self, text: str, label: str | None = None) -> list[tuple[str, str | None]]:
        """The specs ``text`` stands for once its sweeps ``A..B/STEP`` are written out (:func:`expand_spec`), each
        with the label :meth:`create` should name it by: None for a spec without a sweep, else one that shows the
        expansion (``--strategy threshold:0.5..1/0.1 expands to``). A bad range is a one-line UserError."""
        flag = label or FLAGS[self.kind]
        try:
            specs = expand_spec(text)
        except ValueError as exc:
            raise UserError(f"{flag} '{text}': {exc}") from None
        if specs == [text.strip()]:
            return [(specs[0], label)]
        return [(spec, f"{flag} {text.strip()} expands to") for spec in specs]

    def create(self, text: str, label: str | None = None) -> Any:
        """Parse a spec and call its factory; every failure is a one-line UserError naming the spec.

        ValueError and TypeError are the factory's verdict on the spec's arguments and are shown as the
        factory worded them; any other exception is a bug in the plugin and is a PluginError that also names
        the plugin, so the user knows whom to report it to.

        ``label`` names where the spec came from in messages (default: the kind's ``run`` flag, e.g. ``--dataset``).
        """
        flag = label or FLAGS[self.kind]
        try:
            spec = parse_spec(text)
        except ValueError as exc:
            raise UserError(f"{flag} '{text}': {exc}") from None
        entry = self._entries.get(spec.name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise UserError(f"{flag} '{text}': unknown name '{spec.name}' (known: {known})")
        try:
            return entry.factory(*spec.args, **dict(spec.kwargs))
        except UserError:
            raise  # already one line, worded by lusbench or the plugin for the user
        except (ValueError, TypeError) as exc:
            # TypeError: wrong number / unknown keyword of arguments for the factory.
            raise UserError(f"{flag} '{text}': {_one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - whatever a plugin raises is reported as its failure, in one line
            raise PluginError(
                f"{flag} '{text}': plugin '{entry.plugin}' failed in its factory: {exception_summary(exc)}"
            ) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
