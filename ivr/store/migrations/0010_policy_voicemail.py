"""Incoming Call Policies may take a voicemail after NoAnswer (and how long it may be); the Incoming
Call Log keeps the voicemail's file and when it was kept."""
from peewee import BooleanField, CharField, DateTimeField, IntegerField

POLICY_COLUMNS = {
    'voicemailOnNoAnswer': lambda: BooleanField(default=False),
    'voicemailMaxSeconds': lambda: IntegerField(default=120),
}
LOG_COLUMNS = {
    'voicemailFile': lambda: CharField(max_length=255, null=True),
    'voicemailReceivedAt': lambda: DateTimeField(null=True),
}


def up(migrator, db):
    migrator.migrate(*[migrator.add_column('incoming_call_policy', name, make()) for name, make in POLICY_COLUMNS.items()],
                     *[migrator.add_column('incoming_call_log', name, make()) for name, make in LOG_COLUMNS.items()])


def down(migrator, db):
    migrator.migrate(*[migrator.drop_column('incoming_call_policy', name) for name in POLICY_COLUMNS],
                     *[migrator.drop_column('incoming_call_log', name) for name in LOG_COLUMNS])
