"""frozen campaign mail, subject A/B tests, one live campaign per newsletter

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 22:00:00.000000

campaign_mails: a campaign's mail as rendered at its start, per subject variant and lead
magnet; outbox.campaign_mail_id points a campaign's row at it (rows queued before this
revision keep NULL and are rendered from the file, as they were). campaigns gains the frozen
newsletter (subject, preheader, public, the archive's body), the A/B test's settings and
result, the status a pause returns to, and a partial unique index: one live campaign per slug.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

FK = 'fk_outbox_campaign_mail_id_campaign_mails'
LIVE = "status IN ('scheduled', 'sending', 'testing', 'paused')"


def upgrade() -> None:
    op.create_table('campaign_mails',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('variant', sa.String(length=1), nullable=False),
    sa.Column('magnet', sa.String(length=100), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.Column('links', sa.Text(), nullable=False),
    sa.Column('sender', sa.String(length=320), nullable=True),
    sa.Column('reply_to', sa.String(length=320), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'variant', 'magnet')
    )
    if op.get_bind().dialect.name == 'postgresql':
        op.add_column('outbox', sa.Column('campaign_mail_id', sa.Integer(), nullable=True))
        op.create_foreign_key(FK, 'outbox', 'campaign_mails', ['campaign_mail_id'], ['id'])
    else:  # SQLite adds a column with its REFERENCES in place, without copying the outbox
        op.execute("ALTER TABLE outbox ADD COLUMN campaign_mail_id INTEGER REFERENCES campaign_mails (id)")
    for column in (
        sa.Column('paused_from', sa.String(length=20), nullable=True),
        sa.Column('paused_at', sa.DateTime(), nullable=True),
        sa.Column('frozen_at', sa.DateTime(), nullable=True),
        sa.Column('subject', sa.Text(), nullable=True),
        sa.Column('preheader', sa.Text(), nullable=True),
        sa.Column('public', sa.Boolean(), nullable=True),
        sa.Column('page', sa.Text(), nullable=True),
        sa.Column('ab_subject', sa.Text(), nullable=True),
        sa.Column('ab_share', sa.SmallInteger(), nullable=True),
        sa.Column('ab_hours', sa.Float(), nullable=True),
        sa.Column('ab_seed', sa.Integer(), nullable=True),
        sa.Column('ab_paused_seconds', sa.Float(), nullable=True),
        sa.Column('ab_winner', sa.String(length=1), nullable=True),
        sa.Column('ab_decided_at', sa.DateTime(), nullable=True),
        sa.Column('ab_clicks', sa.Text(), nullable=True),
    ):
        op.add_column('campaigns', column)
    # A campaign paused before this revision returns to sending (it had queued) or scheduled.
    op.execute("UPDATE campaigns SET paused_from = CASE WHEN checkpoint > 0 OR queued > 0 "
               "THEN 'sending' ELSE 'scheduled' END WHERE status = 'paused'")
    # The old check in `send` could let two simultaneous sends through; say so rather than fail
    # on the index with a database error.
    twice = op.get_bind().execute(sa.text(
        f"SELECT slug, min(id), max(id) FROM campaigns WHERE {LIVE} GROUP BY slug HAVING count(*) > 1")).all()
    if twice:
        names = ", ".join(f"{slug} (campaigns {first} to {last})" for slug, first, last in twice)
        raise RuntimeError(f"newsletters with more than one live campaign: {names}. Cancel the extra ones with "
                           "the version you run now (`mailer newsletter cancel SLUG` cancels the newest), "
                           "then upgrade again.")
    op.create_index('ux_campaigns_live_slug', 'campaigns', ['slug'], unique=True,
                    sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))


def downgrade() -> None:
    op.drop_index('ux_campaigns_live_slug', table_name='campaigns',
                  sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))
    for column in ('ab_clicks', 'ab_decided_at', 'ab_winner', 'ab_paused_seconds', 'ab_seed', 'ab_hours',
                   'ab_share', 'ab_subject', 'page', 'public', 'preheader', 'subject', 'frozen_at', 'paused_at',
                   'paused_from'):
        op.drop_column('campaigns', column)
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_constraint(FK, 'outbox', type_='foreignkey')
    op.drop_column('outbox', 'campaign_mail_id')
    op.drop_table('campaign_mails')
