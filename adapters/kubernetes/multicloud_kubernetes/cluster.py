"""One Kubernetes API server, reached through the official client with its own configuration.

The calls a workload needs, one method each; ``NotFound`` and ``AlreadyExists`` are decided
here where they mean success (an idempotent create or delete), everything else is raised for
the adapter's error boundary.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from multicloud.errors import AuthError
from multicloud_kubernetes import kueue
from multicloud_kubernetes import manifests as mf
from multicloud_kubernetes.errors import is_already_exists, is_not_found

__all__ = ["Cluster"]

_DISCOVERY_CACHE_S = 300.0


def _client() -> Any:
    from kubernetes import client

    return client


class Cluster:
    """The client side of one cluster: its ``ApiClient``, the typed APIs and API discovery.

    Never touches ``kubernetes.client.Configuration``'s process-wide default, so two fleet
    entries can talk to two clusters in one process. Building it touches nothing; the
    configuration is read on first use.

    Args:
        provider: Fleet provider name (for errors).
        kubeconfig: Kubeconfig path (default: ``$KUBECONFIG`` or ``~/.kube/config``).
        context: Kubeconfig context (default: its current one).
        in_cluster: Use the pod's ServiceAccount instead of a kubeconfig.
        api_client: A ready ``kubernetes.client.ApiClient`` (the options above are ignored).
        request_timeout_s: Timeout of each request.
    """

    def __init__(
        self,
        provider: str,
        *,
        kubeconfig: str | None,
        context: str | None,
        in_cluster: bool,
        api_client: Any,
        request_timeout_s: float,
    ) -> None:
        self.provider = provider
        self.timeout = {"_request_timeout": request_timeout_s}
        self._kubeconfig, self._context, self._in_cluster = kubeconfig, context, in_cluster
        self._api_client = api_client
        self._lock = threading.Lock()
        self._served: dict[tuple[str, str, str], tuple[float, bool]] = {}

    def client(self) -> Any:
        """Return the ``ApiClient``, built on first use.

        Raises:
            AuthError: If the configuration is missing, malformed or incomplete.
        """
        with self._lock:
            if self._api_client is not None:
                return self._api_client
            from kubernetes import client, config

            cfg = client.Configuration()
            try:
                if self._in_cluster:
                    config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                else:
                    config.load_kube_config(  # type: ignore[no-untyped-call]
                        config_file=self._kubeconfig,
                        context=self._context,
                        client_configuration=cfg,
                        persist_config=False,
                    )
            except Exception as exc:
                # The loaders raise ConfigException, but also TypeError/KeyError on odd YAML:
                # no usable credentials, whatever the type.
                where = "in-cluster ServiceAccount" if self._in_cluster else (
                    self._kubeconfig or "default kubeconfig"
                )
                raise AuthError(
                    f"unusable Kubernetes configuration ({where}): {type(exc).__name__}: {exc}",
                    provider=self.provider,
                ) from exc
            # One quick retry of a dropped connection; the scheduler retries TransientError
            # with back-off on its own.
            cfg.retries = 1
            self._api_client = client.ApiClient(configuration=cfg)
            return self._api_client

    @property
    def core(self) -> Any:
        """``CoreV1Api``."""
        return _client().CoreV1Api(self.client())

    @property
    def batch(self) -> Any:
        """``BatchV1Api``."""
        return _client().BatchV1Api(self.client())

    @property
    def custom(self) -> Any:
        """``CustomObjectsApi``."""
        return _client().CustomObjectsApi(self.client())

    def plain(self, obj: Any) -> dict[str, Any]:
        """Return a client model as the JSON dict the API server sent."""
        doc: dict[str, Any] = self.client().sanitize_for_serialization(obj)
        return doc

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Return True if the API server serves ``plural`` in ``group/version`` (cached 5 min).

        API discovery needs no RBAC beyond the built-in ``system:discovery`` role, unlike
        reading a CRD.
        """
        key, now = (group, version, plural), time.monotonic()
        cached = self._served.get(key)
        if cached is not None and now - cached[0] < _DISCOVERY_CACHE_S:
            return cached[1]
        try:
            listed = self.custom.get_api_resources(group, version, **self.timeout)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            present = False
        else:
            present = any(r.name == plural for r in (listed.resources or []))
        self._served[key] = (now, present)
        return present

    def kueue_version(self) -> str | None:
        """Return the newest Kueue API version the cluster serves Workloads in, if any."""
        return next((v for v in kueue.VERSIONS if self.serves(kueue.GROUP, v, "workloads")), None)

    def kueue_workloads(self, ns: str, version: str) -> list[dict[str, Any]]:
        """Return the Kueue Workloads of a namespace."""
        listed = self.custom.list_namespaced_custom_object(kueue.GROUP, version, ns, "workloads",
                                                           **self.timeout)
        return list(listed.get("items") or [])

    def local_queue(self, ns: str, name: str, version: str) -> dict[str, Any] | None:
        """Return a Kueue LocalQueue, or None when there is no such queue."""
        try:
            return dict(self.custom.get_namespaced_custom_object(
                kueue.GROUP, version, ns, "localqueues", name, **self.timeout))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    def nodes_and_pods(self, node_selector: str | None = None) -> tuple[list[Any], list[Any]]:
        """Return the nodes (matching ``node_selector``) and every live pod of every namespace."""
        selector = {"label_selector": node_selector} if node_selector else {}
        nodes = self.core.list_node(**selector, **self.timeout).items or []
        pods = self.core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed", **self.timeout
        ).items or []
        return nodes, pods

    def quotas(self, ns: str) -> list[Any]:
        """Return the ResourceQuotas of a namespace."""
        return self.core.list_namespaced_resource_quota(ns, **self.timeout).items or []

    def find(self, ns: str, name: str, *, rayjobs: bool) -> dict[str, Any] | None:
        """Return the Job (or, with ``rayjobs``, the RayJob) named ``name``, or None."""
        try:
            return self.plain(self.batch.read_namespaced_job(name, ns, **self.timeout))
        except Exception as exc:
            if not is_not_found(exc):
                raise
        if not rayjobs or not self.serves(*mf.RAY):
            return None
        try:
            obj = self.custom.get_namespaced_custom_object(*mf.RAY[:2], ns, mf.RAY[2], name,
                                                          **self.timeout)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return dict(obj)

    def create(self, ns: str, body: dict[str, Any]) -> None:
        """Create a Job and its headless Service, or a RayJob (``body["kind"]``)."""
        if body["kind"] == "RayJob":
            self.custom.create_namespaced_custom_object(*mf.RAY[:2], ns, mf.RAY[2], body,
                                                        **self.timeout)
            return
        job = self.batch.create_namespaced_job(ns, _client().V1Job.from_dict(body), **self.timeout)
        self.ensure_service(ns, job.metadata.name, body["metadata"]["labels"], job.metadata.uid)

    def ensure_service(self, ns: str, name: str, labels: Mapping[str, str], uid: str) -> None:
        """Create the headless Service of Job ``name`` (uid ``uid``) unless it exists."""
        body = _client().V1Service.from_dict(mf.headless_service(name, labels, uid))
        try:
            self.core.create_namespaced_service(ns, body, **self.timeout)
        except Exception as exc:
            if not is_already_exists(exc):
                raise

    def delete(self, ns: str, kind: str, name: str) -> None:
        """Delete a Job or RayJob with Foreground propagation; gone already is fine."""
        try:
            if kind == mf.RAYJOB:
                self.custom.delete_namespaced_custom_object(
                    *mf.RAY[:2], ns, mf.RAY[2], name, propagation_policy="Foreground",
                    **self.timeout)
            else:
                self.batch.delete_namespaced_job(name, ns, propagation_policy="Foreground",
                                                 **self.timeout)
        except Exception as exc:
            if not is_not_found(exc):
                raise

    def workloads(
        self, ns: str, selector: str, *, rayjobs: bool
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Return ``name → (kind, object)`` of the Jobs (and RayJobs) matching ``selector``."""
        out = {}
        for job in self.batch.list_namespaced_job(ns, label_selector=selector,
                                                  **self.timeout).items or []:
            doc = self.plain(job)
            out[doc["metadata"]["name"]] = (mf.JOB, doc)
        if rayjobs and self.serves(*mf.RAY):
            listed = self.custom.list_namespaced_custom_object(
                *mf.RAY[:2], ns, mf.RAY[2], label_selector=selector, **self.timeout)
            out.update({o["metadata"]["name"]: (mf.RAYJOB, o) for o in listed.get("items") or []})
        return out

    def pods(self, ns: str) -> dict[str, list[Any]]:
        """Return the pods of multicloud workloads in ``ns``, by workload name."""
        out: dict[str, list[Any]] = defaultdict(list)
        for pod in self.core.list_namespaced_pod(ns, label_selector=mf.WORKLOAD,
                                                 **self.timeout).items or []:
            out[(pod.metadata.labels or {}).get(mf.WORKLOAD, "")].append(pod)
        return out

    def close(self) -> None:
        """Close the connection pool of a client this cluster built."""
        with self._lock:
            client, self._api_client = self._api_client, None
        if client is not None and hasattr(client, "close"):
            client.close()
