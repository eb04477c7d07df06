"""The adapter's boto3 session: credentials, one client per service and region, the account."""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from multicloud.errors import AuthError
from multicloud_aws.errors import boundary

__all__ = ["Clients"]


class Clients:
    """boto3 clients of one fleet entry, created on first use and shared by threads.

    Args:
        fleet_name: Fleet provider name.
        profile: Named profile; None uses the standard chain.
        credentials_file: Shared credentials file to read ``profile`` from.
        endpoint_url: Send every call there (a fake in tests).
        max_attempts: Attempts per call (botocore standard retry mode).
        connect_timeout: Seconds to connect.
        read_timeout: Seconds to wait for an answer.
        session: A ``boto3.Session`` to use instead of building one.

    Raises:
        AuthError: If the credential set-up fails (e.g. an unknown profile), scoped to the fleet.
    """

    def __init__(
        self,
        fleet_name: str,
        *,
        profile: str | None,
        credentials_file: str | None,
        endpoint_url: str | None,
        max_attempts: int,
        connect_timeout: float,
        read_timeout: float,
        session: Any = None,
    ) -> None:
        self.errors = boundary(fleet_name)
        if session is None:
            try:
                core = botocore.session.get_session()
                if credentials_file:
                    core.set_config_variable(
                        "credentials_file", os.path.expanduser(credentials_file)
                    )
                session = boto3.Session(botocore_session=core, profile_name=profile)
            except BotoCoreError as exc:
                # A mistyped profile or an unreadable shared config: the fleet entry cannot
                # get credentials at all.
                raise AuthError(
                    f"cannot set up AWS credentials for {fleet_name}: {exc}",
                    provider=fleet_name,
                    scope=fleet_name,
                ) from exc
        self._session = session
        self._endpoint_url = endpoint_url
        self._config = Config(
            retries={"total_max_attempts": int(max_attempts), "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra="multicloud-aws",
        )
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._account: str | None = None

    def __call__(self, service: str, region: str) -> Any:
        """Return the client of ``service`` in ``region``."""
        with self._lock:
            client = self._clients.get((service, region))
            if client is None:
                with self.errors(region=region):
                    client = self._session.client(
                        service,
                        region_name=region,
                        endpoint_url=self._endpoint_url,
                        config=self._config,
                    )
                self._clients[(service, region)] = client
            return client

    def account(self, region: str) -> str:
        """Return the caller's account id (``sts:GetCallerIdentity``, asked once)."""
        if self._account is None:
            with self.errors(region=region, doing="sts:GetCallerIdentity"):
                self._account = str(self("sts", region).get_caller_identity()["Account"])
        return self._account
