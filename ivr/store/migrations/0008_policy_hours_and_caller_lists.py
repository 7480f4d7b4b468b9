"""Incoming Call Policies get business hours (windows in a time zone, and the message played outside
them) and caller block/allow lists (and the message a refused caller hears)."""
from peewee import CharField, TextField

COLUMNS = (
    ('businessHours', TextField(default='[]')),
    ('businessHoursTimeZone', CharField(max_length=64, default='UTC')),
    ('afterHoursMessage', TextField(default='We are closed. Please call again during business hours.')),
    ('callerBlockList', TextField(default='[]')),
    ('callerAllowList', TextField(default='[]')),
    ('blockedCallerMessage', TextField(default='This number cannot take your call.')),
)


def up(migrator, db):
    migrator.migrate(*[migrator.add_column('incoming_call_policy', name, field) for name, field in COLUMNS])


def down(migrator, db):
    migrator.migrate(*[migrator.drop_column('incoming_call_policy', name) for name, _ in COLUMNS])
