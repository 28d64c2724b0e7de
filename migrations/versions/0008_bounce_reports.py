"""bounce and complaint reports; outbox rows findable by Message-ID

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 23:10:00.000000

bounce_reports: every report that came back, stored once (by its own Message-ID), with what
it was and what it did. ix_outbox_message_id: a report without a VERP token is matched by the
Message-ID of the mail it quotes.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bounce_reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=300), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=30), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('format', sa.String(length=20), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=True),
    sa.Column('action', sa.String(length=20), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=True),
    sa.Column('diagnostic', sa.Text(), nullable=True),
    sa.Column('matched_by', sa.String(length=20), nullable=True),
    sa.Column('outbox_id', sa.Integer(), nullable=True),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('raw_size', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], ),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    op.create_index('ix_bounce_reports_lead', 'bounce_reports', ['lead_id'], unique=False)
    op.create_index('ix_bounce_reports_kind_at', 'bounce_reports', ['kind', 'received_at'], unique=False)
    op.create_index('ix_outbox_message_id', 'outbox', ['message_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_message_id', table_name='outbox')
    op.drop_index('ix_bounce_reports_kind_at', table_name='bounce_reports')
    op.drop_index('ix_bounce_reports_lead', table_name='bounce_reports')
    op.drop_table('bounce_reports')
