"""The walk of an IVR menu tree by a caller, as a pure flow: events in, commands out.

A caller dials a root IVR menu's routing number. Each menu says its ``outputMessage`` and, when it
has children, which key selects each ("For Sales, press 1."); the caller's key (RFC 2833) walks
down. A wrong key or none repeats the menu, at most :data:`MAX_ROUNDS` times, then the call ends
politely. A leaf ends the walk with an outcome the shell acts on: :class:`EnterQueue` (its queue of
agents), :class:`HandToPolicy` (its Incoming Call Policy), :class:`Redirect` (manual redirection to
a number) or :class:`Deflect` (voicemail, a message or a call-back: the menu is after hours, or in
manual redirection with nowhere to redirect to). A menu in manual redirection with a redirection
menu sends the caller there (at most :data:`MAX_HOPS` hops: two menus redirecting to each other must
not loop).

Status: ``selecting`` while walking, with ``menu_id`` (the call's selected menu) following the
caller. No I/O; times are the ``now`` given to :meth:`MenuWalk.handle`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.core.contact_center.updates import UpdateCall
from ivr.core.contact_center.vocabulary import (
    CallStatus,
    Deflection,
    DisconnectedBy,
    FailReason,
    MenuState,
    VoicemailReason,
)
from ivr.core.vocabulary import (
    CALLER,
    CancelTimer,
    DigitPressed,
    HangupCaller,
    IllegalEvent,
    Play,
    PlaybackFinished,
    StartTimer,
    StopPlayback,
    TimerFired,
)

MAX_ROUNDS = 3   # a menu is said at most this many times without a valid key
MAX_HOPS = 5     # redirections followed before the call is deflected
INPUT = "menu-input"

INVALID_TEXT = "That is not a valid choice."
NO_SELECTION_TEXT = "We did not receive a valid selection. Goodbye."
UNAVAILABLE_TEXT = "This service is not available at the moment. Please try again later. Goodbye."


@dataclass(frozen=True)
class MenuNode:
    """One menu of the tree as the walk sees it (its state already evaluated at call start)."""

    id: str
    name: str
    message: str = ""
    state: MenuState = MenuState.OPEN
    children: tuple[str, ...] = ()      # the visible children's ids, by position
    keys: tuple[str, ...] = ()          # the key that selects each child (position + 1)
    policy_id: str | None = None        # a leaf that hands the call to this policy
    redirection_menu: str | None = None
    redirection_number: str | None = None   # E.164, verified in the project (the store checks it)
    after_hours: Deflection = Deflection.MESSAGE
    deflection_message: str = ""        # said before hanging up when deflected to a message
    voicemail_seconds: float = 120.0    # the longest voicemail recorded for this menu
    callback_seconds: float = 900.0     # a call-back (scheduled_call) is placed this much later

    @property
    def is_leaf(self) -> bool:
        return not self.children


@dataclass(frozen=True)
class WalkSetup:
    call_id: str
    root_id: str
    menus: dict[str, MenuNode]
    input_seconds: float = 5.0          # how long the walk waits for a key after a menu was said


@dataclass(frozen=True)
class Started:
    """The caller's channel is answered and in Hotline's hands."""


# -- outcomes: the walk is over, the shell goes on with the call ------------------------------------


@dataclass(frozen=True)
class EnterQueue:
    menu_id: str


@dataclass(frozen=True)
class HandToPolicy:
    menu_id: str
    policy_id: str


@dataclass(frozen=True)
class Redirect:
    """Manual redirection: forward the caller to ``number``."""

    menu_id: str
    number: str


@dataclass(frozen=True)
class Deflect:
    menu_id: str
    deflection: Deflection               # VOICEMAIL, MESSAGE or SCHEDULED_CALL
    reason: VoicemailReason              # AFTER_HOURS, MANUAL_REDIRECTION, NO_AGENT_AVAILABLE
    message: str = ""
    max_record_seconds: float = 120.0
    callback_seconds: float = 900.0


def options_text(menus: dict[str, MenuNode], node: MenuNode) -> str:
    return " ".join(f"For {menus[child].name}, press {key}." for child, key in zip(node.children, node.keys))


class MenuWalk:
    def __init__(self, setup: WalkSetup):
        self.setup = setup
        self.menu_id = setup.root_id
        self.rounds = 0
        self.hops = 0
        self.seq = 0
        self.prompt_id: str | None = None
        self.then: str = ""      # after the prompt: "input", "leaf", "bye"
        self.done = False

    @property
    def is_finished(self) -> bool:
        return self.done

    def handle(self, event, now: float) -> list:
        if self.done:
            return []
        if isinstance(event, Started):
            return [UpdateCall(status=CallStatus.SELECTING)] + self._enter(self.setup.root_id, now)
        if isinstance(event, DigitPressed):
            return self._digit(event.digit, now)
        if isinstance(event, PlaybackFinished):
            return self._said(event.playback_id, now)
        if isinstance(event, TimerFired):
            if event.timer_id == INPUT and self.then == "input" and self.prompt_id is None:
                return self._again(now, "")
            return []
        raise IllegalEvent(f"the menu walk does not expect {event!r}")

    def hung_up(self, now: float) -> list:
        """The caller left during the walk."""
        if self.then == "bye":   # the call already ended (no valid key): only the goodbye is cut short
            self.done = True
            return [CancelTimer(INPUT)]
        self.done = True
        out = [CancelTimer(INPUT)]
        return out + [UpdateCall(status=CallStatus.FAILED, fail_reason=FailReason.END_USER_HUNG_UP,
                                 fail_details="The caller hung up while choosing in the menu",
                                 disconnected_by=DisconnectedBy.END_USER, ended_at=now)]

    # -- steps ------------------------------------------------------------------------------

    def _say(self, text: str, then: str, interrupt: str = "") -> list:
        self.seq += 1
        self.prompt_id = f"{self.setup.call_id}-menu-{self.seq}"
        self.then = then
        return [Play(CALLER, self.prompt_id, text, interrupt_digits=interrupt)]

    def _enter(self, menu_id: str, now: float) -> list:
        menus = self.setup.menus
        node = menus.get(menu_id)
        if node is None:   # the tree the store gave has a dangling id: a bug, not the caller's fault
            return self._end_unavailable(now, f"Menu {menu_id} is missing from the call's tree")
        self.menu_id = menu_id
        self.rounds = 0
        out: list = [UpdateCall(menu_id=menu_id)]
        if node.state is MenuState.AFTER_HOURS:
            return out + self._finish(Deflect(menu_id, node.after_hours, VoicemailReason.AFTER_HOURS,
                                              node.deflection_message, node.voicemail_seconds, node.callback_seconds))
        if node.state is MenuState.MANUAL_REDIRECTION:
            if node.redirection_menu and self.hops < MAX_HOPS and node.redirection_menu in menus:
                self.hops += 1
                return out + self._enter(node.redirection_menu, now)
            if node.redirection_number:
                return out + self._finish(Redirect(menu_id, node.redirection_number))
            return out + self._finish(Deflect(menu_id, Deflection.MESSAGE, VoicemailReason.MANUAL_REDIRECTION,
                                              node.deflection_message or UNAVAILABLE_TEXT))
        if node.is_leaf:
            if node.message:
                return out + self._say(node.message, "leaf")
            return out + self._leaf(node)
        return out + self._menu_prompt(node)

    def _menu_prompt(self, node: MenuNode, prefix: str = "") -> list:
        text = " ".join(t for t in (prefix, node.message, options_text(self.setup.menus, node)) if t)
        return [CancelTimer(INPUT)] + self._say(text, "input", interrupt="".join(node.keys))

    def _leaf(self, node: MenuNode) -> list:
        if node.policy_id:
            return self._finish(HandToPolicy(node.id, node.policy_id))
        return self._finish(EnterQueue(node.id))

    def _finish(self, outcome) -> list:
        self.done = True
        return [CancelTimer(INPUT), outcome]

    def _digit(self, digit: str, now: float) -> list:
        node = self.setup.menus[self.menu_id]
        if self.then != "input":
            return []   # keys pressed during a leaf's message or the goodbye change nothing
        out: list = []
        if self.prompt_id is not None:
            out.append(StopPlayback(self.prompt_id))
            self.prompt_id = None
        if digit in node.keys:
            child = node.children[node.keys.index(digit)]
            return out + [CancelTimer(INPUT)] + self._enter(child, now)
        return out + self._again(now, INVALID_TEXT)

    def _again(self, now: float, prefix: str) -> list:
        node = self.setup.menus[self.menu_id]
        self.rounds += 1
        if self.rounds >= MAX_ROUNDS:
            return [CancelTimer(INPUT), UpdateCall(status=CallStatus.FAILED, fail_reason=FailReason.END_USER_NO_SELECTION,
                                                   fail_details=f"No valid key in menu {node.name!r} after "
                                                                f"{MAX_ROUNDS} tries",
                                                   disconnected_by=DisconnectedBy.SYSTEM, ended_at=now)] + \
                self._say(NO_SELECTION_TEXT, "bye")
        return self._menu_prompt(node, prefix)

    def _said(self, playback_id: str, now: float) -> list:
        if playback_id != self.prompt_id:
            return []
        self.prompt_id = None
        if self.then == "input":
            return [StartTimer(INPUT, now + self.setup.input_seconds)]
        if self.then == "leaf":
            return self._leaf(self.setup.menus[self.menu_id])
        if self.then == "bye":
            self.done = True
            return [HangupCaller()]
        return []

    def _end_unavailable(self, now: float, detail: str) -> list:
        return [UpdateCall(status=CallStatus.FAILED, fail_reason=FailReason.SYSTEM_ERROR, fail_details=detail,
                           disconnected_by=DisconnectedBy.SYSTEM, ended_at=now)] + self._say(UNAVAILABLE_TEXT, "bye")
