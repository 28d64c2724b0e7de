"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from mailer.store.migrate import upgrade
from mailer.store.tables import Base


def test_models_and_migrations_agree(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"leads", "consent_events", "consent_notices", "downloads", "outbox", "delivery_attempts"} <= tables


def test_db_upgrade_command_creates_the_schema(tmp_path):
    env = {**os.environ, "MAILER_INSTANCE_PATH": str(tmp_path / "instance")}
    result = subprocess.run([sys.executable, "-m", "mailer.cli", "db", "upgrade"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'instance' / 'mailer.db'}")
    assert "outbox" in inspect(engine).get_table_names()
    engine.dispose()


def test_0007_names_a_newsletter_with_two_live_campaigns_instead_of_failing_on_the_index(tmp_path):
    """Before 0007 a live campaign per slug was checked only in code, so two could exist."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0006")
    engine = create_engine(url)
    with engine.begin() as conn:
        for _ in range(2):
            conn.execute(text("INSERT INTO campaigns (slug, status, start_at, content_hash, filters, checkpoint, "
                              "queued, created_at, updated_at) VALUES ('zomer', 'scheduled', '2026-12-01', 'x', "
                              "'{}', 0, 0, '2026-12-01', '2026-12-01')"))
    engine.dispose()
    with pytest.raises(RuntimeError, match=r"zomer \(campaigns 1 to 2\).*Cancel the extra ones"):
        upgrade(url)
