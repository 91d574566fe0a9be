"""Plugin loading: entry points of the ``lusbench`` group, ``-p MODULE`` modules, and the registries.

Built-in plugins ship in the ``lusbench`` distribution and are loaded through the same entry-point
group as outside plugins. A broken outside plugin is reported on stderr and skipped; set
``LUSBENCH_STRICT_PLUGINS=1`` to make that fatal. ``LUSBENCH_PLUGINS`` restricts which outside
plugins load: a comma-separated list of entry-point names, or empty / ``none`` to load none.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from lusbench.api import hookspecs
from lusbench.api.registry import KINDS, Registry
from lusbench.errors import PluginError

GROUP = "lusbench"
BUILTIN_DIST = "lusbench"
STRICT_ENV = "LUSBENCH_STRICT_PLUGINS"
ALLOW_ENV = "LUSBENCH_PLUGINS"


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as `lusbench plugins` lists it."""

    name: str
    module: str
    source: str  # "builtin", "entry point (dist x.y)", or "-p"
    error: str | None = None


@dataclass
class Plugins:
    """The plugin manager and the four registries filled from it."""

    manager: pluggy.PluginManager
    registries: dict[str, Registry]
    loaded: list[PluginInfo] = field(default_factory=list)

    @property
    def strategies(self) -> Registry:
        return self.registries["label_strategies"]

    @property
    def datasets(self) -> Registry:
        return self.registries["datasets"]

    @property
    def models(self) -> Registry:
        return self.registries["models"]

    @property
    def tasks(self) -> Registry:
        return self.registries["downstream_tasks"]

    def notify(self, event: str, **kwargs: Any) -> None:
        """Call event hook ``event`` on every plugin implementing it.

        An exception in a plugin aborts the command with a one-line :class:`PluginError` naming the plugin.
        """
        for impl in getattr(self.manager.hook, event).get_hookimpls():
            name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - reported as the plugin's failure, not lusbench's
                raise PluginError(f"plugin '{name}' failed in {event}: {type(exc).__name__}: {_first_line(exc)}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _allowed_outside() -> set[str] | None:
    """None: all outside plugins; otherwise the set of entry-point names allowed."""
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    names = {n.strip() for n in raw.split(",") if n.strip()}
    return set() if names <= {"none"} else names


def load_plugins(extra_modules: tuple[str, ...] | list[str] = (), *, warn: Callable[[str], None] | None = None) -> Plugins:
    """Load built-in and outside plugins, then fill the registries.

    ``extra_modules`` are importable module names loaded as plugins for this call only (``-p``).
    Broken plugins are reported through ``warn`` (default: stderr) and skipped, unless
    ``LUSBENCH_STRICT_PLUGINS`` is set, in which case a :class:`PluginError` is raised.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    strict = _truthy(os.environ.get(STRICT_ENV))
    allowed = _allowed_outside()
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    loaded: list[PluginInfo] = []

    def fail(info: PluginInfo, message: str) -> None:
        info.error = message
        loaded.append(info)
        if strict:
            raise PluginError(message)
        warn(f"lusbench: warning: {message}; skipped")

    def add(module: ModuleType, info: PluginInfo) -> None:
        try:
            pm.register(module, name=info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            fail(info, f"plugin '{info.name}' is invalid: {' '.join(str(exc).split())}")
            return
        loaded.append(info)

    eps = sorted(entry_points(group=GROUP), key=lambda ep: (ep.dist is None or ep.dist.name != BUILTIN_DIST, ep.name))
    for ep in eps:
        builtin = ep.dist is not None and ep.dist.name == BUILTIN_DIST
        if not builtin and allowed is not None and ep.name not in allowed:
            continue
        source = "builtin" if builtin else f"entry point ({ep.dist.name} {ep.dist.version})" if ep.dist else "entry point"
        info = PluginInfo(name=ep.name, module=ep.value, source=source)
        if pm.has_plugin(ep.name):
            fail(info, f"plugin name '{ep.name}' ({ep.value}) is already taken by another plugin")
            continue
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported, not fatal
            fail(info, f"plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {_first_line(exc)}")
            continue
        add(module, info)

    for name in extra_modules:
        info = PluginInfo(name=name, module=name, source="-p")
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            # A module the user named explicitly is not optional: always an error.
            raise PluginError(f"-p {name}: cannot import plugin module: {type(exc).__name__}: {_first_line(exc)}") from None
        if pm.is_registered(module):
            continue
        add(module, info)

    registries = {kind: Registry(kind) for kind in KINDS}
    for kind in KINDS:
        _collect(pm, kind, registries[kind], fail_strict=strict, warn=warn, loaded=loaded)
    return Plugins(manager=pm, registries=registries, loaded=loaded)


def _collect(pm: pluggy.PluginManager, kind: str, registry: Registry, *, fail_strict: bool,
             warn: Callable[[str], None], loaded: list[PluginInfo]) -> None:
    """Call ``register_<kind>`` on each plugin separately so a broken one can be named and skipped."""
    hook_name = f"register_{kind}"
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        pending: list[tuple[str, Callable[..., Any]]] = []

        def register(name: str, factory: Callable[..., Any], _pending: list = pending) -> None:
            _pending.append((name, factory))

        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001
            message = f"plugin '{plugin_name}' failed in {hook_name}: {type(exc).__name__}: {_first_line(exc)}"
            if fail_strict:
                raise PluginError(message) from None
            warn(f"lusbench: warning: {message}; skipped")
            for info in loaded:
                if info.name == plugin_name and info.error is None:
                    info.error = message
            continue
        # Only a plugin whose hook ran to the end registers anything; a taken name is a conflict
        # between two plugins and always an error naming both.
        for name, factory in pending:
            registry.add(name, factory, plugin_name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
