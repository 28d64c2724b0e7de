"""newsletter campaigns and the test sends that allow them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00.000000

Two new tables; nothing existing changes. campaigns: one sending of a newsletter (status,
start time, frozen content hash and filters, the enqueue checkpoint, counts). test_sends: a
test mail of a newsletter with exactly this content hash.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('start_at', sa.DateTime(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('filters', sa.Text(), nullable=False),
    sa.Column('checkpoint', sa.Integer(), nullable=False),
    sa.Column('queued', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_campaigns_status_start', 'campaigns', ['status', 'start_at'], unique=False)
    op.create_index(op.f('ix_campaigns_slug'), 'campaigns', ['slug'], unique=False)
    op.create_table('test_sends',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_test_sends_slug_hash', 'test_sends', ['slug', 'content_hash'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_test_sends_slug_hash', table_name='test_sends')
    op.drop_table('test_sends')
    op.drop_index(op.f('ix_campaigns_slug'), table_name='campaigns')
    op.drop_index('ix_campaigns_status_start', table_name='campaigns')
    op.drop_table('campaigns')
