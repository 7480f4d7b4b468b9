"""Policies ask an answering on-call engineer to press 1 before the caller is connected (on by default)."""
from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(migrator.add_column(
        'incoming_call_policy', 'requireAnswerConfirmation', BooleanField(default=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column('incoming_call_policy', 'requireAnswerConfirmation'))
