"""The contact center of the calls API (``/apps/api/v1/calls``): agents (fields of a user), menus and
their queues of agents, end users, CRM tickets, outbound numbers, and the calls with their
participants. The rows that API shows carry an integer ``numericId`` (CCAI's ids are integers),
given from ``number_sequence``; existing users are numbered here in the order they were created.

Frozen copies of the models as they are here (custom field types written as their base types).
"""
import uuid

from peewee import *
from playhouse.migrations import make_index_name


def up(migrator, db):
    class Project(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        class Meta:
            database = db
            table_name = 'project'

    class User(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        class Meta:
            database = db
            table_name = 'user'

    class IncomingCallPolicy(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        class Meta:
            database = db
            table_name = 'incoming_call_policy'

    class Base(Model):
        id = UUIDField(primary_key=True, default=uuid.uuid4, column_name='_id')
        createdAt = DateTimeField()
        updatedAt = DateTimeField()
        project = ForeignKeyField(Project, field=Project.id, column_name='projectId', on_delete='CASCADE')
        class Meta:
            database = db

    class NumberSequence(Model):
        name = CharField(max_length=64, primary_key=True)
        value = IntegerField(default=0)
        class Meta:
            database = db
            table_name = 'number_sequence'

    class OutboundPhoneNumber(Base):
        phoneNumber = CharField(max_length=32)
        name = CharField(max_length=200, null=True)
        isDefault = BooleanField(default=False)
        class Meta:
            table_name = 'outbound_phone_number'
            indexes = ((('project', 'phoneNumber'), True),)

    class CallMenu(Base):
        numericId = IntegerField(unique=True, null=True)
        name = CharField(max_length=200)
        parent = ForeignKeyField('self', column_name='parentId', null=True, on_delete='RESTRICT',
                                 backref='children')
        position = IntegerField(default=0)
        menuType = CharField(max_length=32, default='ivr_menu')
        outputMessage = TextField(null=True)
        languages = TextField(default='["en"]')
        state = CharField(max_length=32, default='open')
        timeZone = CharField(max_length=64, default='UTC')
        openingHours = TextField(default='[]')
        redirectionNumber = CharField(max_length=32, null=True)
        redirectionMenu = ForeignKeyField('self', column_name='redirectionMenuId', null=True, on_delete='SET NULL',
                                          backref='redirected_from')
        routingPhoneNumber = CharField(max_length=32, null=True, unique=True)
        incomingCallPolicy = ForeignKeyField(IncomingCallPolicy, field=IncomingCallPolicy.id,
                                             column_name='incomingCallPolicyId', null=True, on_delete='RESTRICT')
        offerType = CharField(max_length=32, default='multicast')
        cascadeGroupDelaySeconds = IntegerField(default=30)
        recordingOption = CharField(max_length=32, default='never')
        outboundPhoneNumber = ForeignKeyField(OutboundPhoneNumber, field=OutboundPhoneNumber.id,
                                              column_name='outboundPhoneNumberId', null=True, on_delete='SET NULL')
        hidden = BooleanField(default=False)
        class Meta:
            table_name = 'call_menu'
            indexes = ((('parent', 'position'), False),)

    class CallMenuAgent(Base):
        callMenu = ForeignKeyField(CallMenu, field=CallMenu.id, column_name='callMenuId', on_delete='CASCADE')
        user = ForeignKeyField(User, field=User.id, column_name='userId', on_delete='CASCADE')
        groupNumber = IntegerField(default=1)
        class Meta:
            table_name = 'call_menu_agent'
            indexes = ((('callMenu', 'user'), True),)

    class EndUser(Base):
        numericId = IntegerField(unique=True, null=True)
        identifier = CharField(max_length=200, null=True)
        phoneNumber = CharField(max_length=32, null=True)
        outContactId = CharField(max_length=200, null=True)
        name = CharField(max_length=200, null=True)
        class Meta:
            table_name = 'end_user'
            indexes = ((('project', 'phoneNumber'), False),)

    class CrmTicket(Base):
        ticketId = CharField(max_length=200)
        endUser = ForeignKeyField(EndUser, field=EndUser.id, column_name='endUserId', on_delete='CASCADE')
        url = CharField(max_length=1000, null=True)
        class Meta:
            table_name = 'crm_ticket'
            indexes = ((('project', 'ticketId'), True),)

    class ContactCenterCall(Base):
        numericId = IntegerField(unique=True, null=True)
        callType = CharField(max_length=32)
        status = CharField(max_length=32)
        lang = CharField(max_length=8, default='en')
        parentCallId = UUIDField(null=True)
        menu = ForeignKeyField(CallMenu, field=CallMenu.id, column_name='callMenuId', null=True,
                               on_delete='SET NULL')
        agentId = UUIDField(null=True)
        endUser = ForeignKeyField(EndUser, field=EndUser.id, column_name='endUserId', null=True,
                                  on_delete='SET NULL')
        endUserNumber = CharField(max_length=32, null=True)
        outboundNumber = CharField(max_length=32, null=True)
        outboundChoices = TextField(default='[]')
        ticketId = CharField(max_length=200, null=True)
        ticketUrl = CharField(max_length=1000, null=True)
        queuedAt = DateTimeField(null=True)
        assignedAt = DateTimeField(null=True)
        connectedAt = DateTimeField(null=True)
        endsAt = DateTimeField(null=True)
        scheduledAt = DateTimeField(null=True)
        waitDuration = IntegerField(default=0)
        callDuration = IntegerField(default=0)
        holdDuration = IntegerField(default=0)
        recordingPermission = CharField(max_length=32, default='not_asked')
        recordRequested = BooleanField(default=False)
        recordingFile = CharField(max_length=500, null=True)
        voicemailReason = CharField(max_length=32, default='not_voicemail')
        deflection = CharField(max_length=32, default='no_deflection')
        disconnectedBy = CharField(max_length=32, default='disconnected_by_unknown')
        failReason = CharField(max_length=40, default='nothing')
        failDetails = TextField(null=True)
        supportNumber = CharField(max_length=32, null=True)
        offerType = CharField(max_length=32, null=True)
        offerEvents = TextField(default='[]')
        answerType = CharField(max_length=16, default='manual')
        voipProvider = CharField(max_length=32, default='voip_provider_asterisk')
        verifiedCustomer = BooleanField(default=False)
        badActor = BooleanField(default=False)
        repeatCustomer = BooleanField(default=False)
        rating = IntegerField(null=True)
        hasFeedback = BooleanField(default=False)
        incomingCallLogId = UUIDField(null=True)
        channelPrefix = CharField(max_length=64, null=True)
        class Meta:
            table_name = 'contact_center_call'
            indexes = (
                (('project', 'createdAt'), False),
                (('project', 'status', 'createdAt'), False),
                (('agentId', 'status'), False),
            )

    class ContactCenterParticipant(Base):
        numericId = IntegerField(unique=True, null=True)
        call = ForeignKeyField(ContactCenterCall, field=ContactCenterCall.id, column_name='callId',
                               on_delete='CASCADE')
        type = CharField(max_length=32)
        status = CharField(max_length=32, default='waiting')
        userId = UUIDField(null=True)
        endUser = ForeignKeyField(EndUser, field=EndUser.id, column_name='endUserId', null=True,
                                  on_delete='SET NULL')
        address = CharField(max_length=255, null=True)
        channelId = CharField(max_length=128, null=True)
        callDuration = IntegerField(null=True)
        holdDuration = IntegerField(null=True)
        connectedAt = DateTimeField(null=True)
        endedAt = DateTimeField(null=True)
        failReason = CharField(max_length=40, default='nothing')
        class Meta:
            table_name = 'contact_center_participant'
            indexes = ((('call', 'type'), False),)

    db.create_tables([NumberSequence, OutboundPhoneNumber, CallMenu, CallMenuAgent, EndUser, CrmTicket,
                      ContactCenterCall, ContactCenterParticipant])

    migrator.migrate(
        migrator.add_column('user', 'numericId', IntegerField(null=True)),
        migrator.add_column('user', 'isAgent', BooleanField(default=False)),
        migrator.add_column('user', 'agentNumber', CharField(max_length=64, null=True)),
        migrator.add_column('user', 'canMakeOutboundCalls', BooleanField(default=True)),
        migrator.add_column('user', 'agentAvailability', CharField(max_length=32, default='Available')),
        migrator.add_column('user', 'avatarUrl', CharField(max_length=500, null=True)),
    )
    users = Table('user').bind(db)
    count = 0
    for (user_id,) in users.select(users.c._id).order_by(users.c.createdAt, users.c._id).tuples():
        count += 1
        users.update({users.c.numericId: count}).where(users.c._id == user_id).execute()
    if count:
        NumberSequence.insert(name='user', value=count).execute()
    migrator.migrate(migrator.add_index('user', ('numericId',), True))


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index('user', make_index_name('user', ['numericId'])),
        *[migrator.drop_column('user', name)
          for name in ('numericId', 'isAgent', 'agentNumber', 'canMakeOutboundCalls', 'agentAvailability',
                       'avatarUrl')],
    )
    for table in ('contact_center_participant', 'contact_center_call', 'crm_ticket', 'end_user', 'call_menu_agent',
                  'call_menu', 'outbound_phone_number', 'number_sequence'):
        db.execute_sql(f'DROP TABLE {table}')
