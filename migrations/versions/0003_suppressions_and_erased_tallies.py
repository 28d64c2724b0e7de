"""suppressions and erased tallies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 09:02:29.744500
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erased_tallies',
    sa.Column('magnet', sa.String(length=100), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('metric', sa.String(length=220), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('magnet', 'day', 'metric')
    )
    op.create_table('suppressions',
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=100), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('address_hash')
    )


def downgrade() -> None:
    op.drop_table('suppressions')
    op.drop_table('erased_tallies')
