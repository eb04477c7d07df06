"""The provider registry: from an adapter name to a ready Provider.

The core ships the ``sim`` and ``local`` adapters. Real clouds and third-party
adapters are separate distributions that register in the entry-point group
``multicloud.providers``; only the adapter asked for is imported, so a missing or broken SDK
of one cloud never stops another from loading.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

from multicloud.accelerators import suggest
from multicloud.errors import ProviderNotFoundError, SpecError
from multicloud.models import Fleet
from multicloud.provider import Provider

__all__ = [
    "ENTRY_POINT_GROUP",
    "INSTALL_HINTS",
    "available",
    "from_fleet",
    "load",
    "resolve",
]

ENTRY_POINT_GROUP = "multicloud.providers"

# Built-ins win over entry points of the same name so that an installed package cannot
# silently replace the core's simulated cloud.
_BUILTINS: dict[str, str] = {
    "sim": "multicloud.sim:SimProvider",
    "local": "multicloud.local:LocalProvider",
}

INSTALL_HINTS: dict[str, str] = {
    "aws": "pip install multicloud-aws",
    "gcp": "pip install multicloud-gcp",
    "azure": "pip install multicloud-azure",
    "coreweave": "pip install multicloud-coreweave",
    "kubernetes": "pip install multicloud-kubernetes",
    "oci": "pip install multicloud-oci",
}
"""Install commands of the first-party adapters that live outside the core."""

# Fleet-entry settings only the sim adapter understands, with the message a misuse gets.
_SIM_ONLY: tuple[tuple[str, str], ...] = (
    ("offers", "only the sim adapter takes inline offers"),
    ("capacity", "only the sim adapter takes an inline capacity map"),
    ("faults", "only the sim adapter takes injected faults"),
    ("catalog", "only the sim adapter takes catalog: builtin"),
)


def _builtins() -> dict[str, str]:
    return dict(_BUILTINS)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Return the adapters registered by installed distributions, by name.

    Returns:
        Entry points of the ``multicloud.providers`` group (first one wins on duplicates).
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def available() -> dict[str, str]:
    """List every adapter name the registry knows.

    Returns:
        Name → ``"module:attr"`` for loadable adapters, or ``"not installed: pip install …"``
        for first-party adapters that are not installed, sorted by name.
    """
    out: dict[str, str] = {name: f"not installed: {hint}" for name, hint in INSTALL_HINTS.items()}
    out.update({name: ep.value for name, ep in _entry_points().items()})
    out.update(_builtins())
    return dict(sorted(out.items()))


def resolve(name: str) -> Callable[..., Provider]:
    """Import the adapter class (or factory) registered under ``name``.

    Args:
        name: Adapter name, e.g. ``sim`` or ``aws``.

    Returns:
        The callable that builds the provider.

    Raises:
        ProviderNotFoundError: If nothing is registered under ``name`` (with an install hint
            for known clouds, or a "did you mean"), or the registered adapter fails to import.
    """
    builtins = _builtins()
    if name in builtins:
        target = builtins[name]
        loader: Callable[[], Any] = functools.partial(_import_target, target)
    else:
        entry_points = _entry_points()
        ep = entry_points.get(name)
        if ep is None:
            raise ProviderNotFoundError(_not_found(name, [*builtins, *entry_points]))
        target = ep.value
        loader = ep.load
    try:
        factory = loader()
    except ImportError as exc:
        # Usually the adapter's cloud SDK is missing or broken; say which adapter it was.
        raise ProviderNotFoundError(
            f"adapter '{name}' is registered as {target} but failed to import: {exc}"
        ) from exc
    if not callable(factory):
        raise ProviderNotFoundError(
            f"adapter '{name}' is registered as {target}, which is not a class or factory"
        )
    return factory  # type: ignore[no-any-return]


def _not_found(name: str, loadable: list[str]) -> str:
    hint = INSTALL_HINTS.get(name)
    if hint is not None:
        return f"adapter '{name}' is not installed; run: {hint}"
    known = sorted({*loadable, *INSTALL_HINTS})
    close = suggest(name, known)
    if close is not None:
        tail = f"did you mean '{close}'?"
        if close in INSTALL_HINTS and close not in loadable:
            tail += f" (not installed: {INSTALL_HINTS[close]})"
        return f"unknown adapter '{name}'; {tail}"
    return f"unknown adapter '{name}'; known: {', '.join(known)}"


def load(name: str, **options: Any) -> Provider:
    """Build the provider registered under ``name``.

    Args:
        name: Adapter name.
        **options: Keyword arguments for the adapter's constructor.

    Returns:
        The provider.

    Raises:
        ProviderNotFoundError: If the adapter is unknown, not installed or fails to import.
        TypeError: If the registered object does not build a Provider.
    """
    provider = resolve(name)(**options)
    if not isinstance(provider, Provider):
        raise TypeError(f"provider '{name}' built a {type(provider).__name__}, not a Provider")
    return provider


def from_fleet(fleet: Fleet, name: str, **runtime: Any) -> Provider:
    """Build the provider of one fleet entry, with the entry's settings.

    Args:
        fleet: The fleet.
        name: Fleet provider name (a key of ``fleet.providers``).
        **runtime: Extra constructor arguments decided at run time (clock, state, ...);
            they override the entry's.

    Returns:
        The provider.

    Raises:
        ProviderNotFoundError: If ``name`` is not in the fleet or its adapter is unknown.
        SpecError: If the entry gives a non-sim adapter sim-only settings, or options the
            adapter does not accept.
    """
    if name not in fleet.providers:
        close = suggest(name, tuple(fleet.providers))
        tail = f"did you mean '{close}'?" if close else f"fleet has: {', '.join(fleet.providers)}"
        raise ProviderNotFoundError(f"fleet has no provider '{name}'; {tail}")
    cfg = fleet.providers[name]
    adapter = fleet.adapter_of(name)
    # The adapter's name first: a misspelt one ("simm") must be named as such, not met with
    # a complaint about the settings it would have taken. Nothing is imported yet. (A
    # built-in needs no look at the installed distributions: that takes ~10 ms each time.)
    if adapter not in _builtins():
        loadable = [*_builtins(), *_entry_points()]
        if adapter not in loadable:
            raise ProviderNotFoundError(_not_found(adapter, loadable))
    base: dict[str, Any] = {"fleet_name": name, "regions": cfg.regions}
    if adapter == "sim":
        base.update(
            offers=cfg.offers,
            catalog=cfg.catalog,
            capacity=cfg.capacity,
            faults=cfg.faults,
            time_scale=fleet.time_scale,
        )
    else:
        problems = [
            (f"providers.{name}.{field}", message)
            for field, message in _SIM_ONLY
            if getattr(cfg, field)
        ]
        if problems:
            raise SpecError(source="fleet", problems=problems)
    factory = resolve(adapter)
    _check_options(factory, name, cfg.options)
    provider = factory(**{**base, **cfg.options, **runtime})
    if not isinstance(provider, Provider):
        raise TypeError(
            f"provider '{adapter}' built a {type(provider).__name__}, not a Provider"
        )
    return provider


def _check_options(factory: Callable[..., Any], name: str, options: dict[str, Any]) -> None:
    # A typo in `options` should name the field like any other spec error, not surface as a
    # TypeError from deep inside an adapter constructor.
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    problems = []
    for option in options:
        if option not in accepted:
            close = suggest(option, accepted)
            tail = f"; did you mean '{close}'?" if close else ""
            problems.append((f"providers.{name}.options.{option}", f"unknown option{tail}"))
    if problems:
        raise SpecError(source="fleet", problems=problems)
