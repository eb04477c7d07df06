"""The Helm chart: it lints, renders valid manifests, and is secure by default.

Every documented variant of the values is rendered with the real ``helm`` binary and the
manifests are checked as data: against the Kubernetes schemas (kubernetes-validate) and our
hand-written KubeRay/ServiceMonitor schemas, and for the security properties of issue 6. No
cluster is involved; what that leaves untested is listed in docs/deploy/helm.md.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_support import (
    CHART,
    KUBE_VERSION,
    RELEASE,
    Rendered,
    containers,
    helm,
    lint,
    pod_templates,
    render,
    render_error,
    validate_manifest,
)

FULLNAME = f"{RELEASE}-multicloud"
TOKEN_SECRET = f"{FULLNAME}-ray-token"
PG = {"store": {"type": "postgresql", "postgresql": {"existingSecret": "mc-pg"}}}

# The variants docs/deploy/helm.md documents; each must lint, render and pass every check.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "postgresql": {
        "store": {
            "type": "postgresql",
            "postgresql": {"existingSecret": "mc-pg", "urlKey": "url", "passwordKey": "password"},
        },
        "workerGroups": [
            {
                "name": "cpu",
                "replicas": 1,
                "minReplicas": 0,
                "maxReplicas": 4,
                "resources": {
                    "requests": {"cpu": "2", "memory": "4Gi"},
                    "limits": {"cpu": "2", "memory": "4Gi"},
                },
            }
        ],
    },
    # A standby scheduler: a second RayCluster whose scheduler waits for the store's lease.
    "postgresql-standby": {**PG, "scheduler": {"replicas": 2}},
    "aws-irsa": {
        "serviceAccount": {
            "workloadIdentity": {"aws": {"roleArn": "arn:aws:iam::123456789012:role/multicloud"}}
        }
    },
    "gcp-workload-identity": {
        "serviceAccount": {
            "workloadIdentity": {
                "gcp": {"serviceAccount": "mc-scheduler@my-project.iam.gserviceaccount.com"}
            }
        }
    },
    "azure-workload-identity": {
        "serviceAccount": {
            "workloadIdentity": {
                "azure": {
                    "clientId": "11111111-2222-3333-4444-555555555555",
                    "tenantId": "66666666-7777-8888-9999-000000000000",
                }
            }
        }
    },
    "static-keys": {
        "credentials": {
            "aws": {"existingSecret": "mc-aws"},
            "gcp": {"existingSecret": "mc-gcp"},
            "azure": {"existingSecret": "mc-azure"},
            "coreweave": {"existingSecret": "mc-coreweave"},
        }
    },
    "metrics-off": {"metrics": {"enabled": False}},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"r": "p"}}}},
    "network-namespaces": {
        "networkPolicy": {"allowedNamespaces": ["ml-team", "ci"], "metricsNamespaces": ["mon"]}
    },
    "existing-token-and-node-reader": {
        "rayAuth": {"existingSecret": "my-ray-token", "key": "token"},
        "rbac": {"nodeReader": True, "namespace": "gpu-jobs"},
    },
    "writable-root-and-digest": {
        "securityContext": {"readOnlyRootFilesystem": False},
        "image": {"repository": "registry.example/mc", "digest": "sha256:" + "a" * 64},
    },
}
VARIANT_IDS = list(VARIANTS)


def _variant(name: str) -> Rendered:
    return render(VARIANTS[name])


def _values(name: str) -> dict[str, Any]:
    """The chart's defaults overlaid with a variant (enough merging for these tests)."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())

    def overlay(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                overlay(dst[k], v)
            else:
                dst[k] = v

    overlay(merged, VARIANTS[name])
    return merged


# -- lint, render, schemas ---------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_lint_passes(name: str) -> None:
    proc = lint(VARIANTS[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_manifests_validate_against_schemas(name: str) -> None:
    rendered = _variant(name)
    for doc in rendered.docs:
        validate_manifest(doc)


def test_schema_check_catches_a_broken_raycluster() -> None:
    # The validators must be able to fail: a misspelled KubeRay field and a bad pod field.
    rc = render().one("RayCluster")
    broken = yaml.safe_load(yaml.safe_dump(rc))
    broken["spec"]["headGroupSpec"]["serviceTipe"] = "ClusterIP"
    with pytest.raises(jsonschema.ValidationError, match="serviceTipe"):
        validate_manifest(broken)
    broken = yaml.safe_load(yaml.safe_dump(rc))
    broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"] = "lots"
    with pytest.raises(jsonschema.ValidationError, match="lots"):
        validate_manifest(broken)


def test_schema_check_catches_broken_kubernetes_objects() -> None:
    rendered = render()
    svc = yaml.safe_load(yaml.safe_dump(rendered.one("Service")))
    svc["spec"]["clusterIPTypo"] = "None"  # strict: unknown fields are errors
    with pytest.raises(jsonschema.ValidationError, match="clusterIPTypo"):
        validate_manifest(svc)
    policy = yaml.safe_load(yaml.safe_dump(rendered.one("NetworkPolicy")))
    policy["spec"]["policyTypes"] = "Ingress"  # a string where a list belongs
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(policy)


def test_cached_validation_agrees_with_kubernetes_validate() -> None:
    # validate_manifest reads kubernetes-validate's schemas itself (once, for speed); the
    # package's own entry point must accept the same objects.
    for doc in render(VARIANTS["postgresql"]).docs:
        if doc["kind"] != "RayCluster":
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_default_render_has_the_expected_objects() -> None:
    kinds = sorted(d["kind"] for d in render().docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "RayCluster",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )


# -- exposure and network ------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_ray_ports_are_cluster_internal(name: str) -> None:
    rendered = _variant(name)
    assert not rendered.of("Ingress"), "no Ingress for Ray ports"
    for svc in rendered.of("Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
    for rc in rendered.of("RayCluster"):
        head = rc["spec"]["headGroupSpec"]
        # KubeRay creates the head Service from these two fields.
        assert head["serviceType"] == "ClusterIP"
        assert head["enableIngress"] is False
    for where, c in containers(rendered):
        for port in c.get("ports", []):
            assert "hostPort" not in port, f"{where} binds a host port"
    for _, template in pod_templates(rendered):
        assert not template["spec"].get("hostNetwork"), "hostNetwork would bypass the policy"


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_network_policy_admits_only_own_pods_and_listed_namespaces(name: str) -> None:
    rendered, values = _variant(name), _values(name)
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    # It covers every Ray pod (KubeRay labels them ray.io/cluster=<RayCluster name>).
    assert policy["podSelector"] == {"matchLabels": {"ray.io/cluster": FULLNAME}}
    ports = values["ray"]["ports"]
    ray_ports = {ports["gcs"], ports["dashboard"], ports["client"]}
    # First rule: the chart's own pods (same namespace: no namespaceSelector), on any port.
    own = policy["ingress"][0]
    assert len(own["from"]) == 1 and set(own["from"][0]) == {"podSelector"}
    assert "ports" not in own
    # The "own pods" selector really selects the chart's pods (and only with both labels).
    own_selector = own["from"][0]["podSelector"]["matchLabels"]
    assert own_selector["app.kubernetes.io/instance"] == RELEASE
    for where, template in pod_templates(rendered):
        assert _labels_match(own_selector, template["metadata"]["labels"]), where
    seen_ns: dict[str, set[int]] = {}
    for rule in policy["ingress"]:
        # An empty or missing `from` would admit every source.
        assert rule.get("from"), f"rule without sources: {rule}"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            if "namespaceSelector" in peer:
                assert "podSelector" not in peer
                (expr,) = peer["namespaceSelector"]["matchExpressions"]
                assert expr["key"] == "kubernetes.io/metadata.name"
                assert expr["operator"] == "In"
                for ns in expr["values"]:
                    seen_ns.setdefault(ns, set()).update(p["port"] for p in rule["ports"])
    allowed = set(values["networkPolicy"]["allowedNamespaces"])
    metrics_ns = set(values["networkPolicy"]["metricsNamespaces"])
    assert set(seen_ns) == allowed | (metrics_ns if values["metrics"]["enabled"] else set())
    for ns, got in seen_ns.items():
        want: set[int] = set()
        if ns in allowed:
            want |= ray_ports
        if ns in metrics_ns:
            want |= {values["metrics"]["port"], ports["metrics"]}
        assert got == want, f"namespace {ns} reaches ports {got}, want {want}"


def test_network_policy_can_be_turned_off() -> None:
    assert not render({"networkPolicy": {"enabled": False}}).of("NetworkPolicy")


# -- RBAC ----------------------------------------------------------------------------------

# What the Kubernetes (CoreWeave) adapter may do, and nothing more.
ALLOWED_RULES = {
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("ray.io", "rayjobs"): {"get", "list", "watch", "create", "delete", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get", "list", "watch"},
    ("", "services"): {"get", "list", "watch", "create", "delete"},
    ("", "resourcequotas"): {"get", "list"},
}

# The API calls the CoreWeave adapter makes in a full lifecycle (offers, launch of a Job and
# a RayJob, status, terminate, sweep), as logged by its fake API server when this list was
# written: what the chart's RBAC must allow. (verb, resource, cluster-wide?)
ADAPTER_CALLS = {
    ("list", "nodes", True),
    ("list", "pods", True),
    ("list", "pods", False),
    ("list", "resourcequotas", False),
    ("create", "jobs", False),
    ("list", "jobs", False),
    ("delete", "jobs", False),
    ("create", "rayjobs", False),
    ("list", "rayjobs", False),
    ("delete", "rayjobs", False),
}


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_rbac_has_no_wildcards_and_only_what_the_adapter_needs(name: str) -> None:
    rendered, values = _variant(name), _values(name)
    role = rendered.one("Role")
    assert role["metadata"]["namespace"] == (values["rbac"]["namespace"] or "mc-ns")
    for kind in ("Role", "ClusterRole"):
        for obj in rendered.of(kind):
            for rule in obj["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(field, []), f"{kind} wildcard in {field}"
                assert "nonResourceURLs" not in rule
                assert "resourceNames" not in rule or rule["resourceNames"]
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                extra = set(rule["verbs"]) - ALLOWED_RULES[(group, resource)]
                assert not extra, f"{group}/{resource}: unexpected verbs {extra}"
    # Anything cluster-wide is opt-in and read-only on nodes.
    cluster_roles = rendered.of("ClusterRole")
    if values["rbac"]["nodeReader"]:
        (cr,) = cluster_roles
        assert cr["rules"] == [
            {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch"]}
        ]
        # Together the Role and the ClusterRole allow every call the adapter makes.
        allowed = {
            (verb, resource, obj["kind"] == "ClusterRole")
            for obj in [role, cr]
            for rule in obj["rules"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        missing = {c for c in ADAPTER_CALLS if c not in allowed}
        assert not missing, f"the CoreWeave adapter would be forbidden: {sorted(missing)}"
        assert rendered.one("ClusterRoleBinding")["roleRef"]["name"] == cr["metadata"]["name"]
    else:
        assert not cluster_roles and not rendered.of("ClusterRoleBinding")
    binding = rendered.one("RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": "mc-ns"}
    ]


# -- secrets -------------------------------------------------------------------------------

SENTINEL = "S3NT1NEL-not-a-real-secret"

# Places a user might try to put a credential; each must be refused, and the refusal must not
# echo the value (it would land in CI logs).
SECRET_ATTEMPTS = [
    ({"store": {"postgresql": {"url": f"postgresql://u:{SENTINEL}@db/mc"}}}, "'url' not allowed"),
    ({"rayAuth": {"token": SENTINEL}}, "'token' not allowed"),
    ({"credentials": {"aws": {"secretAccessKey": SENTINEL}}}, "'secretAccessKey' not allowed"),
    ({"credentials": {"azure": {"clientSecret": SENTINEL}}}, "'clientSecret' not allowed"),
    (
        {"extraEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "value": SENTINEL}]},
        "looks like a credential: pass it with valueFrom.secretKeyRef",
    ),
    (
        {"extraEnv": [{"name": "DB_PASSWORD", "value": SENTINEL}]},
        "looks like a credential",
    ),
    # A ConfigMap is no place for a credential either (readable by more roles, not encrypted).
    (
        {
            "extraEnv": [
                {"name": "HF_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
            ]
        },
        "never as a plain value or from a ConfigMap",
    ),
]


@pytest.mark.parametrize(("values", "message"), SECRET_ATTEMPTS)
def test_plain_secret_values_are_refused_without_echo(values: dict[str, Any], message: str) -> None:
    err = render_error(values)
    assert message in err
    assert SENTINEL not in err


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_no_secret_values_in_manifests(name: str) -> None:
    rendered, values = _variant(name), _values(name)
    # The only Secret is the chart-made Ray token (random, not from values), unless an
    # existing one is named; every other credential is a reference.
    secrets = rendered.of("Secret")
    if values["rayAuth"]["existingSecret"]:
        assert not secrets
    else:
        (secret,) = secrets
        assert secret["metadata"]["name"] == TOKEN_SECRET
        assert set(secret["data"]) == {"auth_token"}
    credential = re.compile(r"(?i)(secret|password|passwd|token|credential|private|key)")
    for where, c in containers(rendered):
        for env in c.get("env", []):
            if credential.search(env["name"]) and env["name"] not in (
                "GOOGLE_APPLICATION_CREDENTIALS",  # a file path, the key itself is mounted
            ):
                assert "value" not in env, f"{where}: {env['name']} has a plain value"
                assert "secretKeyRef" in env["valueFrom"], f"{where}: {env['name']}"
        for ref in c.get("envFrom", []):
            assert set(ref) == {"secretRef"}
    # The ConfigMap (fleet) is the other place text from values lands.
    fleet = yaml.safe_load(rendered.one("ConfigMap")["data"]["fleet.yaml"])
    assert fleet == values["fleet"]


def test_allowed_extra_env_from_a_secret_renders() -> None:
    ref = {"secretKeyRef": {"name": "hf", "key": "token"}}
    rendered = render({"extraEnv": [{"name": "HF_TOKEN", "valueFrom": ref}]})
    for where, c in containers(rendered):
        assert {"name": "HF_TOKEN", "valueFrom": ref} in c["env"], where


# -- token auth, pods ----------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_token_auth_on_in_every_container(name: str) -> None:
    rendered, values = _variant(name), _values(name)
    secret = values["rayAuth"]["existingSecret"] or TOKEN_SECRET
    key = values["rayAuth"]["key"]
    for where, c in containers(rendered):
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", where
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": secret, "key": key}
        }, where


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_pods_run_non_root_with_locked_down_containers(name: str) -> None:
    rendered, values = _variant(name), _values(name)
    read_only = values["securityContext"]["readOnlyRootFilesystem"]
    for where, template in pod_templates(rendered):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounts_needed = {"/tmp", "/home/multicloud", "/var/lib/multicloud"}
        for c in template["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is read_only, where
            assert "privileged" not in sc
            # With a read-only root, Ray and multicloud write only to these volumes.
            assert mounts_needed <= {m["mountPath"] for m in c["volumeMounts"]}, where


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_every_container_has_requests_and_limits(name: str) -> None:
    for where, c in containers(_variant(name)):
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"


# -- scheduler, fleet, store -----------------------------------------------------------------


def _head_container(rendered: Rendered, name: str, cluster: int = 0) -> dict[str, Any]:
    rc = rendered.of("RayCluster")[cluster]
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]
    return next(c for c in head["containers"] if c["name"] == name)


@pytest.mark.parametrize("name", ["default", "metrics-off", "postgresql"])
def test_scheduler_container_runs_multicloud_start(name: str) -> None:
    rendered, values = _variant(name), _values(name)
    head = rendered.one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    # KubeRay runs Ray in the first container; the starter must not take its place.
    assert head["containers"][0]["name"] == "ray-head"
    script = _head_container(rendered, "scheduler")["args"][0]
    gcs = values["ray"]["ports"]["gcs"]
    assert f'multicloud start --address "${{POD_IP}}:{gcs}"' in script
    assert "--fleet /etc/multicloud/fleet.yaml" in script
    assert '--store "${MULTICLOUD_STORE_URL}"' in script
    assert ("--metrics-port" in script) is values["metrics"]["enabled"]
    # The fleet ConfigMap is what that path holds.
    mount = next(
        m for m in _head_container(rendered, "scheduler")["volumeMounts"] if m["name"] == "fleet"
    )
    assert mount["mountPath"] == "/etc/multicloud"
    volume = next(v for v in head["volumes"] if v["name"] == "fleet")
    assert volume["configMap"]["name"] == rendered.one("ConfigMap")["metadata"]["name"]


# A stand-in `multicloud` that records its argv, and a `sleep` that ends the loop: the script
# runs for real, once round the loop, with no Ray.
_RECORD = """#!/bin/sh
printf '%s\\n' "$@" > "$ARGV_FILE"
"""
_STOP = """#!/bin/sh
kill -TERM "$PPID"
"""


@pytest.mark.parametrize(
    ("name", "cluster"),
    [
        ("default", 0),
        ("metrics-off", 0),
        ("postgresql", 0),
        ("postgresql-standby", 0),
        ("postgresql-standby", 1),
    ],
)
def test_scheduler_script_calls_the_real_start_verb(
    name: str, cluster: int, tmp_path: Path
) -> None:
    import typer.main

    from multicloud.cli import app

    rendered, values = _variant(name), _values(name)
    container = _head_container(rendered, "scheduler", cluster)
    assert container["command"] == ["/bin/sh", "-c"]
    # Keep the test off the machine's /tmp.
    script = container["args"][0].replace("/tmp/", f"{tmp_path}/")
    for tool, body in (("multicloud", _RECORD), ("sleep", _STOP)):
        (tmp_path / tool).write_text(body)
        (tmp_path / tool).chmod(0o755)
    pg = values["store"]["type"] == "postgresql"
    store = "postgresql://mc@db:5432/mc" if pg else "sqlite:////data/mc.db"
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "POD_IP": "10.1.2.3",
        "MULTICLOUD_STORE_URL": store,
        "ARGV_FILE": str(tmp_path / "argv"),
    }
    subprocess.run(["/bin/sh", "-c", script], env=env, timeout=10, check=False)
    argv = (tmp_path / "argv").read_text().splitlines()
    assert (tmp_path / "multicloud-scheduler-ready").exists(), "ready only after a start"
    # The argv must parse as `multicloud start` of the CLI this image installs.
    assert argv[0] == "start"
    command = typer.main.get_command(app)
    start = command.commands["start"]  # type: ignore[attr-defined]
    params = start.make_context("start", argv[1:]).params
    gcs = values["ray"]["ports"]["gcs"]
    assert params["address"] == f"10.1.2.3:{gcs}"
    assert params["namespace"] == values["scheduler"]["namespace"]
    assert str(params["fleet"]) == "/etc/multicloud/fleet.yaml"
    assert params["store"] == store
    want_port = values["metrics"]["port"] if values["metrics"]["enabled"] else None
    assert params["metrics_port"] == want_port
    # With two replicas both wait for the lease rather than fail while the other holds it.
    assert params["standby"] is (values["scheduler"]["replicas"] > 1)
    # The metrics Service targets the pod IP: a loopback bind would serve nobody.
    if values["metrics"]["enabled"]:
        assert params["metrics_host"] == "0.0.0.0"


def test_a_standby_replica_is_a_second_raycluster_on_the_same_store() -> None:
    rendered = _variant("postgresql-standby")
    clusters = rendered.of("RayCluster")
    assert [rc["metadata"]["name"] for rc in clusters] == [FULLNAME, f"{FULLNAME}-standby"]
    first, second = (
        {e["name"]: e for e in _head_container(rendered, "scheduler", i)["env"]} for i in (0, 1)
    )
    assert first["MULTICLOUD_STORE_URL"] == second["MULTICLOUD_STORE_URL"]
    # The metrics Service reaches whichever head holds the lease.
    (svc,) = rendered.of("Service")
    for rc in clusters:
        labels = rc["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
        kuberay = {"ray.io/cluster": rc["metadata"]["name"], "ray.io/node-type": "head"}
        assert _labels_match(svc["spec"]["selector"], {**labels, **kuberay})
    # One replica: one RayCluster, no standby.
    single = _variant("postgresql")
    assert len(single.of("RayCluster")) == 1
    assert "--standby" not in _head_container(single, "scheduler")["args"][0]


def test_default_fleet_is_one_multicloud_accepts(tmp_path: Path) -> None:
    from multicloud.specs import load_fleet

    path = tmp_path / "fleet.yaml"
    path.write_text(render().one("ConfigMap")["data"]["fleet.yaml"])
    fleet = load_fleet(path)
    assert set(fleet.providers) == {"aws", "gcp"}


def test_sqlite_store_lives_on_a_kept_pvc_mounted_on_the_head() -> None:
    rendered = render()
    pvc = rendered.one("PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    head = rendered.one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    data = next(v for v in head["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    for c in head["containers"]:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["MULTICLOUD_STORE_URL"] == "sqlite:////var/lib/multicloud/multicloud.db"


def test_postgresql_store_url_and_password_come_from_the_secret() -> None:
    rendered = _variant("postgresql")
    assert not rendered.of("PersistentVolumeClaim")
    for where, c in containers(rendered):
        env = {e["name"]: e for e in c["env"]}
        assert env["MULTICLOUD_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "mc-pg",
            "key": "url",
        }, where
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password", where


def test_existing_claim_is_used_and_none_is_made() -> None:
    rendered = render({"store": {"sqlite": {"existingClaim": "my-claim"}}})
    assert not rendered.of("PersistentVolumeClaim")
    head = rendered.one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    data = next(v for v in head["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "my-claim"


# -- identity and credentials ------------------------------------------------------------------

IDENTITY = [
    ("aws-irsa", {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/multicloud"}),
    (
        "gcp-workload-identity",
        {"iam.gke.io/gcp-service-account": "mc-scheduler@my-project.iam.gserviceaccount.com"},
    ),
    (
        "azure-workload-identity",
        {
            "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
            "azure.workload.identity/tenant-id": "66666666-7777-8888-9999-000000000000",
        },
    ),
    ("default", None),
]


@pytest.mark.parametrize(("name", "annotations"), IDENTITY)
def test_workload_identity_annotations(name: str, annotations: dict[str, str] | None) -> None:
    rendered = _variant(name)
    sa = rendered.one("ServiceAccount")
    assert sa["metadata"].get("annotations") == annotations
    azure = name == "azure-workload-identity"
    for where, template in pod_templates(rendered):
        assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"], where
        # Azure's mutating webhook only injects the token into pods with this label.
        labels = template["metadata"]["labels"]
        assert (labels.get("azure.workload.identity/use") == "true") is azure, where


def test_static_keys_are_secret_references_only() -> None:
    for where, c in containers(_variant("static-keys")):
        assert c["envFrom"] == [
            {"secretRef": {"name": "mc-aws"}},
            {"secretRef": {"name": "mc-azure"}},
        ], where
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == (
            "/var/run/secrets/multicloud/gcp/credentials.json"
        )
        assert env["KUBECONFIG"] == "/var/run/secrets/multicloud/coreweave/kubeconfig"
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/var/run/secrets/multicloud/gcp"]["readOnly"] is True


# -- metrics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "service", "monitor"),
    [("default", True, False), ("metrics-off", False, False), ("servicemonitor", True, True)],
)
def test_metrics_service_and_monitor(name: str, service: bool, monitor: bool) -> None:
    rendered = _variant(name)
    services = rendered.of("Service")
    assert len(services) == int(service)
    monitors = rendered.of("ServiceMonitor")
    assert len(monitors) == int(monitor)
    if service:
        svc = services[0]
        head_labels = rendered.one("RayCluster")["spec"]["headGroupSpec"]["template"]["metadata"][
            "labels"
        ]
        # KubeRay adds ray.io/* labels to the pod; ours must match too.
        kuberay = {"ray.io/cluster": FULLNAME, "ray.io/node-type": "head"}
        assert _labels_match(svc["spec"]["selector"], {**head_labels, **kuberay})
        ports = {p["name"]: p for p in _head_container(rendered, "ray-head")["ports"]}
        assert ports["mc-metrics"]["containerPort"] == svc["spec"]["ports"][0]["port"]
    if monitor:
        sm = monitors[0]
        assert sm["metadata"]["labels"]["r"] == "p"
        assert _labels_match(
            sm["spec"]["selector"]["matchLabels"], services[0]["metadata"]["labels"]
        )


# -- values that must be refused -------------------------------------------------------------

BAD_VALUES = [
    # SQLite serves one scheduler: the chart says so.
    (
        {"scheduler": {"replicas": 2}},
        "scheduler.replicas=2 with store.type=sqlite: a SQLite file on a ReadWriteOnce volume",
    ),
    ({**PG, "scheduler": {"replicas": 3}}, "at '/scheduler/replicas'"),
    ({"store": {"type": "mysql"}}, "at '/store/type': value must be one of 'sqlite', 'postgresql'"),
    ({"store": {"type": "postgresql"}}, "needs store.postgresql.existingSecret"),
    (
        {"workerGroups": VARIANTS["postgresql"]["workerGroups"]},
        "workerGroups with store.type=sqlite",
    ),
    ({"scheduler": {"replicas": 0}}, "at '/scheduler/replicas'"),
    ({"image": {"digest": "sha256:abc"}}, "at '/image/digest'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"head": {"resources": {"limits": {"cpu": "lots", "memory": "1Gi"}}}}, "'lots' does not"),
    # null deletes a default in Helm: a request without memory.
    ({"head": {"resources": {"requests": {"memory": None}}}}, "missing property 'memory'"),
    ({"serviceAccount": {"workloadIdentity": {"aws": {"roleArn": "arn:bad"}}}}, "roleArn"),
    (
        {"serviceAccount": {"workloadIdentity": {"gcp": {"serviceAccount": "me@gmail.com"}}}},
        "at '/serviceAccount/workloadIdentity/gcp/serviceAccount'",
    ),
    (
        {"serviceAccount": {"workloadIdentity": {"azure": {"clientId": "not-a-uuid"}}}},
        "at '/serviceAccount/workloadIdentity/azure/clientId'",
    ),
    (
        {"networkPolicy": {"allowedNamespaces": ["Bad_NS"]}},
        "at '/networkPolicy/allowedNamespaces/0'",
    ),
    ({"metrics": {"port": 8265}}, "metrics.port=8265 collides with a Ray port"),
    ({"metrics": {"port": 70000}}, "at '/metrics/port'"),
    (
        {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled needs metrics.enabled=true",
    ),
    ({"podSecurityContext": {"runAsUser": 0}}, "at '/podSecurityContext/runAsUser'"),
    ({"ray": {"version": "2.40.0"}}, "at '/ray/version'"),
    ({"fleet": {"providers": None}}, "at '/fleet': missing property 'providers'"),
    ({"rbac": {"create": "yes"}}, "at '/rbac/create'"),
    ({"unknownTopLevel": 1}, "additional properties 'unknownTopLevel' not allowed"),
    (
        {
            **PG,
            "workerGroups": [
                {**VARIANTS["postgresql"]["workerGroups"][0], "minReplicas": 5, "maxReplicas": 2}
            ],
        },
        "workerGroups[0] (cpu): minReplicas 5 > maxReplicas 2",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m[:40] for _, m in BAD_VALUES])
def test_bad_values_are_refused_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


# -- README and NOTES ------------------------------------------------------------------------


def test_readme_values_table_is_current() -> None:
    path = Path(__file__).resolve().parents[2] / "tools" / "helm_readme.py"
    spec = importlib.util.spec_from_file_location("helm_readme", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (CHART / "README.md").read_text()
    assert module.updated(readme) == readme, "run python tools/helm_readme.py"
    # Every default in values.yaml has a row (the schema forbids undeclared keys anyway).
    for key, _ in module.leaves(yaml.safe_load((CHART / "values.schema.json").read_text())):
        if key != "global":
            assert f"| `{key}` |" in readme, key


def test_notes_tell_how_to_submit_a_first_job() -> None:
    # `helm template` leaves NOTES.txt out; a client-side dry-run install prints it.
    out = subprocess.run(
        [helm(), "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", "mc-ns"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    notes = out[out.index("NOTES:") :]
    assert "multicloud submit" in notes
    assert "ray job submit" in notes
    assert "RAY_AUTH_MODE=token" in notes
    assert f"secret {TOKEN_SECRET}" in notes
    assert f"svc/{FULLNAME}-head-svc 8265:8265" in notes
