"""Plugin loading: entry points of the ``lusbench`` group, ``-p MODULE`` modules, and the registries.

Built-in plugins ship in the ``lusbench`` distribution and are loaded through the same entry-point
group as outside plugins. A broken plugin (it fails to import, a registration hook raises, it registers
an invalid name) is reported on stderr and unregistered, with every name it registered removed, so
nothing of it runs; set ``LUSBENCH_STRICT_PLUGINS=1`` to make that fatal. A hook name that is no
lusbench hook (a typo) is a warning, fatal under ``LUSBENCH_STRICT_PLUGINS``. Two plugins registering
the same name is an error for every command except ``lusbench plugins``, which lists the clash.

Which plugins load, the way pytest does it: ``-p no:NAME`` (and ``no:NAME`` in ``LUSBENCH_PLUGINS``)
switches off the plugin with entry-point name NAME, built-in or not; other ``LUSBENCH_PLUGINS``
entries restrict which outside plugins load (a comma-separated list of entry-point names, or empty /
``none`` for none). Hooks are called through pluggy, so ``tryfirst``/``trylast`` and wrappers work.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from lusbench.api import hookspecs
from lusbench.api.registry import KINDS, NameTakenError, Registry
from lusbench.errors import PluginError, exception_summary

GROUP = "lusbench"
BUILTIN_DIST = "lusbench"
STRICT_ENV = "LUSBENCH_STRICT_PLUGINS"
ALLOW_ENV = "LUSBENCH_PLUGINS"
DISABLE_PREFIX = "no:"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as `lusbench plugins` lists it."""

    name: str
    module: str
    source: str  # "builtin", "entry point (dist x.y)", or "-p"
    error: str | None = None  # why it was not loaded; a plugin with an error is not registered
    warning: str | None = None  # a problem that did not stop it (an unknown hook name)
    dist: str | None = None  # the distribution that installed it (what to uninstall), None for -p


@dataclass
class Plugins:
    """The plugin manager and the registries filled from it. ``modules`` are the ``-p`` values it was loaded with,
    so that a worker process can load the same plugins (:mod:`lusbench.exec.cells`)."""

    manager: pluggy.PluginManager
    registries: dict[str, Registry]
    loaded: list[PluginInfo] = field(default_factory=list)
    modules: tuple[str, ...] = ()
    warn: Callable[[str], None] = field(default=_stderr, repr=False)
    # The arguments run_started was dispatched with, until run_finished or run_failed closes the run.
    _open_run: dict[str, Any] | None = field(default=None, init=False, repr=False)

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

    @property
    def executors(self) -> Registry:
        return self.registries["executors"]

    def notify(self, event: str, **kwargs: Any) -> None:
        """Call event hook ``event`` through pluggy (wrappers, ``tryfirst``/``trylast`` honoured).

        An exception in a plugin aborts the command with a one-line :class:`PluginError` naming the plugin.
        """
        if event == "run_started":
            # Remembered before the call: if one run_started raises, the loggers that already opened
            # must still hear run_failed.
            self._open_run = {"config": kwargs["config"], "run_dir": kwargs["run_dir"]}
        elif event == "run_finished":
            self._open_run = None
        hook = getattr(self.manager.hook, event)
        try:
            hook(**kwargs)
        except Exception as exc:  # noqa: BLE001 - reported as the plugin's failure, not lusbench's
            raise PluginError(f"plugin '{_culprit(self.manager, hook, exc)}' failed in {event}: "
                              f"{exception_summary(exc)}") from None

    def notify_run_failed(self, error: BaseException) -> None:
        """Fire ``run_failed`` if a run was started and neither finished nor failed yet.

        A run_failed hook that raises is only a warning: the run's own error is what the user must see.
        """
        if self._open_run is None:
            return
        opened, self._open_run = self._open_run, None
        hook = self.manager.hook.run_failed
        try:
            hook(**opened, error=exception_summary(error))
        except Exception as exc:  # noqa: BLE001 - must not hide the error that failed the run
            self.warn(f"lusbench: warning: plugin '{_culprit(self.manager, hook, exc)}' failed in run_failed: "
                      f"{exception_summary(exc)}")


def _culprit(pm: pluggy.PluginManager, hook: pluggy.HookCaller, exc: BaseException) -> str:
    """The plugin whose hook function raised ``exc``: the innermost hook implementation in its traceback.

    pluggy calls all implementations (and wrappers around them) in one call, so the traceback is the only
    record of which one raised; the innermost is the one that raised, a wrapper merely passed it on.
    """
    impls = hook.get_hookimpls()
    by_code = {getattr(i.function, "__code__", None): i for i in impls}
    # Only for an implementation that is not a plain function (no code object of its own to find).
    by_module = {getattr(i.plugin, "__name__", None): i for i in impls}
    in_code = in_module = None
    tb = exc.__traceback__
    while tb is not None:
        in_code = by_code.get(tb.tb_frame.f_code) or in_code
        in_module = by_module.get(tb.tb_frame.f_globals.get("__name__")) or in_module
        tb = tb.tb_next
    found = in_code or in_module
    if found is not None:
        return pm.get_name(found.plugin) or repr(found.plugin)
    return " or ".join(pm.get_name(i.plugin) or repr(i.plugin) for i in impls) or "?"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _env_selection() -> tuple[set[str] | None, set[str]]:
    """From LUSBENCH_PLUGINS: (outside plugins allowed, None for all; plugin names switched off).

    A list of only ``no:NAME`` entries switches those off and restricts nothing else, as ``-p no:NAME`` does.
    """
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None, set()
    items = [n.strip() for n in raw.split(",") if n.strip()]
    disabled = {i[len(DISABLE_PREFIX):].strip() for i in items if i.startswith(DISABLE_PREFIX)}
    names = {i for i in items if not i.startswith(DISABLE_PREFIX)}
    if disabled and not names:
        return None, disabled
    return names - {"none"}, disabled


def load_plugins(extra_modules: Iterable[str] = (), *, warn: Callable[[str], None] | None = None,
                 diagnose: bool = False) -> Plugins:
    """Load built-in and outside plugins, then fill the registries.

    ``extra_modules`` are the ``-p`` values: importable module names loaded as plugins for this call only,
    and ``no:NAME`` entries switching plugin NAME off. Broken plugins are reported through ``warn``
    (default: stderr) and unregistered, unless ``LUSBENCH_STRICT_PLUGINS`` is set, in which case a
    :class:`PluginError` is raised. A name registered by two plugins raises a PluginError naming what to
    uninstall or skip, except with ``diagnose`` (``lusbench plugins``), where the later plugin is listed
    as failed so the clash can be seen.
    """
    warn = warn or _stderr
    extra_modules = tuple(extra_modules)
    strict = _truthy(os.environ.get(STRICT_ENV))
    allowed, disabled = _env_selection()
    modules: list[str] = []
    for value in extra_modules:
        if value.startswith(DISABLE_PREFIX):
            disabled.add(value[len(DISABLE_PREFIX):].strip())
        else:
            modules.append(value)
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)  # pytest's mechanism: a blocked name never registers
    loaded: list[PluginInfo] = []

    def fail(info: PluginInfo, message: str) -> None:
        info.error = message
        if not any(i is info for i in loaded):
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
        if pm.is_blocked(ep.name) or (not builtin and allowed is not None and ep.name not in allowed):
            continue  # switched off: not even imported, so a plugin that breaks on import can be skipped
        source = "builtin" if builtin else f"entry point ({ep.dist.name} {ep.dist.version})" if ep.dist else "entry point"
        info = PluginInfo(name=ep.name, module=ep.value, source=source, dist=ep.dist.name if ep.dist else None)
        if pm.has_plugin(ep.name):
            fail(info, f"plugin name '{ep.name}' ({ep.value}) is already taken by another plugin")
            continue
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported, not fatal
            fail(info, f"plugin '{ep.name}' ({ep.value}) failed to load: {exception_summary(exc)}")
            continue
        add(module, info)

    for name in modules:
        if pm.is_blocked(name):
            continue
        info = PluginInfo(name=name, module=name, source="-p")
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            # A module the user named explicitly is not optional: always an error.
            raise PluginError(f"-p {name}: cannot import plugin module: {exception_summary(exc)}") from None
        if pm.is_registered(module):
            continue
        add(module, info)

    known = {ep.name for ep in eps} | set(modules)
    for name in sorted(disabled - known):
        warn(f"lusbench: warning: -p {DISABLE_PREFIX}{name}: no plugin is named '{name}' "
             f"(names: {', '.join(sorted(known)) or 'none'})")

    _check_hook_names(pm, {i.name: i for i in loaded}, strict=strict, warn=warn)
    registries = {kind: Registry(kind) for kind in KINDS}
    _register_names(pm, registries, loaded, fail=fail, strict=strict, diagnose=diagnose, warn=warn)
    return Plugins(manager=pm, registries=registries, loaded=loaded, warn=warn, modules=tuple(extra_modules))


def _registered(pm: pluggy.PluginManager) -> list[tuple[str, Any]]:
    """(name, plugin) in registration order (built-ins first), without the blocked names."""
    return [(name, plugin) for name, plugin in pm.list_name_plugin() if plugin is not None]


def _check_hook_names(pm: pluggy.PluginManager, infos: dict[str, PluginInfo], *, strict: bool,
                      warn: Callable[[str], None]) -> None:
    """A hook implementation lusbench has no spec for (``register_strategies``) is never called: say so."""
    try:
        pm.check_pending()
        return
    except pluggy.PluginValidationError:
        pass  # check_pending names only the first; find every one, per plugin, to say whose it is
    specs = sorted(n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), f"{GROUP}_spec"))
    for name, plugin in _registered(pm):
        unknown = sorted(
            caller.name for caller in pm.get_hookcallers(plugin) or []
            if not caller.has_spec() and any(i.plugin is plugin and not i.optionalhook for i in caller.get_hookimpls())
        )
        for hook in unknown:
            close = difflib.get_close_matches(hook, specs, n=1)
            message = f"plugin '{name}' implements unknown hook '{hook}'" + (f" (did you mean '{close[0]}'?)" if close else "")
            if strict:
                raise PluginError(message)
            warn(f"lusbench: warning: {message}; it is never called")
            info = infos.get(name)
            if info is not None:
                info.warning = f"{info.warning}; {message}" if info.warning else message


def _register_names(pm: pluggy.PluginManager, registries: dict[str, Registry], loaded: list[PluginInfo], *,
                    fail: Callable[[PluginInfo, str], None], strict: bool, diagnose: bool,
                    warn: Callable[[str], None]) -> None:
    """Call each plugin's registration hooks on their own, so a broken one is named and leaves nothing behind.

    A plugin's names are added only when all its registration hooks ran to the end; a plugin that fails is
    unregistered from the manager, so none of its hooks (run_started included) is ever called.
    """
    infos = {i.name: i for i in loaded}
    for name, plugin in _registered(pm):
        info = infos[name]
        others = [p for _, p in _registered(pm) if p is not plugin]
        pending: list[tuple[str, str, Callable[..., Any]]] = []
        problem = None
        for kind in KINDS:
            hook_name = f"register_{kind}"

            def register(item: str, factory: Callable[..., Any], _kind: str = kind,
                         _into: list[tuple[str, str, Callable[..., Any]]] = pending) -> None:
                _into.append((_kind, item, factory))

            try:
                # The subset caller is pluggy's own hook call restricted to this plugin: its wrappers and
                # ordering apply, and an exception can only be this plugin's.
                pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
            except Exception as exc:  # noqa: BLE001
                problem = f"plugin '{name}' failed in {hook_name}: {exception_summary(exc)}"
                break
        clash = None
        if problem is None:
            try:
                for kind, item, factory in pending:
                    registries[kind].add(item, factory, name)
            except NameTakenError as exc:
                clash = f"{exc}; {_how_to_skip(info)}"
            except PluginError as exc:  # an invalid name or a non-callable factory
                problem = str(exc)
        if problem is None and clash is None:
            continue
        # Nothing of a failed plugin stays: not its names, not its other hooks.
        for registry in registries.values():
            registry.remove_plugin(name)
        pm.unregister(name=name)
        if clash is None:
            fail(info, problem)
        elif diagnose and not strict:
            info.error = clash
            warn(f"lusbench: warning: {clash}")
        else:
            info.error = clash
            raise PluginError(clash)


def _how_to_skip(info: PluginInfo) -> str:
    """The remedy for a name clash caused by plugin ``info``: what to uninstall, or how to switch it off."""
    if info.source == "-p":
        return f"drop -p {info.module}"
    skip = f"skip it with -p {DISABLE_PREFIX}{info.name} or {ALLOW_ENV}={DISABLE_PREFIX}{info.name}"
    if info.dist and info.dist != BUILTIN_DIST:
        return f"uninstall the distribution {info.dist} (pip uninstall {info.dist}), or {skip}"
    return skip
