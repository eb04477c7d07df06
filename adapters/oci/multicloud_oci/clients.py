"""OCI SDK clients per region, for the three ways a scheduler authenticates to Oracle Cloud.

* ``api_key``: an API signing key, from an OCI config file profile (``~/.oci/config``) or
  inline (``config``: user, tenancy, fingerprint, ``key_content`` or ``key_file``);
* ``instance_principal``: the scheduler runs on an OCI instance in a dynamic group;
* ``workload_identity``: the scheduler runs in a pod on OKE (Kubernetes Engine).

Every client is built without the SDK's own retries and circuit breaker: the scheduler retries
with back-off and fails over (docs/architecture.md, "Adapters"), and a request the SDK
re-sends silently would hide a throttled region. See docs/providers/oci.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import oci

__all__ = ["AUTH_MODES", "Auth", "Clients", "list_all"]

Auth = Literal["api_key", "instance_principal", "workload_identity"]
AUTH_MODES: tuple[str, ...] = ("api_key", "instance_principal", "workload_identity")

# The service segment the ``endpoint`` option adds after the region (a fake tells services
# apart by it: core and identity share one API version in their paths).
_SERVICES: dict[str, Callable[..., Any]] = {
    "core": oci.core.ComputeClient,
    "identity": oci.identity.IdentityClient,
    "limits": oci.limits.LimitsClient,
}


class Clients:
    """Builds (once) and hands out the SDK clients of each region.

    Args:
        auth: How to authenticate (see the module docstring).
        config_file: OCI config file for ``api_key`` (default ``~/.oci/config``).
        profile: Profile in that file.
        config: Inline API-key configuration, instead of the file.
        endpoint: Send every service's requests to ``<endpoint>/<region>/<service>``
            instead of Oracle's regional endpoints (a test fake on 127.0.0.1).
        timeout: Connect and read timeouts of every call, in seconds.
    """

    def __init__(
        self,
        *,
        auth: Auth = "api_key",
        config_file: str | None = None,
        profile: str = "DEFAULT",
        config: Mapping[str, str] | None = None,
        endpoint: str | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self.auth = auth
        self._config_file = config_file
        self._profile = profile
        self._inline = dict(config) if config else None
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._timeout = timeout
        self._lock = threading.Lock()
        self._built: dict[tuple[str, str], Any] = {}
        self._base: tuple[dict[str, Any], Any] | None = None

    def _credentials(self) -> tuple[dict[str, Any], Any]:
        # Built on first use: an instance-principal signer calls the metadata service.
        if self._base is None:
            if self.auth == "instance_principal":
                self._base = ({}, oci.auth.signers.InstancePrincipalsSecurityTokenSigner())
            elif self.auth == "workload_identity":
                signer = oci.auth.signers.get_oke_workload_identity_resource_principal_signer()
                self._base = ({}, signer)
            elif self._inline is not None:
                self._base = (dict(self._inline), None)
            else:
                path = os.path.expanduser(self._config_file or oci.config.DEFAULT_LOCATION)
                self._base = (dict(oci.config.from_file(path, self._profile)), None)
        return self._base

    def _client(self, service: str, region: str) -> Any:
        with self._lock:
            client = self._built.get((service, region))
            if client is None:
                config, signer = self._credentials()
                kwargs: dict[str, Any] = {
                    "retry_strategy": oci.retry.NoneRetryStrategy(),
                    "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
                    "timeout": self._timeout,
                }
                if signer is not None:
                    kwargs["signer"] = signer
                if self._endpoint:
                    kwargs["service_endpoint"] = f"{self._endpoint}/{region}/{service}"
                client = _SERVICES[service]({**config, "region": region}, **kwargs)
                self._built[(service, region)] = client
            return client

    def compute(self, region: str) -> Any:
        """Return the Compute (core) client of ``region``."""
        return self._client("core", region)

    def identity(self, region: str) -> Any:
        """Return the Identity client of ``region`` (availability domains)."""
        return self._client("identity", region)

    def limits(self, region: str) -> Any:
        """Return the Limits client of ``region`` (resource availability)."""
        return self._client("limits", region)


def list_all(call: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
    """Return every item of a paginated list call, following ``opc-next-page``.

    ``oci.pagination`` wraps each page in the SDK's default retry strategy (minutes of
    back-off on 429); this one leaves retrying to the scheduler.

    Args:
        call: An SDK ``list_*`` method.
        *args: Its positional arguments.
        **kwargs: Its keyword arguments.

    Returns:
        The items of every page.
    """
    items: list[Any] = []
    page = None
    for _ in range(10_000):  # a bound, not a limit a compartment reaches
        response = call(*args, **kwargs, **({"page": page} if page else {}))
        items.extend(response.data)
        page = response.next_page
        if not page:
            break
    return items
