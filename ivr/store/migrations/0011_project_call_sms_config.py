"""Project-level Twilio configurations (OneUptime's Project Call & SMS Config): a project's own account,
which its Incoming Call Policies may name (projectCallSMSConfigId, there since 0001) instead of the global
one. The auth token is stored encrypted (Fernet, under twilio.encryption_key).

A frozen copy of the model as it is here (custom field types written as their base types).
"""
import uuid

from peewee import *


def _model(db):
    class Project(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        class Meta:
            database = db
            table_name = 'project'

    class ProjectCallSMSConfig(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        createdAt = DateTimeField()
        updatedAt = DateTimeField()
        project = ForeignKeyField(Project, field=Project.id, column_name='projectId', on_delete='CASCADE')
        name = CharField(max_length=100)
        description = TextField(null=True)
        twilioAccountSID = CharField(max_length=64)
        twilioAuthToken = TextField()
        twilioPrimaryPhoneNumber = CharField(max_length=32)
        class Meta:
            database = db
            table_name = 'project_call_sms_config'
            indexes = ((('twilioAccountSID',), False),)

    return ProjectCallSMSConfig


def up(migrator, db):
    db.create_tables([_model(db)])


def down(migrator, db):
    db.drop_tables([_model(db)])
