"""Reading job and fleet files, with errors a person can act on (DESIGN.md §7).

A job file is one job, a multi-document YAML stream of jobs, or a mapping with a top-level
``jobs:`` list (YAML, or JSON for ``.json`` files). Every problem is reported with the file,
the field path, its line and column and, where a close spelling exists, a "did you mean".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from multicloud import gcpause, yamlfast
from multicloud.accelerators import suggest
from multicloud.errors import SpecError
from multicloud.models import Fleet, Job
from multicloud.yamlfast import BaseLoader

_Loader: Any = BaseLoader


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


def _load_yaml(text: str, source: str, *, as_json: bool = False) -> list[Any]:
    """Parse a file's documents: ``json`` for JSON, libyaml's parser for YAML.

    Args:
        text: The file's text.
        source: Name used in error messages.
        as_json: The file is JSON (a ``.json`` name); text that merely looks like JSON is
            tried as JSON first too, and read as YAML (its superset) if that fails.

    Returns:
        The non-empty documents.

    Raises:
        SpecError: If the text is not valid JSON (for a JSON file) or YAML.
    """
    if as_json or text.lstrip()[:1] in ("{", "["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if as_json:
                where = f"line {exc.lineno}, column {exc.colno}"
                raise SpecError(source, [(where, f"not valid JSON: {exc.msg}")]) from None
        else:
            return [] if doc is None else [doc]
    try:
        return [d for d in yamlfast.load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [(where, f"not valid YAML: {problem}")]) from None


def _locate(text: str, problems: list[tuple[str, str]]) -> None:
    """Add the line and column of each problem's field to its message, in place.

    Parsing keeps no positions (that is what makes it fast); this runs only once there are
    problems to report: it re-reads the text as YAML nodes, which carry their marks.

    Args:
        text: The file's text (JSON is YAML too).
        problems: ``(field path, message)`` pairs; paths as :func:`_path` writes them,
            starting with ``jobs[i]`` or ``document[i]`` where the file has several jobs.
    """
    try:
        docs = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError:
        return
    for k, (path, message) in enumerate(problems):
        node = _node_at(docs, path)
        if node is not None:
            mark = node.start_mark
            problems[k] = (path, f"{message} (line {mark.line + 1}, column {mark.column + 1})")


def _node_at(docs: list[Any], path: str) -> Any:
    """The YAML node a field path names, or the nearest enclosing one that exists."""
    parts: list[str | int] = []
    for chunk in path.replace("]", "").split("."):
        head, *idx = chunk.split("[")
        if head:
            parts.append(head)
        parts.extend(int(i) for i in idx if i.isdigit())
    if not docs:
        return None
    node = docs[0]
    if parts and parts[0] == "document" and len(parts) > 1 and isinstance(parts[1], int):
        if parts[1] >= len(docs):
            return None
        node = docs[parts[1]]
        parts = parts[2:]
    for k, part in enumerate(parts):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = None
            for key, value in node.value:
                if getattr(key, "value", None) == part:
                    # the field itself is shown at its key; a path goes on in its value
                    found = key if k == len(parts) - 1 else value
                    break
            if found is None:
                return node
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _read(path: str | Path) -> tuple[str, str]:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except FileNotFoundError:
        raise SpecError(str(p), [("", "file not found")]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(str(p), [("", f"cannot read: {exc}")]) from None


def parse_jobs(text: str, source: str = "<inline>", *, as_json: bool = False) -> list[Job]:
    """Parse job specs from YAML (or JSON) text.

    Args:
        text: One job, several YAML documents, or a mapping with a ``jobs:`` list.
        source: Name used in error messages.
        as_json: The text is JSON (read by ``json``; errors give its line and column).

    Returns:
        The jobs, in file order.

    Raises:
        SpecError: If anything is malformed; nothing is returned then. Each problem names
            the field path and, where the text has it, its line and column.
    """
    # A large file is a large tree that all stays alive: no collections while it is built.
    with gcpause.paused():
        docs = _load_yaml(text, source, as_json=as_json)
        raw = _documents(docs, source)
        jobs, problems = _job_items(raw)
    if problems:
        _locate(text, problems)
        raise SpecError(source, problems)
    return jobs


def _documents(docs: list[Any], source: str) -> list[tuple[str, Any]]:
    """The job documents of a file, each with the field path prefix its problems get."""
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
    return raw


def validate_jobs(docs: Sequence[Any], source: str = "submission") -> list[Job]:
    """Validate job documents that arrive already parsed (a client's submission).

    The same checks and messages as :func:`parse_jobs`, each naming ``jobs[i]`` and the
    field; no line or column, since there is no text the sender wrote.

    Args:
        docs: Job documents, in order.
        source: Name used in error messages.

    Returns:
        The jobs, in order.

    Raises:
        SpecError: If any document is malformed; nothing is returned then.
    """
    with gcpause.paused():
        jobs, problems = _job_items([(f"jobs[{i}]", doc) for i, doc in enumerate(docs)])
    if problems:
        raise SpecError(source, problems)
    return jobs


@cache
def _job_list() -> TypeAdapter[list[Job]]:
    return TypeAdapter(list[Job])


def _all_valid(docs: list[Any]) -> list[Job] | None:
    """The jobs, if every document is a valid job and no name repeats; else None."""
    if not all(isinstance(doc, dict) for doc in docs):
        return None
    try:
        jobs = _job_list().validate_python(docs)
    except ValidationError:
        return None
    return jobs if len({job.name for job in jobs}) == len(jobs) else None


def _job_items(raw: Sequence[tuple[str, Any]]) -> tuple[list[Job], list[tuple[str, str]]]:
    """Validate ``(field path prefix, document)`` pairs; return the jobs and the problems.

    Valid documents, the usual case, are validated in one call (the list's loop runs in
    pydantic's core); if anything is wrong, each document is validated on its own, so that
    every problem is named as it would be alone.
    """
    valid = _all_valid([item for _, item in raw])
    if valid is not None:
        return valid, []
    problems: list[tuple[str, str]] = []
    jobs: list[Job] = []
    names: set[str] = set()
    for prefix, item in raw:
        if not isinstance(item, dict):
            problems.append((prefix, "a job must be a mapping of fields"))
            continue
        try:
            job = Job.model_validate(item)
        except ValidationError as exc:
            problems.extend(_problems(exc, Job, prefix))
            continue
        if job.name in names:
            # named where the repeat is written (not by its place among the valid jobs)
            where = f"{prefix}.name" if prefix else "name"
            problems.append((where, f"duplicate job name '{job.name}'"))
        names.add(job.name)
        jobs.append(job)
    return jobs, problems


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
    return parse_jobs(text, source, as_json=Path(path).suffix.lower() == ".json")


def parse_fleet(text: str, source: str = "<inline>", *, as_json: bool = False) -> Fleet:
    """Parse a fleet file from YAML (or JSON) text.

    Args:
        text: The YAML.
        source: Name used in error messages.
        as_json: The text is JSON.

    Returns:
        The fleet.

    Raises:
        SpecError: If anything is malformed.
    """
    docs = _load_yaml(text, source, as_json=as_json)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SpecError(source, [("", "a fleet file is one YAML mapping")])
    try:
        return Fleet.model_validate(docs[0])
    except ValidationError as exc:
        problems = _problems(exc, Fleet)
        _locate(text, problems)
        raise SpecError(source, problems) from None


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
    return parse_fleet(text, source, as_json=Path(path).suffix.lower() == ".json")


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

    def where(i: int) -> str:
        # A one-job file has no list to index; name the job instead.
        return f"jobs[{i}]" if len(jobs) > 1 else f"job '{jobs[0].name}'"

    # Most jobs name no provider and no region: they cost one test each (20,000 jobs).
    for i, job in enumerate(jobs):
        wanted = job.placement.providers
        if not wanted:
            continue
        for k, name in enumerate(wanted):
            if name not in fleet.providers:
                hint = suggest(name, names)
                tail = f"; did you mean '{hint}'?" if hint else f"; fleet has: {', '.join(names)}"
                problems.append(
                    (f"{where(i)}.placement.providers[{k}]", f"unknown provider '{name}'{tail}")
                )
    known = _known_regions(fleet)
    for i, job in enumerate(jobs):
        if job.serving is None or not job.serving.regions_near:
            continue
        for k, region in enumerate(job.serving.regions_near):
            if region not in known:
                hint = suggest(region, sorted(known))
                tail = f"; did you mean '{hint}'?" if hint else ""
                problems.append(
                    (f"{where(i)}.serving.regions_near[{k}]", f"unknown region '{region}'{tail}")
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
