"""Adapter benchmark (issues 4/5): writes bench/results/adapters.json.

Measures the real cloud adapters (AWS, GCP, Azure, CoreWeave, OCI, and the generic Kubernetes
adapter on a cluster running Kueue), each behind its real SDK client and its in-package fake
served on 127.0.0.1 (``multicloud_<cloud>.testing.serve``).
**The figures are adapter + SDK + fake + loopback overhead, not cloud latency**: a real cloud
adds its own network round trips and server time to every request counted here.

Per adapter, each figure repeated ``--repeat`` times (median and max reported, samples kept):

* quota skip: from the ``launch()`` call to the raised ``QuotaError`` for a region whose
  quota the fake reports as zero (issue 4/5: "a region with no quota is skipped in about a
  second, not after a failed launch"). ``cold_fresh_adapter``: a new adapter instance, nothing
  cached (SDK clients, listings, quota); ``cold_quota``: an adapter that has already answered
  ``offers()`` (clients and listings warm) but has not read the quota yet, as in a long-lived
  scheduler; ``warm``: the same call again (quota cached, where the adapter caches it). The
  fake's log is checked for launch requests (EC2 ``RunInstances``, Compute
  ``instances.insert``, ARM VM ``PUT``, Kubernetes Job ``POST``): there must be none.
  CoreWeave's quota is a namespace ResourceQuota on ``requests.nvidia.com/gpu`` (what its
  adapter lists before creating a Job), in a namespace of its own; the generic Kubernetes
  cluster's is a stopped Kueue LocalQueue (``Active=False``), in a namespace of its own.
* ``offers()`` for the cloud's whole catalog (no region filter): cold (a new adapter) and warm
  (the same adapter again, within its cache TTL), and the number of offers. CoreWeave's offers
  are the cluster's node pools: the fake is given one node per catalog row (class = catalog
  instance type), plus the nodes the launches below need.
* ``launch()`` of one single-node on-demand workload on a warm adapter, then the idempotent
  re-send of the same request id (which must return the same handle and create nothing).
* ``status()`` for N = 1, 10, 100 handles, all in one region / zone / namespace (one batched
  call): wall time per call and per handle, and the HTTP requests the call made (counted by
  the fake's own request log; for AWS by a botocore ``before-send`` hook on the adapter's
  session, with the fake's ``DescribeInstances`` count beside it). The handles are the
  launches above topped up (untimed) to ``--handles`` workloads, all live while status runs.
  Where the adapter lists every workload of its install / resource group / namespace and
  picks the handles out (GCP, Azure, CoreWeave), a call's cost follows the number of live
  workloads, not N; ``status_few_live`` times ``status()`` of one handle while only the
  ``--repeat`` launched workloads exist, for comparison. AWS asks ``DescribeInstances``
  for the handles' request-id tags, yet moto's answer time also grows with live instances.

Before timing, every fake is warmed with one untimed ``offers()`` from a throwaway adapter
(moto builds a region's EC2 backend on first use, up to a second, which is the fake's cost).
The whole run holds ``multicloud_gcp.testing.block_external_network``: any connection to a
host other than 127.0.0.1 / ::1 is refused and recorded.

Run: ``.venv/bin/python -m bench.adapters [--repeat 5] [--handles 100] [--only aws,gcp]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from multicloud.catalog import load_catalog
from multicloud.errors import QuotaError
from multicloud.provider import (
    Handle,
    LaunchSpec,
    MarketKind,
    Offer,
    ResourceRequest,
    request_id,
)

RESULTS = Path(__file__).resolve().parent / "results" / "adapters.json"
CLOUDS = ("aws", "gcp", "azure", "coreweave", "kubernetes", "oci")
INSTALL = "bench"
SDKS: dict[str, tuple[str, ...]] = {
    "aws": ("boto3", "botocore", "moto"),
    "gcp": ("google-cloud-compute", "google-cloud-tpu", "google-api-core", "google-auth"),
    "azure": ("azure-mgmt-compute", "azure-core", "azure-identity"),
    "coreweave": ("kubernetes", "urllib3"),
    "kubernetes": ("kubernetes", "urllib3"),
    "oci": ("oci",),
}
NOTE = (
    "adapter + SDK + in-package fake + loopback (127.0.0.1) overhead on this machine, "
    "not cloud latency"
)


# ----------------------------------------------------------------------------- helpers


def summary_ms(values: list[float]) -> dict[str, Any]:
    """Median and max of durations given in seconds, in milliseconds, with the samples.

    Args:
        values: Durations in seconds.

    Returns:
        ``{"median_ms", "max_ms", "samples_ms"}``.
    """
    ms = [v * 1e3 for v in values]
    return {
        "median_ms": round(statistics.median(ms), 3),
        "max_ms": round(max(ms), 3),
        "samples_ms": [round(v, 3) for v in ms],
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` and return its result and wall time in seconds."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def spec(job: str) -> LaunchSpec:
    """A single-node on-demand launch spec."""
    return LaunchSpec(
        job_id=job,
        job_name=f"{job}-name",
        attempt=1,
        nodes=1,
        market=MarketKind.ON_DEMAND,
        install_id=INSTALL,
        image="ghcr.io/acme/train:1",
        command="python train.py",
    )


def sdk_versions(cloud: str) -> dict[str, str | None]:
    """Installed versions of a cloud's SDK packages (None when not installed)."""
    out: dict[str, str | None] = {}
    for dist in SDKS[cloud]:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ----------------------------------------------------------------------------- clouds


class Cloud:
    """What the benchmark needs to know of one adapter and its fake.

    Attributes:
        name: Cloud name.
        launch_region: Region the launches and status calls use.
        quota_region: Region (CoreWeave: namespace) whose quota is set to zero.
        launch_request: What counts as a launch request in the fake's log.
    """

    name = ""
    launch_region = ""
    quota_region = ""
    launch_request = ""

    def __init__(self) -> None:
        self.fake: Any = None

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        """Return the fake's context manager."""
        raise NotImplementedError

    def prepare(self, nodes: int) -> None:
        """Set the fake up once served (quotas of the launch region, nodes)."""

    def make(self, **options: Any) -> Any:
        """Build a fresh adapter pointed at the fake."""
        raise NotImplementedError

    def launch_offer(self, offers: list[Offer]) -> Offer:
        """The offer the launches use."""
        raise NotImplementedError

    def quota_offer(self, offers: list[Offer]) -> Offer:
        """An offer in the quota region, whose quota :meth:`zero_quota` sets to zero."""
        raise NotImplementedError

    def zero_quota(self, offer: Offer) -> str:
        """Make the fake report no quota for ``offer``; return what was set."""
        raise NotImplementedError

    def quota_adapter(self) -> Any:
        """A fresh adapter for the quota measurements."""
        return self.make()

    def launch_requests(self) -> int:
        """Launch requests the fake has received so far."""
        raise NotImplementedError

    def http_requests(self) -> int:
        """HTTP requests received so far (see the module docstring for AWS)."""
        raise NotImplementedError

    def http_detail(self) -> dict[str, int]:
        """Extra request counts worth recording next to :meth:`http_requests`."""
        return {}

    def notes(self) -> list[str]:
        """What a reader needs to read this cloud's figures right."""
        return []


def _first(offers: list[Offer], pred: Callable[[Offer], bool], what: str) -> Offer:
    for o in offers:
        if pred(o):
            return o
    raise LookupError(f"no offer for {what}")


class AWS(Cloud):
    """AWS: moto's threaded server plus the fake's Service Quotas / gap layer."""

    name = "aws"
    launch_region = "us-east-1"
    quota_region = "us-west-2"
    launch_request = "EC2 RunInstances accepted as a new launch (ClientToken)"

    def __init__(self) -> None:
        super().__init__()
        self.sends = 0

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        from multicloud_aws.testing import serve

        return serve()

    def _session(self) -> Any:
        session = self.fake.session()  # refuses any URL but 127.0.0.1

        def count(**_: Any) -> None:
            self.sends += 1

        session.events.register("before-send", count)
        return session

    def make(self, **options: Any) -> Any:
        from multicloud_aws import AWSProvider

        return AWSProvider(_session=self._session(), **{**self.fake.options, **options})

    def prepare(self, nodes: int) -> None:
        from multicloud_aws import quota_code

        # Plenty of on-demand quota where the launches go (moto has no EC2 quotas of its own).
        code = quota_code("p5.48xlarge", MarketKind.ON_DEMAND)
        assert code is not None
        self.fake.set_quota(self.launch_region, code, 1e9)

    def launch_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: (
                o.region == self.launch_region
                and o.instance_type == "p5.48xlarge"
                and o.reservation is None
            ),
            "p5.48xlarge in us-east-1",
        )

    def quota_offer(self, offers: list[Offer]) -> Offer:
        from multicloud_aws import quota_code

        # The launches' instance type when the region lists it, else any with a quota code.
        ranked = sorted(offers, key=lambda o: o.instance_type != "p5.48xlarge")
        return _first(
            ranked,
            lambda o: (
                o.region == self.quota_region
                and o.reservation is None
                and o.price is not None
                and quota_code(o.instance_type, MarketKind.ON_DEMAND) is not None
            ),
            f"an on-demand offer with a quota code in {self.quota_region}",
        )

    def zero_quota(self, offer: Offer) -> str:
        from multicloud_aws import quota_code

        code = quota_code(offer.instance_type, MarketKind.ON_DEMAND)
        assert code is not None
        self.fake.set_quota(offer.region, code, 0)
        return f"Service Quotas ec2/{code} = 0 vCPUs in {offer.region}"

    def launch_requests(self) -> int:
        # RunInstances the fake accepted as a new launch: a re-send with the same ClientToken
        # reaches EC2 and gets the first launch's answer, creating nothing.
        return sum(self.fake.launches.values())

    def http_requests(self) -> int:
        return self.sends

    def http_detail(self) -> dict[str, int]:
        return {"fake_DescribeInstances": len(self.fake.calls("DescribeInstances"))}

    def notes(self) -> list[str]:
        return [
            "offers: catalog rows narrowed by moto's DescribeInstanceTypeOfferings, so fewer "
            "offers than catalog rows",
            "http_requests_per_call is counted client-side (botocore before-send hook); "
            "fake_log_per_call is the fake's own DescribeInstances count",
            "the quota check runs after the region's zone names (DescribeAvailabilityZones), "
            "as GetServiceQuota then DescribeInstanceTypes (vCPUs); no DescribeInstances comes "
            "before RunInstances (EC2 de-duplicates a re-sent launch by its ClientToken)",
        ]


class GCP(Cloud):
    """GCP: the Compute / TPU / Billing REST fake."""

    name = "gcp"
    launch_region = "us-central1"
    quota_region = "europe-west4"
    launch_request = "Compute instances.insert"

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        from multicloud_gcp.testing import serve

        return serve()

    def make(self, **options: Any) -> Any:
        from multicloud_gcp import GCPProvider

        return GCPProvider(**{**self.fake.options, **options})

    @staticmethod
    def _metric(instance_type: str) -> str | None:
        from multicloud_gcp.offers import GPU_QUOTA_METRICS

        for prefix, metric, _ in GPU_QUOTA_METRICS:
            if instance_type.startswith(prefix):
                return metric
        return None

    def prepare(self, nodes: int) -> None:
        from multicloud_gcp.testing import GPU_METRICS

        for metric in GPU_METRICS:
            self.fake.set_quota(self.launch_region, metric, 1e9)

    def launch_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: (
                o.region == self.launch_region
                and o.instance_type == "a3-highgpu-8g"
                and o.price is not None
            ),
            "a3-highgpu-8g in us-central1",
        )

    def quota_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: (
                o.region == self.quota_region
                and o.price is not None
                and self._metric(o.instance_type) is not None
            ),
            f"an on-demand GPU VM offer in {self.quota_region}",
        )

    def zero_quota(self, offer: Offer) -> str:
        metric = self._metric(offer.instance_type)
        assert metric is not None
        self.fake.set_quota(offer.region, metric, 0)
        return f"regions.get quota {metric} limit 0 in {offer.region}"

    def launch_requests(self) -> int:
        return len(self.fake.calls_to("instances.insert"))

    def http_requests(self) -> int:
        return len(self.fake.calls)


class Azure(Cloud):
    """Azure: the fake Resource Manager."""

    name = "azure"
    launch_region = "eastus"
    quota_region = "westus3"
    launch_request = "ARM virtualMachines PUT"

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        from multicloud_azure.testing import serve

        return serve()

    def make(self, **options: Any) -> Any:
        from multicloud_azure import AzureProvider

        return AzureProvider(**{**self.fake.options, **options})

    def prepare(self, nodes: int) -> None:
        from multicloud_azure.testing import FAMILIES

        # Every created VM consumes the fake's vCPU usage: room for all the launches.
        for name in {*FAMILIES.values(), "cores", "lowPriorityCores"}:
            self.fake.set_quota(self.launch_region, name, 10**9)

    def launch_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: (
                o.region == self.launch_region
                and o.instance_type == "Standard_ND96isr_H100_v5"
                and o.price is not None
            ),
            "Standard_ND96isr_H100_v5 in eastus",
        )

    def quota_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: o.region == self.quota_region and o.price is not None,
            f"an on-demand offer in {self.quota_region}",
        )

    def zero_quota(self, offer: Offer) -> str:
        from multicloud_azure.testing import family_of

        family = family_of(offer.instance_type)
        self.fake.set_quota(offer.region, family, 0)
        return f"usages {family} limit 0 vCPUs in {offer.region}"

    def launch_requests(self) -> int:
        return int(self.fake.count("PUT", "virtualMachines.createOrUpdate"))

    def http_requests(self) -> int:
        return len(self.fake.requests)


class CoreWeave(Cloud):
    """CoreWeave: the fake Kubernetes API server (nodes, pods, Jobs, ResourceQuotas)."""

    name = "coreweave"
    launch_region = "US-EAST-04"
    quota_region = "quota-zero"  # a namespace, not a region: see zero_quota
    launch_request = "Kubernetes batch/v1 Job POST"

    def __init__(self) -> None:
        super().__init__()
        rows = [r for r in load_catalog().rows if r.provider == "coreweave"]
        # The node class label is the catalog's instance type, mapped to its accelerator.
        self.classes = {r.instance_type: r.accelerator for r in rows}
        self.rows = sorted({(r.region, r.instance_type, r.count) for r in rows})

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        from multicloud_coreweave.testing import serve

        return serve()

    def make(self, **options: Any) -> Any:
        from multicloud_coreweave import CoreWeaveProvider

        merged = {**self.fake.options, "gpu_classes": self.classes, **options}
        return CoreWeaveProvider(**merged)

    type_label = "gpu_class"  # the fake's add_node argument naming the node's type

    def prepare(self, nodes: int) -> None:
        for region, itype, gpus in self.rows:
            self.fake.add_node(
                f"{itype}-{region.lower()}-0", gpus=gpus, region=region, **{self.type_label: itype}
            )
        # One free node per launched single-node Job, plus the quota probes' offer.
        self.fake.add_nodes(
            nodes + 2,
            prefix="h100-extra",
            gpus=8,
            region=self.launch_region,
            **{self.type_label: "cw-hgx-h100-8x"},
        )

    def launch_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: o.region == self.launch_region and o.instance_type == "cw-hgx-h100-8x",
            "cw-hgx-h100-8x in US-EAST-04",
        )

    def quota_offer(self, offers: list[Offer]) -> Offer:
        return self.launch_offer(offers)

    def quota_adapter(self) -> Any:
        return self.make(namespace=self.quota_region)

    def zero_quota(self, offer: Offer) -> str:
        self.fake.set_quota("gpus", {"requests.nvidia.com/gpu": "0"}, namespace=self.quota_region)
        return (
            f"ResourceQuota gpus: requests.nvidia.com/gpu=0 in namespace {self.quota_region} "
            f"(pool {offer.instance_type} in {offer.region})"
        )

    def launch_requests(self) -> int:
        return int(self.fake.count("POST", r"/apis/batch/v1/namespaces/[^/]+/jobs$"))

    def notes(self) -> list[str]:
        unpriced = sorted(
            {r.instance_type for r in load_catalog().rows if r.provider == "coreweave"}
            - {
                r.instance_type
                for r in load_catalog().rows
                if r.provider == "coreweave" and r.price
            }
        )
        return [
            "offers: the fake cluster has one node per catalog row (node class label = catalog "
            "instance type, mapped through the gpu_classes option); pools without a list price "
            f"are left out by the adapter ({', '.join(unpriced) or 'none'})",
            "quota: the adapter does not cache ResourceQuotas; every launch lists them, so "
            "cold_quota and warm do the same requests",
            "quota: the zero ResourceQuota is in a namespace of its own (quota-zero), since a "
            "Kubernetes quota is per namespace, not per region",
        ]

    def http_requests(self) -> int:
        return len(self.fake.requests)


class Kubernetes(CoreWeave):
    """A generic GPU cluster running Kueue: the same node pools as CoreWeave's catalog rows,
    labelled by GPU feature discovery, every launch through a LocalQueue."""

    name = "kubernetes"
    type_label = "product"

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        from multicloud_kubernetes.testing import serve

        return serve(kueue="v1beta2")

    def make(self, **options: Any) -> Any:
        from multicloud_kubernetes import KubernetesProvider

        merged = {**self.fake.options, "gpu_classes": self.classes, "list_prices": "coreweave",
                  "local_queue": "team", **options}
        return KubernetesProvider(**merged)

    def prepare(self, nodes: int) -> None:
        self.fake.kueue.add_cluster_queue("gpus", {"nvidia.com/gpu": str(8 * (nodes + 2))})
        self.fake.kueue.add_local_queue("team", "gpus")
        super().prepare(nodes)

    def zero_quota(self, offer: Offer) -> str:
        self.fake.kueue.add_local_queue("team", "gpus", namespace=self.quota_region, stopped=True)
        return (
            f"Kueue LocalQueue team stopped (Active=False) in namespace {self.quota_region} "
            f"(pool {offer.instance_type} in {offer.region})"
        )

    def notes(self) -> list[str]:
        return [
            "offers: one node per CoreWeave catalog row, labelled nvidia.com/gpu.product = "
            "catalog instance type (gpu_classes maps it), priced by list_prices: coreweave",
            "launch: the Job is created suspended with the queue-name label; the launch first "
            "reads the LocalQueue (API discovery of kueue.x-k8s.io cached 5 minutes)",
            "status: Kueue's Workloads are listed once per namespace beside Jobs and pods",
            "quota: a stopped LocalQueue in a namespace of its own (quota-zero)",
        ]


# ----------------------------------------------------------------------------- measurements


def bench_quota(c: Cloud, offers: list[Offer], repeat: int) -> dict[str, Any]:
    """Time ``launch()`` → ``QuotaError`` in a zero-quota region; count launch requests."""
    offer = c.quota_offer(offers)
    what = c.zero_quota(offer)
    before = c.launch_requests()
    http_before = c.http_requests()
    cold_fresh: list[float] = []
    cold_quota: list[float] = []
    warm: list[float] = []
    errors: list[str] = []

    def refused(adapter: Any, job: str) -> float:
        s = spec(job)
        t0 = time.perf_counter()
        try:
            adapter.launch(offer, s, request_id=request_id(job, 1, offer.region))
        except QuotaError as exc:
            took = time.perf_counter() - t0
            errors.append(str(exc))
            return took
        raise AssertionError(f"{c.name}: launch in a zero-quota region was not refused")

    for i in range(repeat):
        cold_fresh.append(refused(c.quota_adapter(), f"quota-fresh-{i}"))
        adapter = c.quota_adapter()
        adapter.offers(ResourceRequest(regions=(offer.region,)))
        cold_quota.append(refused(adapter, f"quota-cold-{i}"))
        warm.append(refused(adapter, f"quota-warm-{i}"))
    launches = c.launch_requests() - before
    assert launches == 0, f"{c.name}: {launches} launch request(s) reached the fake"
    return {
        "offer": {"region": offer.region, "zone": offer.zone, "instance_type": offer.instance_type},
        "quota_set": what,
        "cold_fresh_adapter": summary_ms(cold_fresh),
        "cold_quota": summary_ms(cold_quota),
        "warm": summary_ms(warm),
        "launch_requests_reaching_fake": launches,
        "launch_request_counted": c.launch_request,
        "attempts": 3 * repeat,
        "http_requests_total": c.http_requests() - http_before,
        "error_example": errors[0] if errors else None,
    }


def _one_or_all(values: set[int]) -> int | list[int]:
    return next(iter(values)) if len(values) == 1 else sorted(values)


def bench_offers(c: Cloud, repeat: int) -> tuple[dict[str, Any], list[Offer]]:
    """Time ``offers()`` over the whole catalog: new adapter (cold), then again (warm)."""
    cold: list[float] = []
    warm: list[float] = []
    counts: set[int] = set()
    http_cold: set[int] = set()
    http_warm: set[int] = set()
    last: list[Offer] = []
    for _ in range(repeat):
        adapter = c.make()
        before = c.http_requests()
        last, secs = timed(lambda a=adapter: a.offers(ResourceRequest()))
        cold.append(secs)
        counts.add(len(last))
        http_cold.add(c.http_requests() - before)
        before = c.http_requests()
        again, secs = timed(lambda a=adapter: a.offers(ResourceRequest()))
        warm.append(secs)
        counts.add(len(again))
        http_warm.add(c.http_requests() - before)
    return (
        {
            "cold_new_adapter": summary_ms(cold),
            "warm_cached": summary_ms(warm),
            "http_requests_cold": _one_or_all(http_cold),
            "http_requests_warm": _one_or_all(http_warm),
            "offers": sorted(counts)[0] if len(counts) == 1 else sorted(counts),
            "regions": len({o.region for o in last}),
        },
        last,
    )


def bench_launch(
    c: Cloud, adapter: Any, offer: Offer, repeat: int
) -> tuple[dict[str, Any], list[Handle]]:
    """Time single-node launches and their idempotent re-sends (one new workload each)."""
    first: list[float] = []
    resend: list[float] = []
    handles: list[Handle] = []
    before = c.launch_requests()
    for i in range(repeat):
        s = spec(f"launch-{i}")
        rid = request_id(s.job_id, 1, offer.region)
        h, secs = timed(lambda s=s, rid=rid: adapter.launch(offer, s, request_id=rid))
        first.append(secs)
        launched = c.launch_requests()
        h2, secs = timed(lambda s=s, rid=rid: adapter.launch(offer, s, request_id=rid))
        resend.append(secs)
        assert h2.id == h.id, f"{c.name}: re-send returned another handle"
        assert c.launch_requests() == launched, f"{c.name}: re-send created something"
        handles.append(h)
    made = c.launch_requests() - before
    return (
        {
            "offer": {
                "region": offer.region,
                "zone": offer.zone,
                "instance_type": offer.instance_type,
            },
            "first_launch": summary_ms(first),
            "idempotent_resend": summary_ms(resend),
            "launch_requests_per_launch": made / repeat,
            "resend_launch_requests": 0,
        },
        handles,
    )


def top_up(adapter: Any, offer: Offer, start: int, total: int) -> tuple[list[Handle], float]:
    """Launch workloads ``start`` .. ``total - 1`` (untimed set-up); return them and the time."""
    handles: list[Handle] = []
    t0 = time.perf_counter()
    for i in range(start, total):
        s = spec(f"status-{i}")
        handles.append(adapter.launch(offer, s, request_id=request_id(s.job_id, 1, offer.region)))
    return handles, time.perf_counter() - t0


def bench_status(
    c: Cloud, adapter: Any, handles: list[Handle], sizes: list[int], repeat: int, live: int
) -> dict[str, Any]:
    """Time ``status()`` of the first N handles, N in ``sizes``; count its HTTP requests.

    ``live`` workloads of this install exist in the fake while it runs (the handles).
    """
    out: dict[str, Any] = {}
    for n in sizes:
        if n > len(handles):
            out[str(n)] = {"skipped": f"only {len(handles)} handles launched"}
            continue
        group = handles[:n]
        secs: list[float] = []
        requests: set[int] = set()
        details: list[dict[str, int]] = []
        for _ in range(repeat):
            b, d = c.http_requests(), c.http_detail()
            answer, s = timed(lambda g=group: adapter.status(g))
            secs.append(s)
            requests.add(c.http_requests() - b)
            details.append({k: v - d[k] for k, v in c.http_detail().items()})
            assert len(answer) == n, f"{c.name}: status answered {len(answer)} of {n}"
        states = sorted({st.state.value for st in answer.values()})
        entry = {
            "handles": n,
            "live_workloads_in_fake": live,
            "per_call": summary_ms(secs),
            "per_handle_median_ms": round(statistics.median(secs) * 1e3 / n, 3),
            "http_requests_per_call": _one_or_all(requests),
            "states": states,
        }
        if details and details[0]:
            entry["fake_log_per_call"] = details[0]
        out[str(n)] = entry
    return out


def bench_cloud(c: Cloud, repeat: int, total: int, sizes: list[int]) -> dict[str, Any]:
    """Every measurement of one adapter against its fake (started and always stopped)."""
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "sdk_versions": sdk_versions(c.name),
        "catalog_rows": sum(1 for r in load_catalog().rows if r.provider == c.name),
        "notes": c.notes(),
    }
    with c.serve() as fake:
        c.fake = fake
        c.prepare(total)
        # Untimed warm-up of the fake itself (moto builds each region's backend on first use).
        _, warm_secs = timed(lambda: c.make().offers(ResourceRequest()))
        res["fake_warmup_s"] = round(warm_secs, 3)
        res["offers"], offers = bench_offers(c, repeat)
        res["quota_skip"] = bench_quota(c, offers, repeat)
        adapter = c.make()
        offer = c.launch_offer(adapter.offers(ResourceRequest(regions=(c.launch_region,))))
        res["launch"], handles = bench_launch(c, adapter, offer, repeat)
        # status() of one handle while only the launch measurement's workloads exist, to set
        # against the same call once `total` workloads exist (a listing returns them all).
        res["status_few_live"] = bench_status(c, adapter, handles, [1], repeat, len(handles))
        more, setup = top_up(adapter, offer, len(handles), total)
        handles += more
        res["status_setup"] = {
            "handles_launched": len(handles),
            "untimed_extra_launches_s": round(setup, 3),
        }
        res["status"] = bench_status(c, adapter, handles, sizes, repeat, len(handles))
        c.fake = None
    res["cloud_seconds"] = round(time.perf_counter() - t_start, 2)
    return res


class OCI(Cloud):
    """Oracle Cloud: the fake OCI REST API (Compute, Identity, Limits), signed requests."""

    name = "oci"
    launch_region = "us-ashburn-1"
    quota_region = "us-phoenix-1"
    launch_request = "Compute LaunchInstance POST"

    def serve(self) -> contextlib.AbstractContextManager[Any]:
        from multicloud_oci.testing import serve

        return serve((self.launch_region, self.quota_region))

    def make(self, **options: Any) -> Any:
        from multicloud_oci import OCIProvider

        return OCIProvider(**{**self.fake.options, **options})

    def prepare(self, nodes: int) -> None:
        # Hosts for every single-node launch in one availability domain.
        self.fake.default_capacity = nodes + 10

    def launch_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: (
                o.region == self.launch_region
                and o.instance_type == "BM.GPU.H100.8"
                and str(o.zone).endswith("AD-1")
                and o.reservation is None
            ),
            "BM.GPU.H100.8 in us-ashburn-1 AD-1",
        )

    def quota_offer(self, offers: list[Offer]) -> Offer:
        return _first(
            offers,
            lambda o: o.region == self.quota_region and o.instance_type == "BM.GPU.H100.8",
            f"BM.GPU.H100.8 in {self.quota_region}",
        )

    def zero_quota(self, offer: Offer) -> str:
        for ad in self.fake.ads[offer.region]:
            self.fake.limits[(ad, "gpu-h100-count")] = 0
        return f"Limits compute/gpu-h100-count = 0 GPUs in every AD of {offer.region}"

    def launch_requests(self) -> int:
        return int(self.fake.count("POST", "/20160918/instances"))

    def http_requests(self) -> int:
        return len(self.fake.calls)

    def notes(self) -> list[str]:
        return [
            "offers: the catalog's OCI rows of the two regions the fake serves, per "
            "availability domain (3 each), plus the fake's capacity report",
            "quota: the launch reads the shape (ListShapes, cached), the instances of the "
            "compartment (idempotency), then GetResourceAvailability of the GPU limit in the "
            "offer's AD and, when short, in the region's other ADs (region-wide QuotaError)",
            "every request is signed (RSA-SHA256) and the fake verifies the signature",
        ]


CLASSES: dict[str, type[Cloud]] = {
    "aws": AWS, "gcp": GCP, "azure": Azure, "coreweave": CoreWeave, "kubernetes": Kubernetes,
    "oci": OCI,
}


@contextlib.contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Refuse (and record) any connection that is not to 127.0.0.1 / ::1."""
    from multicloud_gcp.testing import block_external_network

    with block_external_network() as refused:
        yield refused


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark for the chosen clouds; return the results document."""
    sizes = sorted({n for n in (1, 10, 100) if n <= args.handles} | {args.handles})
    total = max(args.handles, args.repeat)
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "what": NOTE,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "catalog_version": load_catalog().version,
        "repeat": args.repeat,
        "status_sizes": sizes,
        "definitions": {
            "quota_skip.cold_fresh_adapter": "new adapter instance, nothing cached",
            "quota_skip.cold_quota": "adapter that already answered offers() for the region; "
            "quota not read yet",
            "quota_skip.warm": "same adapter again (quota cached where the adapter caches it)",
            "offers.cold_new_adapter": "offers() of the whole catalog on a new adapter",
            "offers.warm_cached": "the same adapter again, within its cache TTL",
            "launch.first_launch": "single-node on-demand launch on a warm adapter",
            "launch.idempotent_resend": "the same request id again: same handle, nothing created",
            "status": "one status() call for the first N handles, all in one region / zone / "
            "resource group / namespace; live_workloads_in_fake workloads exist meanwhile",
            "status_few_live": "status() of one handle while only the launch measurement's "
            "workloads exist",
            "ms figures": "median and max over `repeat` runs, samples kept",
        },
        "clouds": {},
    }
    with loopback_only() as refused:
        for name in args.only:
            print(f"[bench.adapters] {name} ...", file=sys.stderr, flush=True)
            try:
                doc["clouds"][name] = bench_cloud(CLASSES[name](), args.repeat, total, sizes)
            except Exception as exc:  # recorded, never turned into a figure
                logging.exception("%s failed", name)
                doc["clouds"][name] = {"skipped": f"benchmark failed: {type(exc).__name__}: {exc}"}
    doc["external_connections_refused"] = refused
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    doc["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return doc


def main() -> None:
    """Parse arguments, run, write the results file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="repetitions of each measurement")
    ap.add_argument("--handles", type=int, default=100, help="largest status() batch")
    ap.add_argument(
        "--only",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=list(CLOUDS),
        help="comma-separated clouds (default: all)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    unknown = set(args.only) - set(CLOUDS)
    if unknown:
        ap.error(f"unknown cloud(s): {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
