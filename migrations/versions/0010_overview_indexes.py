"""indexes for the dashboard's overview: each daily figure read by a range of its time column

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:00:00.000000

The overview (/beheer/) counts events per day of a period, each from its own time column
(operator/figures.daily). Without these indexes every figure would read the whole table; with
them a period's figures read only the period's rows, so the page costs the same on a million
leads as on ten thousand. ix_leads_created, ix_leads_confirmed, ix_downloads_at and
ix_consent_events_kind_at carry the other columns their counts test (magnet, marketing
consent), so a count never visits the table. ix_outbox_sent and ix_bounce_reports_outbox serve the
bounce and complaint warning (operator/bounces.rates over the last seven days' sent mail).
ix_outbox_kind_status_step and ix_clicks_step serve the sequences page (operator/figures.step_totals:
the sent drip mail and the clicking leads per step, each counted from its index alone).
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

INDEXES = (
    ('ix_leads_created', 'leads', ['created_at', 'magnet']),
    ('ix_leads_confirmed', 'leads', ['confirmed_at', 'magnet']),
    ('ix_downloads_at', 'downloads', ['at', 'magnet']),
    ('ix_consent_events_kind_at', 'consent_events', ['kind', 'at', 'magnet', 'marketing_consent']),
    ('ix_outbox_sent', 'outbox', ['status', 'sent_at']),
    ('ix_bounce_reports_outbox', 'bounce_reports', ['outbox_id']),
    ('ix_outbox_kind_status_step', 'outbox', ['kind', 'status', 'sequence', 'step']),
    ('ix_clicks_step', 'clicks', ['sequence', 'step', 'lead_id']),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
