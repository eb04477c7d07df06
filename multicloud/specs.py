"""Reading job and fleet files, with errors a person can act on (DESIGN.md §7).

A job file is one job, a multi-document YAML stream of jobs, or a mapping with a top-level
``jobs:`` list. Every problem is reported with the file, the field path and, where a close
spelling exists, a "did you mean".
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from multicloud.accelerators import suggest
from multicloud.errors import SpecError
from multicloud.models import Fleet, Job


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Return the field names valid at ``loc`` inside ``model`` (for "did you mean")."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        info = fields.get(part)
        if info is None:
            # a dict key (e.g. a provider name): the value's model is the dict's value type
            continue
        current = _model_of(info.annotation)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _problems(
    err: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        # pydantic names union branches in the location ("str", "tuple[str, ...]"): drop them
        loc = tuple(
            p
            for p in loc
            if not (isinstance(p, str) and ("[" in p or p in ("str", "float", "int", "bool")))
        )
        path = _path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        kind = e["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1])
            hint = suggest(name, _fields_at(model, loc[:-1]))
            msg = f"unknown field '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = str(e["msg"])
            msg = msg.removeprefix("Value error, ")
            if (
                "input" in e
                and kind not in ("value_error", "assertion_error")
                and not isinstance(e["input"], (dict, list))
            ):
                msg += f" (got {e['input']!r})"
        out.append((path, msg))
    return out


def _load_yaml(text: str, source: str) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [(where, f"not valid YAML: {problem}")]) from None


def _read(path: str | Path) -> tuple[str, str]:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except FileNotFoundError:
        raise SpecError(str(p), [("", "file not found")]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(str(p), [("", f"cannot read: {exc}")]) from None


def parse_jobs(text: str, source: str = "<inline>") -> list[Job]:
    """Parse job specs from YAML text.

    Args:
        text: One job, several YAML documents, or a mapping with a ``jobs:`` list.
        source: Name used in error messages.

    Returns:
        The jobs, in file order.

    Raises:
        SpecError: If anything is malformed; nothing is returned then.
    """
    docs = _load_yaml(text, source)
    raw: list[tuple[str, Any]] = []
    if len(docs) == 1 and isinstance(docs[0], dict) and "jobs" in docs[0]:
        extra = sorted(set(docs[0]) - {"jobs"})
        if extra:
            raise SpecError(source, [(extra[0], f"unknown field '{extra[0]}' next to 'jobs'")])
        items = docs[0]["jobs"]
        if not isinstance(items, list):
            raise SpecError(source, [("jobs", "must be a list of jobs")])
        raw = [(f"jobs[{i}]", item) for i, item in enumerate(items)]
    elif len(docs) == 1:
        raw = [("", docs[0])]
    else:
        raw = [(f"document[{i}]", d) for i, d in enumerate(docs)]
    if not raw:
        raise SpecError(source, [("", "no jobs in file")])
    problems: list[tuple[str, str]] = []
    jobs: list[Job] = []
    for prefix, item in raw:
        if not isinstance(item, dict):
            problems.append((prefix, "a job must be a mapping of fields"))
            continue
        try:
            jobs.append(Job.model_validate(item))
        except ValidationError as exc:
            problems.extend(_problems(exc, Job, prefix))
    names: dict[str, int] = {}
    for i, job in enumerate(jobs):
        if job.name in names:
            problems.append((f"jobs[{i}].name", f"duplicate job name '{job.name}'"))
        names[job.name] = i
    if problems:
        raise SpecError(source, problems)
    return jobs


def load_jobs(path: str | Path) -> list[Job]:
    """Read a job file (see :func:`parse_jobs`).

    Args:
        path: File path.

    Returns:
        The jobs.

    Raises:
        SpecError: If the file is missing or malformed.
    """
    text, source = _read(path)
    return parse_jobs(text, source)


def parse_fleet(text: str, source: str = "<inline>") -> Fleet:
    """Parse a fleet file from YAML text.

    Args:
        text: The YAML.
        source: Name used in error messages.

    Returns:
        The fleet.

    Raises:
        SpecError: If anything is malformed.
    """
    docs = _load_yaml(text, source)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SpecError(source, [("", "a fleet file is one YAML mapping")])
    try:
        return Fleet.model_validate(docs[0])
    except ValidationError as exc:
        raise SpecError(source, _problems(exc, Fleet)) from None


def load_fleet(path: str | Path) -> Fleet:
    """Read a fleet file.

    Args:
        path: File path.

    Returns:
        The fleet.

    Raises:
        SpecError: If the file is missing or malformed.
    """
    text, source = _read(path)
    return parse_fleet(text, source)


def check_against_fleet(jobs: list[Job], fleet: Fleet, source: str = "<jobs>") -> None:
    """Check the jobs' references to fleet providers and to regions.

    Args:
        jobs: Parsed jobs.
        fleet: Parsed fleet.
        source: Job file name for messages.

    Raises:
        SpecError: If a job names a provider the fleet does not have, or a
            ``serving.regions_near`` region neither the catalog nor the fleet knows.
    """
    names = tuple(fleet.providers)
    problems: list[tuple[str, str]] = []
    for i, job in enumerate(jobs):
        # A one-job file has no list to index; name the job instead.
        where = f"jobs[{i}]" if len(jobs) > 1 else f"job '{job.name}'"
        for k, name in enumerate(job.placement.providers):
            if name not in fleet.providers:
                hint = suggest(name, names)
                tail = f"; did you mean '{hint}'?" if hint else f"; fleet has: {', '.join(names)}"
                problems.append(
                    (f"{where}.placement.providers[{k}]", f"unknown provider '{name}'{tail}")
                )
    known = _known_regions(fleet)
    for i, job in enumerate(jobs):
        where = f"jobs[{i}]" if len(jobs) > 1 else f"job '{job.name}'"
        for k, region in enumerate(job.serving.regions_near if job.serving else ()):
            if region not in known:
                hint = suggest(region, sorted(known))
                tail = f"; did you mean '{hint}'?" if hint else ""
                problems.append(
                    (f"{where}.serving.regions_near[{k}]", f"unknown region '{region}'{tail}")
                )
    if problems:
        raise SpecError(source, problems)


def _known_regions(fleet: Fleet) -> set[str]:
    """Regions the catalog knows plus those the fleet's inline offers name."""
    from multicloud.catalog import load_catalog

    known = set(load_catalog().regions)
    for cfg in fleet.providers.values():
        known.update(o.region for o in cfg.offers)
    return known
