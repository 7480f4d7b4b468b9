"""Q.850 hang-up causes as Asterisk reports them (``HANGUPCAUSE``, ARI's ``cause``, AMI's ``Cause``):
their names, and what they mean for a ring attempt. The one table every shell reads."""

from __future__ import annotations

from typing import Any

#: Q.850 causes as Asterisk names them (ast_cause2str), for status messages.
CAUSE_TEXT = {
    0: "Unknown", 1: "Unallocated (unassigned) number", 3: "No route to destination",
    16: "Normal Clearing", 17: "User busy", 18: "No user responding", 19: "User alerting, no answer",
    20: "Subscriber absent", 21: "Call Rejected", 22: "Number changed", 26: "Answered elsewhere",
    27: "Destination out of order", 28: "Invalid number format", 29: "Facility rejected",
    31: "Normal, unspecified", 34: "Circuit/channel congestion", 38: "Network out of order",
    41: "Temporary failure", 42: "Switching equipment congestion", 47: "Resource unavailable, unspecified",
    58: "Bearer capability not available", 66: "Channel not implemented", 88: "Incompatible destination",
    102: "Recovery on timer expiry", 127: "Interworking, unspecified",
}

BUSY = 17
CALL_REJECTED = 21
#: Dial() ending the other legs of a parallel ring because one answered.
ANSWERED_ELSEWHERE = 26
#: The call rang (or was cleared normally) without an answer.
NO_ANSWER_CAUSES = frozenset({16, 18, 19, 31})
CONGESTION_CAUSES = frozenset({34, 38, 41, 42, 44, 47})


def cause_text(cause: int | None) -> str:
    if cause is None:
        return "unknown cause"
    return f"{CAUSE_TEXT[cause]} (cause {cause})" if cause in CAUSE_TEXT else f"cause {cause}"


def int_or_none(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def party_end_cause(cause: int | None, answered: bool) -> str:
    """:func:`leg_end_cause`, telling a declined call (``rejected``) from one that failed: the contact
    center's calls report the difference (``end_user_rejected``)."""
    if not answered and cause == CALL_REJECTED:
        return "rejected"
    return leg_end_cause(cause, answered)


def leg_end_cause(cause: int | None, answered: bool) -> str:
    """The escalation engine's leg-end cause (``LegEnded.cause``) of a leg that hung up with ``cause``."""
    if answered:
        return "hangup"
    if cause == BUSY:
        return "busy"
    if cause in NO_ANSWER_CAUSES:
        return "no_answer"
    return "failed"
