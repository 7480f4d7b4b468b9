"""Inbound contact-center calls: what a menu's queue does with a caller no agent takes (deflection
to voicemail or a message, after how long) and what an after-hours menu does, the message said,
the voicemail's longest recording, and when a caller deflected to a call-back is called back."""
from peewee import *


COLUMNS = {
    'noAgentDeflection': lambda: CharField(max_length=32, default='voicemail'),
    'afterHoursDeflection': lambda: CharField(max_length=32, default='voicemail'),
    'deflectionMessage': lambda: TextField(null=True),
    'maxWaitSeconds': lambda: IntegerField(default=120),
    'voicemailMaxSeconds': lambda: IntegerField(default=120),
    'callbackDelaySeconds': lambda: IntegerField(default=900),
}


def up(migrator, db):
    migrator.migrate(*[migrator.add_column('call_menu', name, make()) for name, make in COLUMNS.items()])


def down(migrator, db):
    migrator.migrate(*[migrator.drop_column('call_menu', name) for name in COLUMNS])
