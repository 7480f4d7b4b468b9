"""The contact center's words: the enumerations of the CCAI-style calls API (``/apps/api/v1/calls``,
seed ``ccai-calls-api.txt``), one definition each, shared by the models, the API and the flows.

Values are the seed's snake_case strings. Where the seed names a value (``not_asked``,
``not_voicemail``, ``no_deflection``, ``disconnected_by_unknown``, ``nothing``, ``ivr_menu``,
``cascade``, ``manual``, ``voip_provider_twilio``) it is used as written; the rest follow its style.
"""

from __future__ import annotations

from enum import StrEnum


class CallType(StrEnum):
    OUTBOUND = "Voice Outbound (API)"
    INBOUND = "Voice Inbound (API)"
    SCHEDULED = "Voice Scheduled (API)"
    #: A phone call to a root IVR menu's routing number (not made through the API: the seed names
    #: only the API's types; this one follows their style).
    IVR = "Voice Inbound (IVR)"


#: The names a request may use for each type: the seed's and its deprecated aliases.
CALL_TYPE_NAMES = {
    "Voice Outbound (API)": CallType.OUTBOUND, "OutboundCall": CallType.OUTBOUND,
    "Voice Inbound (API)": CallType.INBOUND, "IncomingCall": CallType.INBOUND,
    "Voice Scheduled (API)": CallType.SCHEDULED, "ScheduledCall": CallType.SCHEDULED,
}


class CallStatus(StrEnum):
    """The seed's call statuses (its table "Call status definitions")."""

    SELECTING = "selecting"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FINISHED = "finished"
    FAILED = "failed"
    SWITCHING = "switching"
    RECOVERED = "recovered"
    SCHEDULED = "scheduled"
    ACTION_ONLY = "action_only"
    ACTION_ONLY_FINISHED = "action_only_finished"
    DEFLECTED = "deflected"
    VOICEMAIL = "voicemail"
    VOICEMAIL_RECEIVED = "voicemail_received"
    VOICEMAIL_READ = "voicemail_read"


#: An agent on a call in one of these is busy: not available for another.
AGENT_BUSY_STATUSES = frozenset({CallStatus.ASSIGNED, CallStatus.CONNECTING, CallStatus.CONNECTED})
#: A call in one of these has a live phone call that a call-services process runs.
LIVE_STATUSES = AGENT_BUSY_STATUSES | {CallStatus.SELECTING, CallStatus.QUEUED, CallStatus.VOICEMAIL}
#: A call in one of these is over: nothing of it runs any more.
ENDED_STATUSES = frozenset({CallStatus.FINISHED, CallStatus.FAILED, CallStatus.RECOVERED, CallStatus.DEFLECTED,
                            CallStatus.VOICEMAIL_RECEIVED, CallStatus.VOICEMAIL_READ,
                            CallStatus.ACTION_ONLY_FINISHED})


class ParticipantType(StrEnum):
    AGENT = "agent"
    END_USER = "end_user"


class ParticipantStatus(StrEnum):
    WAITING = "waiting"        # not rung yet
    CONNECTING = "connecting"  # its phone is ringing
    CONNECTED = "connected"    # answered, in the call
    FINISHED = "finished"      # was connected, has left
    FAILED = "failed"          # never connected (fail_reason says why)


class FailReason(StrEnum):
    """Why a call (or a participant) ended before it was connected; ``nothing`` while it has not."""

    NOTHING = "nothing"
    AGENT_NO_ANSWER = "agent_no_answer"
    AGENT_BUSY = "agent_busy"
    AGENT_REJECTED = "agent_rejected"
    AGENT_HUNG_UP = "agent_hung_up"                # the agent left before the end user answered
    AGENT_NO_CHOICE = "agent_no_outbound_number_chosen"
    AGENT_UNREACHABLE = "agent_unreachable"        # no verified number, or it could not be dialed
    END_USER_BUSY = "end_user_busy"
    END_USER_NO_ANSWER = "end_user_no_answer"
    END_USER_REJECTED = "end_user_rejected"
    END_USER_UNREACHABLE = "end_user_unreachable"  # the network could not reach the number
    NETWORK_ERROR = "network_error"                # Asterisk refused or lost the call
    SYSTEM_ERROR = "system_error"                  # Hotline itself failed (its log says why)
    LOST = "lost"                                  # the controller stopped during the call
    END_USER_HUNG_UP = "end_user_hung_up"          # the caller left before an agent was connected
    END_USER_NO_SELECTION = "end_user_no_selection"  # the caller chose nothing valid in the menu


class DisconnectedBy(StrEnum):
    UNKNOWN = "disconnected_by_unknown"
    AGENT = "disconnected_by_agent"
    END_USER = "disconnected_by_end_user"
    SYSTEM = "disconnected_by_system"


class RecordingPermission(StrEnum):
    """What the call object says; a request may also send ``recording_permission_not_asked``."""

    NOT_ASKED = "not_asked"
    GRANTED = "recording_permission_granted"
    DENIED = "recording_permission_denied"


#: The values a request may send, and what each means.
RECORDING_PERMISSION_NAMES = {
    "recording_permission_not_asked": RecordingPermission.NOT_ASKED, "not_asked": RecordingPermission.NOT_ASKED,
    "recording_permission_granted": RecordingPermission.GRANTED,
    "recording_permission_denied": RecordingPermission.DENIED,
}


class RecordingOption(StrEnum):
    """A menu's (queue's) "Call Recording Options"."""

    NEVER = "never"
    ALWAYS = "always"
    ASK = "ask"   # only calls whose recording_permission is granted are recorded


class VoicemailReason(StrEnum):
    NOT_VOICEMAIL = "not_voicemail"
    AFTER_HOURS = "after_hours"
    NO_AGENT_AVAILABLE = "no_agent_available"
    MANUAL_REDIRECTION = "manual_redirection"


class Deflection(StrEnum):
    NO_DEFLECTION = "no_deflection"
    VOICEMAIL = "voicemail"
    MESSAGE = "message"
    SCHEDULED_CALL = "scheduled_call"
    REDIRECTION = "redirection"


class MenuDeflection(StrEnum):
    """What a menu does with a caller it cannot serve (after hours, no agent): its ``Deflection``."""

    VOICEMAIL = "voicemail"
    MESSAGE = "message"
    SCHEDULED_CALL = "scheduled_call"   # "we will call you back": a scheduled call to the caller's number


class MenuType(StrEnum):
    IVR = "ivr_menu"
    MOBILE = "mobile_menu"
    WEB = "web_menu"


class MenuState(StrEnum):
    OPEN = "open"
    AFTER_HOURS = "after_hours"
    MANUAL_REDIRECTION = "manual_redirection"


class OfferType(StrEnum):
    MULTICAST = "multicast"   # every available agent at once
    CASCADE = "cascade"       # group 1, then group 2 added after the group delay, ...


class AnswerType(StrEnum):
    MANUAL = "manual"


class AgentAvailability(StrEnum):
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"


VOIP_PROVIDER_ASTERISK = "voip_provider_asterisk"

#: ISO 639-1: the two-letter codes of languages ("Language 'xy' is not found" outside this set).
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en
eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja
jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb
nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq
sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())


def is_language(code: object) -> bool:
    return isinstance(code, str) and code in ISO_639_1
