"""Idempotency and ownership: what every adapter stamps on what it creates.

* Names derive from the request id, so a re-sent launch computes the same names and finds
  what the first send created (:func:`resource_name`).
* A spec digest travels with the resources; a request id met again with another digest is
  refused, as EC2 refuses a reused ``ClientToken`` (:func:`spec_digest`, :func:`refuse_reuse`).
* One logical set of ownership labels (:class:`Ownership`) is written in each cloud's key
  style (:class:`LabelStyle`) and parsed back by one function for the orphan sweep.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from multicloud.errors import InvalidRequestError, error_scope
from multicloud.provider import Handle, LaunchSpec, Offer, OwnedWorkload

__all__ = [
    "AWS_TAGS",
    "AZURE_TAGS",
    "GCP_LABELS",
    "KUBERNETES_LABELS",
    "OCI_TAGS",
    "LabelStyle",
    "Ownership",
    "refuse_reuse",
    "region_matches",
    "resource_name",
    "spec_digest",
]


def region_matches(globs: Sequence[str], region: str) -> bool:
    """Return True if ``region`` matches one of the globs (no globs: every region).

    Args:
        globs: Region globs such as ``us-*``.
        region: A region name.

    Returns:
        Whether the region is in scope.
    """
    return not globs or any(fnmatch.fnmatchcase(region, g) for g in globs)


def resource_name(fleet_name: str, request_id: str, *, length: int = 20) -> str:
    """Return the deterministic base name of a launch's resources.

    The fleet name is part of the hash, so two fleet entries on one account never share a
    name; node ``i`` of a gang is ``f"{base}-{i}"``.

    Args:
        fleet_name: Fleet provider name.
        request_id: The launch's idempotency key.
        length: Hex digits of the hash (names stay valid on every cloud: lowercase,
            starting with a letter, at most ``length + 3`` characters).

    Returns:
        ``mc-`` and ``length`` hex digits.
    """
    digest = hashlib.sha256(f"{fleet_name}|{request_id}".encode()).hexdigest()
    return f"mc-{digest[:length]}"


def spec_digest(spec: LaunchSpec, offer: Offer) -> str:
    """Return a short digest of everything a launch asks for.

    Two launches under one request id are "the same" when this digest is: the job and its
    attempt, the workload, the gang, the market and where (region, zone, instance type,
    reservation).

    Args:
        spec: The launch.
        offer: The offer launched on.

    Returns:
        16 hex digits.
    """
    doc = json.dumps(
        [
            dataclasses.asdict(spec),
            offer.provider,
            offer.region,
            offer.zone,
            offer.instance_type,
            offer.reservation,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def refuse_reuse(
    provider: str, request_id: str, found: str | None, digest: str, *, what: str, region: str = ""
) -> None:
    """Refuse a request id that already launched something else.

    Args:
        provider: Fleet provider name.
        request_id: The launch's idempotency key.
        found: Digest on the resource found under the request id's name.
        digest: Digest of the launch being sent now.
        what: The resource found (for the message).
        region: Region of the launch, for the error's scope.

    Raises:
        InvalidRequestError: If the digests differ.
    """
    if found != digest:
        raise InvalidRequestError(
            f"request id {request_id} was already used for another launch ({what}); "
            "a different spec needs a different request id",
            provider=provider,
            scope=error_scope(provider, region or None),
        )


_LABEL_MAX = 63


@dataclass(frozen=True)
class LabelStyle:
    """How one cloud spells ownership keys and which values it accepts.

    Attributes:
        prefix: Key prefix, joined to the logical name (``multicloud:`` + ``job``).
        strict: Values must be label-safe (lowercase for GCP; DNS-label-like for
            Kubernetes) and at most 63 characters; otherwise any value is kept as is.
        lowercase: Values are lowercased (GCP).
        max_value: Longest value the cloud keeps (strict styles: 63).
    """

    prefix: str
    strict: bool = False
    lowercase: bool = False
    max_value: int | None = None

    def key(self, name: str) -> str:
        """Return the cloud's key for a logical label name."""
        return f"{self.prefix}{name}"

    def value(self, text: str) -> str:
        """Return ``text`` as a value this cloud accepts.

        A value that had to change keeps a short hash of the original, so two different
        values never meet under one label.

        Args:
            text: Any string.

        Returns:
            The value.
        """
        if not self.strict:
            if self.max_value is None or len(text) <= self.max_value:
                return text
            return _shortened(text, text, self.max_value)
        allowed = r"[^a-z0-9_-]" if self.lowercase else r"[^A-Za-z0-9_.-]"
        clean = re.sub(allowed, "-", text.lower() if self.lowercase else text)
        if not self.lowercase:
            clean = clean.strip("-_.")
        limit = min(self.max_value or _LABEL_MAX, _LABEL_MAX)
        if clean == text and len(clean) <= limit:
            return clean
        return _shortened(text, clean, limit)


def _shortened(original: str, clean: str, limit: int) -> str:
    # A value that had to change keeps a short hash of the original, so two different
    # values never meet under one label.
    digest = hashlib.sha256(original.encode()).hexdigest()[:8]
    head = clean[: limit - 9].rstrip("-_.")
    return f"{head}-{digest}" if head else digest


AWS_TAGS = LabelStyle("multicloud:", max_value=256)
AZURE_TAGS = LabelStyle("multicloud:", max_value=256)
OCI_TAGS = LabelStyle("multicloud-", max_value=256)
GCP_LABELS = LabelStyle("multicloud-", strict=True, lowercase=True)
KUBERNETES_LABELS = LabelStyle("multicloud.io/", strict=True)

_FIELDS = ("job", "attempt", "install", "request", "fleet", "spec")


@dataclass(frozen=True)
class Ownership:
    """Who a resource belongs to: the logical labels every adapter writes.

    Attributes:
        job: Scheduler job id.
        attempt: Attempt number.
        install: Scheduler install id (the orphan sweep lists by it).
        request: The launch's request id.
        fleet: Fleet provider name.
        spec: ``spec_digest`` of the launch.
    """

    job: str
    attempt: int
    install: str
    request: str
    fleet: str
    spec: str

    @classmethod
    def of(cls, spec: LaunchSpec, offer: Offer, request_id: str) -> Ownership:
        """Return the ownership of a launch.

        Args:
            spec: The launch.
            offer: The offer launched on.
            request_id: Its idempotency key.

        Returns:
            The ownership.
        """
        return cls(
            job=spec.job_id,
            attempt=spec.attempt,
            install=spec.install_id,
            request=request_id,
            fleet=offer.provider,
            spec=spec_digest(spec, offer),
        )

    def labels(self, style: LabelStyle) -> dict[str, str]:
        """Return the labels (or tags) in a cloud's style."""
        return {style.key(name): style.value(str(getattr(self, name))) for name in _FIELDS}

    @staticmethod
    def selector(style: LabelStyle, install_id: str) -> tuple[str, str]:
        """Return the ``(key, value)`` that lists everything an install launched."""
        return style.key("install"), style.value(install_id)

    @classmethod
    def parse(cls, labels: Mapping[str, str], style: LabelStyle) -> Ownership | None:
        """Read the ownership back from a resource's labels.

        Args:
            labels: The resource's labels or tags.
            style: The cloud's style.

        Returns:
            The ownership as written (values as the cloud keeps them), or None when the
            resource carries no complete multicloud ownership.
        """
        values = {name: labels.get(style.key(name)) for name in _FIELDS}
        if any(v is None for v in values.values()):
            return None
        try:
            attempt = int(str(values["attempt"]))
        except ValueError:
            return None
        return cls(
            job=str(values["job"]),
            attempt=attempt,
            install=str(values["install"]),
            request=str(values["request"]),
            fleet=str(values["fleet"]),
            spec=str(values["spec"]),
        )

    def belongs_to(self, install_id: str, fleet_name: str, style: LabelStyle) -> bool:
        """Return True if the resource is this install's, launched through this fleet entry."""
        return self.install == style.value(install_id) and self.fleet == style.value(fleet_name)

    def owned(self, handle: Handle) -> OwnedWorkload:
        """Return the sweep's view of the workload behind ``handle``."""
        return OwnedWorkload(handle=handle, job_id=self.job, attempt=self.attempt)
