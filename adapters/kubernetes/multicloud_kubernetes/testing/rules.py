"""What the fake API server refuses, and the selector and quantity grammar it reads.

Each rule cites where the real one lives, so that a manifest the fake accepts is one a
cluster would: the API server's validation (422 Invalid), ResourceQuota admission (403),
KubeRay's RayJob schema and Kueue's webhooks (403, "admission webhook ... denied the
request").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "KINDS", "Obj", "Refused", "check", "field_selector_matches", "label_selector_matches",
    "quantity", "ts",
]

Obj = dict[str, Any]
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

REASONS = {"BadRequest": 400, "Unauthorized": 401, "Forbidden": 403, "NotFound": 404,
           "MethodNotAllowed": 405, "AlreadyExists": 409, "Conflict": 409, "Invalid": 422,
           "TooManyRequests": 429, "InternalError": 500, "ServiceUnavailable": 503,
           "Timeout": 504}
KINDS = {"nodes": "Node", "pods": "Pod", "services": "Service", "resourcequotas":
         "ResourceQuota", "jobs": "Job", "rayjobs": "RayJob", "rayclusters": "RayCluster",
         "workloads": "Workload", "localqueues": "LocalQueue", "clusterqueues": "ClusterQueue"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_FIELD_PATHS = re.compile(
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]|"
    r"spec\.(nodeName|serviceAccountName)|status\.(hostIP|podIP|podIPs))$"
)


def ts(when: datetime) -> str:
    """An RFC 3339 timestamp as the API server writes it."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Refused(Exception):
    """What the API server answers instead: a ``metav1.Status`` failure."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = REASONS.get(reason, 500), reason, message


# ---------------------------------------------------------------------------- selectors


def _split(selector: str) -> list[str]:
    # Commas also separate the values inside "in (a,b)": split outside parentheses only.
    return [p.strip() for p in re.split(r",(?![^()]*\))", selector or "") if p.strip()]


def label_selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Evaluate a label selector (``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``!a``).

    Raises:
        ValueError: If a requirement cannot be parsed.
    """
    for req in _split(selector or ""):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", req):
            values = {v.strip() for v in m[3].split(",")}
            ok = (labels.get(m[1]) in values) == (m[2] == "in")
        elif m := re.fullmatch(r"([\w./-]+)\s*(!=|==|=)\s*(\S*)", req):
            ok = (labels.get(m[1]) == m[3]) == (m[2] != "!=")
        elif m := re.fullmatch(r"(!?)([\w./-]+)", req):
            ok = (m[2] in labels) != bool(m[1])
        else:
            raise ValueError(f"unparsable label selector requirement {req!r}")
        if not ok:
            return False
    return True


def field_selector_matches(selector: str | None, obj: Obj) -> bool:
    """Evaluate a field selector of ``path=value`` / ``path!=value`` terms."""
    for req in _split(selector or ""):
        path, op, value = re.fullmatch(r"([\w.]+)(!=|==|=)(.*)", req).groups()  # type: ignore[union-attr]
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (("" if cur is None else str(cur)) == value) == (op == "!="):
            return False
    return True


def quantity(text: Any) -> float:
    """A resource quantity (``500m``, ``64Gi``, ``8``) as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text or "0"))
    if m is None:
        raise Refused("Invalid", f"quantities must match the regular expression: {text!r}")
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10,
             "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(m[1]) * scale[m[2]]


# ---------------------------------------------------------------------------- validation
# What the API server refuses (422 Invalid) for the fields the adapter sends.


def _check_meta(kind: str, meta: Obj) -> None:
    name = str(meta.get("name") or "")
    # Services need a DNS-1035 label; Jobs and custom objects a DNS-1123 subdomain
    # (k8s.io/apimachinery/pkg/util/validation).
    ok = re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name) if kind == "services" else (
        _DNS_SUBDOMAIN.match(name))
    if not ok:
        raise Refused("Invalid", f'{KINDS[kind]} "{name}" is invalid: metadata.name')
    for key, value in (meta.get("labels") or {}).items():
        if not _LABEL_VALUE.match(str(value)) or len(str(value)) > 63:
            raise Refused("Invalid", f"metadata.labels: Invalid value: {value!r} ({key})")


def _check_pod(spec: Obj, at: str) -> None:
    """Pod spec rules of k8s.io/kubernetes/pkg/apis/core/validation (ValidatePodSpec)."""
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for v in spec.get("volumes") or []:
        medium = (v.get("emptyDir") or {}).get("medium", "")
        if "emptyDir" in v and medium not in ("", "Memory") and not medium.startswith("HugePages"):
            raise Refused("Invalid", f"{at}.volumes.emptyDir.medium: Unsupported value: {medium!r}")
    if spec.get("subdomain") and not _DNS_LABEL.match(spec["subdomain"]):
        raise Refused("Invalid", f"{at}.subdomain: must be a DNS label")
    if not spec.get("containers"):
        raise Refused("Invalid", f"{at}.containers: Required value")
    for c in spec["containers"]:
        where = f"{at}.containers[{c.get('name')}]"
        if not c.get("image"):
            raise Refused("Invalid", f"{where}.image: Required value")
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for name in sorted({*limits, *requests}):
            if "/" not in name or name.split("/")[0].endswith("kubernetes.io"):
                continue
            # Extended resources cannot be overcommitted: a request needs an equal limit,
            # in whole units (ValidateResourceRequirements).
            if name not in limits or (name in requests and quantity(requests[name]) !=
                                      quantity(limits[name])):
                raise Refused("Invalid", f"{where}.resources.requests[{name}]: must be equal "
                                         f"to {name} limit")
            if quantity(limits[name]) != int(quantity(limits[name])):
                raise Refused("Invalid", f"{where}.resources.limits[{name}]: must be an integer")
        for mount in c.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                raise Refused("Invalid", f"{where}.volumeMounts.name: Not found: "
                                         f"{mount.get('name')!r}")
        for e in c.get("env") or []:
            source = e.get("valueFrom") or {}
            if "value" in e and source:
                raise Refused("Invalid", f"{where}.env[{e['name']}].valueFrom: may not be "
                                         "specified when `value` is not empty")
            key = (source.get("secretKeyRef") or {}).get("key")
            if key is not None and not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
                raise Refused("Invalid", f"{where}.env[{e['name']}].valueFrom.secretKeyRef.key: "
                                         f"a valid config key must consist of alphanumeric "
                                         f"characters, '-', '_' or '.': {key!r}")
            path = (source.get("fieldRef") or {}).get("fieldPath")
            if path is not None and not _FIELD_PATHS.match(path):
                raise Refused("Invalid", f"{where}.env[{e['name']}].valueFrom.fieldRef."
                                         f"fieldPath: Unsupported value: {path!r}")


def _check_job(doc: Obj) -> None:
    """Job rules of k8s.io/kubernetes/pkg/apis/batch/validation (ValidateJobSpec)."""
    spec = doc.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    restart = pod.get("restartPolicy")
    if restart not in ("Never", "OnFailure"):
        raise Refused("Invalid", 'spec.template.spec.restartPolicy: Required value: valid '
                                 'values: "OnFailure", "Never"')
    if spec.get("podFailurePolicy") and restart != "Never":
        raise Refused("Invalid", 'spec.template.spec.restartPolicy: Invalid value: only '
                                 '"Never" is supported when podFailurePolicy is specified')
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        raise Refused("Invalid", "spec.completions: Required value: when completion mode "
                                 "is Indexed")
    _check_pod(pod, "spec.template.spec")


def _check_rayjob(doc: Obj) -> None:
    """The RayJob CRD's schema and KubeRay's ValidateRayJobSpec (ray-operator, v1.5)."""
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec")
    if cluster is None and not spec.get("clusterSelector"):
        raise Refused("Invalid", "spec.rayClusterSpec: Required value (no clusterSelector)")
    if (spec.get("backoffLimit") or 0) < 0:
        raise Refused("Invalid", "spec.backoffLimit: must be >= 0")
    head = (cluster or {}).get("headGroupSpec") or {}
    _check_pod((head.get("template") or {}).get("spec") or {}, "spec.rayClusterSpec.head")
    for g in (cluster or {}).get("workerGroupSpecs") or []:
        if not g.get("groupName") or not (
            g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 1 << 31)
        ):
            raise Refused("Invalid", "workerGroupSpecs: groupName and minReplicas <= replicas "
                                     "<= maxReplicas required")
        _check_pod((g.get("template") or {}).get("spec") or {}, f"workerGroupSpecs[{g}]")


def _check_kueue(plural: str, doc: Obj) -> None:
    """Kueue's webhooks on a Job or RayJob it manages (one with a queue-name label).

    The queue name must be a DNS-1123 subdomain (jobframework.ValidateQueueName); a RayJob
    must delete its cluster when it ends, make a new one and not autoscale
    (pkg/controller/jobs/rayjob/rayjob_webhook.go). A webhook's denial is a 403.
    """
    queue = ((doc.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)
    if queue is None:
        return
    problems = []
    if not _DNS_SUBDOMAIN.match(queue):
        problems.append(f"metadata.labels[{QUEUE_LABEL}]: Invalid value: {queue!r}")
    spec = doc.get("spec") or {}
    if plural == "rayjobs":
        if not spec.get("shutdownAfterJobFinishes"):
            problems.append("spec.shutdownAfterJobFinishes: Invalid value: false: a kueue "
                            "managed job should delete the cluster after finishing")
        if spec.get("clusterSelector"):
            problems.append("spec.clusterSelector: a kueue managed job should not use an "
                            "existing cluster")
        if (spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"):
            problems.append("spec.rayClusterSpec.enableInTreeAutoscaling: a kueue managed job "
                            "should not use autoscaling")
    if problems:
        raise Refused("Forbidden", f'admission webhook "v{plural[:-1]}.kb.io" denied the '
                      f"request: {'; '.join(problems)}")


def check(plural: str, doc: Obj, *, kueue: bool) -> None:
    """Refuse a create the API server (or, with ``kueue``, Kueue's webhooks) would refuse.

    Raises:
        Refused: With the API server's reason and wording.
    """
    _check_meta(plural, doc.get("metadata") or {})
    {"jobs": _check_job, "rayjobs": _check_rayjob}.get(plural, lambda _: None)(doc)
    if kueue and plural in ("jobs", "rayjobs"):
        _check_kueue(plural, doc)
