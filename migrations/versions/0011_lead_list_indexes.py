"""indexes for the dashboard's leads list: newest first a page at a time, filtered or searched

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:00:00.000000

The list (/beheer/leads, operator/leads.page) walks leads newest first by id from a cursor
(keyset, never OFFSET). ix_leads_status_id and ix_leads_magnet_id hold the id after the
filter's value, so a page with a status or magnet filter reads its fifty entries from the
index, wherever in the list it is, on a million leads as on ten thousand. The search looks
for an address or a first name that starts with the typed text, as a range of an index: the
address by the unique index on email (SQLite compares byte-wise), the name by lower(first_name).
On PostgreSQL both are COLLATE "C": a language's collation does not keep a prefix together
(it ignores dots and dashes at first), and the unique index on email has the database's.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_leads_status_id', 'leads', ['status', 'id'], unique=False)
    op.create_index('ix_leads_magnet_id', 'leads', ['magnet', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.create_index('ix_leads_name_prefix', 'leads', [sa.text('lower((first_name)::text) COLLATE "C"')])
        op.create_index('ix_leads_email_prefix', 'leads', [sa.text('((email)::text) COLLATE "C"')])
    else:
        op.create_index('ix_leads_name_prefix', 'leads', [sa.text('lower(first_name)')])


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_leads_email_prefix', table_name='leads')
    op.drop_index('ix_leads_name_prefix', table_name='leads')
    op.drop_index('ix_leads_magnet_id', table_name='leads')
    op.drop_index('ix_leads_status_id', table_name='leads')
