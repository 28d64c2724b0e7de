"""a lead can end the newsletter alone: leads.newsletter_ended_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000

One nullable column on leads (None: the lead gets the newsletter). The change of mind itself
is a consent event of kind "newsletter-end"; consent_events and its append-only triggers of
0004 are not touched. SQLite adds and drops a column in place (ALTER TABLE ... ADD/DROP
COLUMN, SQLite 3.35 and later), so leads is not rebuilt.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('leads', sa.Column('newsletter_ended_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column('leads', 'newsletter_ended_at')
