"""consent evidence append-only; a notice is its version and its text

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000

The database itself refuses to change the consent evidence, whoever asks:

- consent_events: every UPDATE is refused; a DELETE only for a lead listed in `erasures`,
  which the erasure of that person (`mailer lead erase`, the purge: operator/people._remove)
  fills inside its own transaction and empties again before that transaction ends.
- consent_notices: every UPDATE and every DELETE is refused (a notice names nobody; erasure
  keeps it).

On PostgreSQL the marks need no locking of their own: a row in `erasures` is seen only by the
transaction that inserted it until that transaction commits, and it is deleted before the
commit, so no other transaction ever sees a mark, let alone one that is not its own (two
transactions marking the same lead wait for each other on the primary key). On SQLite there
is one writer at a time, so the marks are that writer's.

This guards against the application and anyone working through it by mistake, not against
the database's owner, who can drop a trigger. TRUNCATE fires no row trigger (the tests empty
their database with it). A later migration that rebuilds consent_events or consent_notices
on SQLite (batch mode copies the table) drops their triggers and must create them again.

A notice is identified by its version label and its text together: UNIQUE (version, sha256)
replaces UNIQUE (sha256).
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

APPEND_ONLY = "consent evidence is append-only"
EVENT_UPDATE = f"{APPEND_ONLY}: a consent event cannot be changed"
EVENT_DELETE = (f"{APPEND_ONLY}: a consent event is deleted only by the erasure of its person "
                "(mailer lead erase, the purge)")
NOTICE_UPDATE = f"{APPEND_ONLY}: a stored notice text cannot be changed"
NOTICE_DELETE = f"{APPEND_ONLY}: a stored notice text cannot be deleted"

# RAISE(ABORT) is SQLITE_CONSTRAINT: the statement is undone, the transaction goes on, and
# the driver raises IntegrityError. WHEN decides per row, like the PostgreSQL function.
SQLITE_TRIGGERS = {
    "consent_events_no_update": f"""
        CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events
        BEGIN SELECT RAISE(ABORT, '{EVENT_UPDATE}'); END""",
    "consent_events_no_delete": f"""
        CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events
        WHEN NOT EXISTS (SELECT 1 FROM erasures WHERE lead_id = OLD.lead_id)
        BEGIN SELECT RAISE(ABORT, '{EVENT_DELETE}'); END""",
    "consent_notices_no_update": f"""
        CREATE TRIGGER consent_notices_no_update BEFORE UPDATE ON consent_notices
        BEGIN SELECT RAISE(ABORT, '{NOTICE_UPDATE}'); END""",
    "consent_notices_no_delete": f"""
        CREATE TRIGGER consent_notices_no_delete BEFORE DELETE ON consent_notices
        BEGIN SELECT RAISE(ABORT, '{NOTICE_DELETE}'); END""",
}

# SQLSTATE 23000 (integrity_constraint_violation): the driver raises IntegrityError, as on SQLite.
POSTGRES_FUNCTIONS = {
    "consent_events_append_only": f"""
        CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                IF EXISTS (SELECT 1 FROM erasures WHERE lead_id = OLD.lead_id) THEN
                    RETURN OLD;
                END IF;
                RAISE EXCEPTION '{EVENT_DELETE}' USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RAISE EXCEPTION '{EVENT_UPDATE}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""",
    "consent_notices_append_only": f"""
        CREATE FUNCTION consent_notices_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION '{NOTICE_DELETE}' USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RAISE EXCEPTION '{NOTICE_UPDATE}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""",
}
POSTGRES_TRIGGERS = {  # name: table (the function has the trigger's name)
    "consent_events_append_only": "consent_events",
    "consent_notices_append_only": "consent_notices",
}


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('lead_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.PrimaryKeyConstraint('lead_id')
    )
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_notices(sa.UniqueConstraint('version', 'sha256', name='uq_consent_notices_version_sha256'))
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)
    else:
        op.drop_constraint('consent_notices_sha256_key', 'consent_notices', type_='unique')
        op.create_unique_constraint('uq_consent_notices_version_sha256', 'consent_notices', ['version', 'sha256'])
        for name, statement in POSTGRES_FUNCTIONS.items():
            op.execute(statement)
            op.execute(f"CREATE TRIGGER {name} BEFORE UPDATE OR DELETE ON {POSTGRES_TRIGGERS[name]} "
                       f"FOR EACH ROW EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    # Fails if two notices share a text (a new version label for the same text).
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        _rebuild_sqlite_notices(sa.UniqueConstraint('sha256'))
    else:
        for name, table in POSTGRES_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        op.drop_constraint('uq_consent_notices_version_sha256', 'consent_notices', type_='unique')
        op.create_unique_constraint('consent_notices_sha256_key', 'consent_notices', ['sha256'])
    op.drop_table('erasures')


def _rebuild_sqlite_notices(unique: sa.UniqueConstraint) -> None:
    """SQLite cannot drop a UNIQUE constraint: the table is built again with the new one.

    Not batch mode: it fills a new table and drops the old one, and that drop counts a
    foreign-key violation for every consent event (they point at the old table by name)
    which nothing undoes, so the commit fails (PRAGMA foreign_keys cannot be switched off
    inside the migration's transaction). Here the rows wait in a plain copy (no key points
    at it), the table is dropped and created again, and the rows go back: each row put back
    into consent_notices answers the violations its drop counted, before the commit looks.
    """
    op.execute("PRAGMA defer_foreign_keys = ON")  # until the commit; SQLite resets it then
    op.execute("CREATE TABLE consent_notices_copy AS SELECT id, version, sha256, text, created_at "
               "FROM consent_notices")
    op.drop_table('consent_notices')
    op.create_table('consent_notices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=50), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    unique
    )
    op.execute("INSERT INTO consent_notices (id, version, sha256, text, created_at) "
               "SELECT id, version, sha256, text, created_at FROM consent_notices_copy")
    op.drop_table('consent_notices_copy')
