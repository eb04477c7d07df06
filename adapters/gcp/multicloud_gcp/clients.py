"""Construction of the Google Cloud clients the adapter talks through.

Every client uses the REST transport. With an ``api_endpoint`` (tests, the fake on
127.0.0.1) they get ``AnonymousCredentials``; otherwise a service-account key file or
Application Default Credentials. The Compute client's extended-operation poller would build
its own ``ZoneOperationsClient`` against the real endpoint, so the adapter never calls
``.result()`` on a Compute operation: it polls with the ``zone_operations`` client built here
with the same options (and the same client is handed to the poller as a second guard).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CLOUD_PLATFORM", "GCPClients", "build_clients", "resolve_credentials"]

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@dataclass
class GCPClients:
    """The clients one adapter instance uses.

    Attributes:
        instances: ``compute_v1.InstancesClient``.
        zone_operations: ``compute_v1.ZoneOperationsClient`` (same endpoint as ``instances``).
        machine_types: ``compute_v1.MachineTypesClient``.
        regions: ``compute_v1.RegionsClient``.
        resource_policies: ``compute_v1.ResourcePoliciesClient`` (compact placement).
        region_operations: ``compute_v1.RegionOperationsClient`` (same endpoint).
        tpu: ``tpu_v2.TpuClient``.
        credentials: The credentials behind them (for the billing REST calls).
        project: Project id found with the credentials, if any.
    """

    instances: Any
    zone_operations: Any
    machine_types: Any
    regions: Any
    resource_policies: Any
    region_operations: Any
    tpu: Any
    credentials: Any
    project: str | None


def resolve_credentials(*, credentials_file: str | None, anonymous: bool) -> tuple[Any, str | None]:
    """Return the credentials to use and the project they name, if any.

    Args:
        credentials_file: Path of a service-account JSON key, or None for ADC.
        anonymous: Use ``AnonymousCredentials`` (an explicit endpoint such as the fake).

    Returns:
        ``(credentials, project_id or None)``.

    Raises:
        google.auth.exceptions.DefaultCredentialsError: If no credentials can be found.
    """
    if anonymous:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials(), None  # type: ignore[no-untyped-call]
    if credentials_file:
        from google.oauth2 import service_account

        creds = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            credentials_file, scopes=[CLOUD_PLATFORM]
        )
        return creds, getattr(creds, "project_id", None)
    import google.auth

    creds, project = google.auth.default(scopes=[CLOUD_PLATFORM])
    return creds, project


def build_clients(
    *,
    credentials_file: str | None,
    api_endpoint: str | None,
    tpu_api_endpoint: str | None,
) -> GCPClients:
    """Build the Compute and TPU clients.

    Args:
        credentials_file: Service-account key file, or None for ADC.
        api_endpoint: Compute endpoint override, e.g. ``http://127.0.0.1:PORT``.
        tpu_api_endpoint: TPU endpoint override (defaults to ``api_endpoint``).

    Returns:
        The clients.
    """
    from google.cloud import compute_v1, tpu_v2

    tpu_endpoint = tpu_api_endpoint or api_endpoint
    creds, project = resolve_credentials(
        credentials_file=credentials_file,
        anonymous=api_endpoint is not None or tpu_api_endpoint is not None,
    )

    def opts(endpoint: str | None) -> dict[str, Any] | None:
        return {"api_endpoint": endpoint} if endpoint else None

    common: dict[str, Any] = {"credentials": creds, "transport": "rest"}
    instances = compute_v1.InstancesClient(client_options=opts(api_endpoint), **common)
    zone_operations = compute_v1.ZoneOperationsClient(client_options=opts(api_endpoint), **common)
    # The known trap: hand the extended-operation poller our own ZoneOperationsClient so that
    # even a stray ``.result()`` polls the same endpoint, never the real one.
    services = getattr(instances._transport, "_extended_operations_services", None)
    if isinstance(services, dict):
        services["zone_operations"] = zone_operations
    policies = compute_v1.ResourcePoliciesClient(client_options=opts(api_endpoint), **common)
    region_operations = compute_v1.RegionOperationsClient(
        client_options=opts(api_endpoint), **common
    )
    services = getattr(policies._transport, "_extended_operations_services", None)
    if isinstance(services, dict):
        services["region_operations"] = region_operations
    return GCPClients(
        instances=instances,
        zone_operations=zone_operations,
        machine_types=compute_v1.MachineTypesClient(client_options=opts(api_endpoint), **common),
        regions=compute_v1.RegionsClient(client_options=opts(api_endpoint), **common),
        resource_policies=policies,
        region_operations=region_operations,
        tpu=tpu_v2.TpuClient(client_options=opts(tpu_endpoint), **common),
        credentials=creds,
        project=project,
    )
