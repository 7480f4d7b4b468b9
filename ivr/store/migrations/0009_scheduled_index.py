"""An index on contact-center calls' (status, scheduledAt): the call services look for the scheduled calls
that are due several times a second (ivr/store/scheduled.py)."""
from playhouse.migrations import make_index_name


def up(migrator, db):
    migrator.migrate(migrator.add_index('contact_center_call', ('status', 'scheduledAt'), False))


def down(migrator, db):
    migrator.migrate(migrator.drop_index('contact_center_call',
                                         make_index_name('contact_center_call', ['status', 'scheduledAt'])))
