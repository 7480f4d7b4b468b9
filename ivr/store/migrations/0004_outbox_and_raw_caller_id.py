"""An outbox table (work handed between processes through the database: notification calls to place,
webhook deliveries that survive a restart), and the raw caller ID of a call whose caller ID is not a
phone number that fits callerPhoneNumber."""
import uuid

from peewee import CharField, DateTimeField, IntegerField, Model, TextField, UUIDField


def up(migrator, db):
    class OutboxMessage(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        createdAt = DateTimeField()
        updatedAt = DateTimeField()
        kind = CharField(max_length=32)
        payload = TextField(default='{}')
        availableAt = DateTimeField()
        attempts = IntegerField(default=0)
        leaseUntil = DateTimeField(null=True)
        lastError = TextField(null=True)

        class Meta:
            database = db
            table_name = 'outbox_message'
            indexes = ((('kind', 'availableAt'), False),)

    db.create_tables([OutboxMessage])
    migrator.migrate(migrator.add_column('incoming_call_log', 'callerIdRaw', TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column('incoming_call_log', 'callerIdRaw'))
    db.execute_sql('DROP TABLE outbox_message')
