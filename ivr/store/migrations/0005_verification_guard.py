"""Wrong verification codes, the lock and the codes sent are kept per destination (project + E.164 or
SIP URI) in ``verification_guard``, a table that outlives the numbers: deleting and re-creating a
number no longer unlocks it or resets its count. The counts move out of
``user_incoming_call_number_verification`` (which keeps only the code).

Existing counts and locks are carried over (rows of one destination merged: the highest count, the
earliest lock). Codes issued before this migration are expired: they were spoken through the
speech synthesizer, whose cached prompt files are named after their text, so they may be
recoverable from the prompt directory; a re-send gives a new code, which is never synthesized.

Frozen copies of the models as they are here (custom field types written as their base types), and
a frozen copy of the destination key (ivr.core.phone.destination_key) as it is here.
"""
import datetime as dt
import json
import logging
import re
import urllib.parse
import uuid

from peewee import *

log = logging.getLogger("hotline.migrations")

_SIP_URI = re.compile(
    r"^sips?:"
    r"(?:(?P<user>[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)"
    r"(?::(?P<port>\d{1,5}))?"
    r"(?P<params>(?:;[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%]+)?)*)$"
)
_DEFAULT_PORTS = {"sip": "5060", "sips": "5061"}


def _destination_key(address):
    text = re.sub(r"^(?i:sips?):", lambda scheme: scheme.group(0).lower(), address.strip())
    match = _SIP_URI.match(text)
    if not match:
        return text
    scheme = text.split(":", 1)[0].lower()
    user = urllib.parse.unquote(match.group("user") or "").lower()
    host = match.group("host").lower()
    port = match.group("port")
    if port is not None:
        port = str(int(port))
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    return "sip:" + (f"{user}@" if user else "") + host + (f":{port}" if port else "")


def _now():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def up(migrator, db):
    class Project(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        class Meta:
            database = db
            table_name = 'project'

    class VerificationGuard(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        createdAt = DateTimeField()
        updatedAt = DateTimeField()
        project = ForeignKeyField(Project, field=Project.id, column_name='projectId', on_delete='CASCADE')
        destination = CharField(max_length=255)
        attempts = IntegerField(default=0)
        lockedAt = DateTimeField(null=True)
        codesSentAt = TextField(default='[]')
        class Meta:
            database = db
            table_name = 'verification_guard'
            indexes = ((('project', 'destination'), True),)
    db.create_tables([VerificationGuard])

    # The counts of today's rows, per destination.
    codes = Table('user_incoming_call_number_verification').bind(db)
    numbers = Table('user_incoming_call_number').bind(db)
    rows = (codes.select(numbers.c.projectId, numbers.c.phoneNumber, numbers.c.sipUri, codes.c.attempts,
                         codes.c.lockedAt)
            .join(numbers, on=(codes.c.userIncomingCallNumberId == numbers.c._id)).dicts())
    merged = {}
    for row in rows:
        address = row['phoneNumber'] or row['sipUri']
        if not address or not (row['attempts'] or row['lockedAt']):
            continue
        key = (str(row['projectId']), _destination_key(address))
        attempts, locked = merged.get(key, (0, None))
        merged[key] = (max(attempts, row['attempts'] or 0),
                       min(filter(None, (locked, row['lockedAt'])), default=None))
    now = _now()
    for (project_id, destination), (attempts, locked) in merged.items():
        VerificationGuard.create(createdAt=now, updatedAt=now, project=uuid.UUID(project_id),
                                 destination=destination, attempts=attempts, lockedAt=locked,
                                 codesSentAt=json.dumps([]))
    if merged:
        log.info("verification: counts of wrong codes carried over for %d destination(s), %d of them locked",
                 len(merged), sum(1 for _, locked in merged.values() if locked))

    expired = (codes.update(expiresAt=now, undeliveredCode=None)
               .where(codes.c.expiresAt > now).execute())
    if expired:
        log.warning("verification: %d pending code(s) expired: they were spoken through the speech synthesizer, "
                    "whose prompt cache may hold them; re-send a code (it is no longer synthesized)", expired)

    migrator.migrate(
        migrator.drop_column('user_incoming_call_number_verification', 'attempts'),
        migrator.drop_column('user_incoming_call_number_verification', 'lockedAt'),
    )


def down(migrator, db):
    guards = Table('verification_guard').bind(db)
    codes = Table('user_incoming_call_number_verification').bind(db)
    numbers = Table('user_incoming_call_number').bind(db)
    migrator.migrate(
        migrator.add_column('user_incoming_call_number_verification', 'attempts', IntegerField(default=0)),
        migrator.add_column('user_incoming_call_number_verification', 'lockedAt', DateTimeField(null=True)),
    )
    counts = {(str(g['projectId']), g['destination']): (g['attempts'], g['lockedAt'])
              for g in guards.select(guards.c.projectId, guards.c.destination, guards.c.attempts,
                                     guards.c.lockedAt).dicts()}
    rows = (codes.select(codes.c._id, numbers.c.projectId, numbers.c.phoneNumber, numbers.c.sipUri)
            .join(numbers, on=(codes.c.userIncomingCallNumberId == numbers.c._id)).dicts())
    for row in list(rows):
        address = row['phoneNumber'] or row['sipUri'] or ''
        attempts, locked = counts.get((str(row['projectId']), _destination_key(address)), (0, None))
        if attempts or locked:
            codes.update(attempts=attempts, lockedAt=locked).where(codes.c._id == row['_id']).execute()
    migrator.migrate(migrator.drop_table('verification_guard'))
