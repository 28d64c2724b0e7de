"""A scratch PostgreSQL database for one benchmark, and the arguments every benchmark takes."""

from __future__ import annotations

import argparse
import os
import uuid

DEFAULT_POSTGRES_URL = os.environ.get("MAILER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def arguments(description: str) -> argparse.ArgumentParser:
    """--runs, --backends and --postgres-url; a benchmark adds its own sizes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="a server where this user may create databases")
    return parser


def postgres_database(admin_url: str):
    """Create a database beside `admin_url`'s; return its plain URL (for psql) and a drop()."""
    import psycopg

    name = f"mailer_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_url.rsplit("/", 1)[0] + "/" + name, drop


def sqlalchemy_url(plain_url: str) -> str:
    return "postgresql+psycopg://" + plain_url.split("://", 1)[1]
