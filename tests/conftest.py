"""Fixtures shared by the unit and the Ray tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

PG_ADMIN_URL = os.environ.get(
    "MULTICLOUD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped afterwards whatever happens."""
    admin_url = sa.make_url(PG_ADMIN_URL)
    shown = admin_url.render_as_string(hide_password=True)
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        problem = str(exc).strip()
    else:
        problem = ""
    if problem:
        message = f"PostgreSQL is not reachable at {shown}: {problem}"
        if os.environ.get("CI"):
            pytest.fail(
                f"{message}\nCI must start PostgreSQL before the tests "
                "(pg_ctlcluster --skip-systemctl-redirect <version> main start)",
                pytrace=False,
            )
        pytest.skip(message)
    name = f"mc_store_test_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        finally:
            admin.close()
