"""the dashboard overview's figures of finished days, stored once

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 02:00:00.000000

The overview (/beheer/, operator/figures.daily) counts events per UTC day. A day that is over
does not change (but for an import dated in the past, which deletes the stored days from its
earliest one), so its figures are counted once, for every lead magnet, and kept here:
daily_figures holds a count per day, magnet ('' for bounce reports that matched no lead) and
metric; daily_figure_days names the days stored, so a day without any event is known too.
The page then counts live only the days not yet over, whatever the list's size or traffic.
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('daily_figures',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('magnet', sa.String(length=100), nullable=False),
    sa.Column('metric', sa.String(length=40), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'magnet', 'metric')
    )
    op.create_table('daily_figure_days',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('counted_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('day')
    )


def downgrade() -> None:
    op.drop_table('daily_figure_days')
    op.drop_table('daily_figures')
