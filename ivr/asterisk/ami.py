"""The Asterisk Manager Interface (AMI) through panoramisk, with its known defects wrapped.

Hotline uses AMI for outbound notification calls (``Originate``), the hang-up causes of those
calls, and health. panoramisk 1.4 (the released version) has defects that matter here
(DESIGN.md): ``send_action`` has no timeout, a failed login raises nothing, and after a
reconnect it re-sends every action that had no answer (an ``Originate`` could ring someone
twice). So :class:`AmiClient` keeps panoramisk's ``Manager`` for what it does well (framing and
parsing in ``AMIProtocol``/``Message``, action ids, event dispatch) and owns the rest:

* one supervisor task (:meth:`AmiClient.run`) connects, logs in (a refused login is an error,
  logged as such, retried slowly), pings every ``ping_interval`` (a Ping without an answer
  closes the connection) and reconnects with back-off; a fresh ``Manager`` per connection, so
  nothing of a lost connection is ever re-sent;
* every action is bounded by ``asyncio.timeout`` and fails with :class:`AmiUnavailable` when
  the connection is not there, times out, or is lost before the answer;
* ``Originate`` is asynchronous and tracked by its ActionID: :meth:`AmiClient.originate`
  returns once Asterisk queued it, with a future for its ``OriginateResponse``. If the
  connection drops before that response, the future fails with :class:`AmiConnectionLost`:
  the caller decides what the truth is; the Originate is never sent again.

Events are fanned out to listeners (plain functions, called on the event loop) as panoramisk
``Message`` objects.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

log = logging.getLogger(__name__)

#: OriginateResponse ``Reason`` values (Asterisk's AST_CONTROL_* of the last state seen).
REASON_FAILED = 0        # the channel could not be created or dialed
REASON_HANGUP = 1        # hung up / rejected before answering
REASON_RINGING = 3       # still ringing when the originate timeout expired: not answered
REASON_ANSWERED = 4
REASON_BUSY = 5
REASON_CONGESTION = 8

class AmiError(Exception):
    """An action Asterisk answered with an error (``Response: Error``)."""


class AmiUnavailable(AmiError):
    """AMI is not connected, did not answer in time, or the connection was lost."""


class AmiTimeout(AmiUnavailable):
    """Asterisk did not answer in time: the action may or may not have been carried out."""


class AmiConnectionLost(AmiUnavailable):
    """The connection dropped before the answer; the action was *not* sent again."""


class AmiLoginFailed(AmiError):
    """Asterisk refused the credentials."""


@dataclass
class Originate:
    """A queued Originate: ``response`` resolves with its OriginateResponse event."""

    action_id: str
    channel_id: str
    response: asyncio.Future = field(repr=False)


class _Manager(Manager):
    """panoramisk's Manager, minus the connection handling the client owns.

    ``AMIProtocol`` calls ``factory.connection_lost`` and ``factory.dispatch``; panoramisk
    would schedule its own reconnection there and, on the next FullyBooted, re-send the
    actions left unanswered. Both are replaced: the loss is reported to the client, and the
    unanswered actions are dropped (their futures failed by the client).
    """

    def __init__(self, client: "AmiClient", **config):
        self._client = client
        super().__init__(**config)

    def connection_lost(self, exc) -> None:  # called by AMIProtocol
        self._client._connection_lost(self, exc)

    async def send_awaiting_actions(self, *_):  # registered on FullyBooted by Manager.__init__
        self.awaiting_actions.clear()

    def connect(self, *args, **kwargs):  # pragma: no cover - a programming error
        raise RuntimeError("AmiClient connects; Manager.connect would reconnect and re-send on its own")


class AmiClient:
    def __init__(self, host: str, port: int, username: str, secret: str, *, action_timeout: float = 5.0,
                 connect_timeout: float = 5.0, ping_interval: float = 10.0, reconnect_max_delay: float = 10.0,
                 events: str = "on"):
        self.host = host
        self.port = int(port)
        self.username = username
        self.secret = secret
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.reconnect_max_delay = reconnect_max_delay
        self.events = events
        self.connected = asyncio.Event()
        self.manager: _Manager | None = None
        self.last_error: str | None = None
        self.connections = 0           # successful logins so far (tests, health)
        self._listeners: list[Callable[[Message], None]] = []
        self._on_connect: list[Callable[[], None]] = []
        self._on_disconnect: list[Callable[[], None]] = []
        self._inflight: dict[str, Action] = {}
        self._originates: dict[str, Originate] = {}
        self._lost: asyncio.Event | None = None
        self._transport = None

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, fn: Callable[[Message], None]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Message], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def on_connect(self, fn: Callable[[], None]) -> None:
        self._on_connect.append(fn)

    def on_disconnect(self, fn: Callable[[], None]) -> None:
        self._on_disconnect.append(fn)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the connection ----------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled: connect, log in, ping, reconnect with back-off."""
        delay = 0.2
        while True:
            try:
                await self._session()
                delay = 0.2
                log.warning("the AMI connection to %s was lost; reconnecting", self.address)
            except AmiLoginFailed as exc:
                self.last_error = f"login refused: {exc}"
                log.error("AMI at %s refused the login of user %r (%s): check ami.username/ami.secret "
                          "(HOTLINE_AMI_SECRET) against manager.conf", self.address, self.username, exc)
                delay = max(delay, 5.0)
            except (OSError, asyncio.TimeoutError, AmiUnavailable) as exc:
                self.last_error = f"cannot connect: {exc or type(exc).__name__}"
                log.warning("cannot reach AMI at %s (%s); retrying in %.1f s", self.address,
                            exc or type(exc).__name__, delay)
            except Exception as exc:  # noqa: BLE001 - a bug must not end the supervisor
                self.last_error = f"internal error: {exc!r}"
                log.exception("the AMI connection to %s failed inside Hotline; reconnecting", self.address)
            finally:
                self._close_transport()
            await asyncio.sleep(delay + random.uniform(0, delay / 4))
            delay = min(delay * 2, self.reconnect_max_delay)

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        manager = _Manager(self, host=self.host, port=self.port, username=self.username, secret=self.secret,
                           events=self.events, loop=loop, log=log, forgetable_actions=("ping", "login", "originate"))
        manager.register_event("*", self._dispatch)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that lands
        # as the inner await completes, and this supervisor would then never stop.
        async with asyncio.timeout(self.connect_timeout):
            transport, protocol = await loop.create_connection(AMIProtocol, self.host, self.port)
        self._transport = transport
        # What Manager.connection_made does, without its login callback (which ignores a
        # refusal) and its pinger (which never notices a dead connection).
        protocol.queue = deque()
        protocol.factory = manager
        protocol.log = log
        protocol.config = manager.config
        protocol.encoding = manager.encoding = manager.config["encoding"]
        manager.responses = protocol.responses = {}
        manager.protocol = protocol
        self.manager = manager
        self._lost = asyncio.Event()
        login = Action({"Action": "Login", "Username": self.username, "Secret": self.secret,
                        "Events": self.events})
        response = await self._send(manager, login, self.action_timeout)
        if not response.success:
            raise AmiLoginFailed(response.message or response.response or "refused")
        self.connections += 1
        self.last_error = None
        self.connected.set()
        log.info("connected to AMI at %s as %s", self.address, self.username)
        self._notify(self._on_connect)
        try:
            while not self._lost.is_set():
                try:
                    async with asyncio.timeout(self.ping_interval):
                        await self._lost.wait()
                except TimeoutError:
                    try:
                        await self._send(manager, Action({"Action": "Ping"}), self.action_timeout)
                    except AmiUnavailable:
                        if not self._lost.is_set():
                            log.warning("AMI at %s did not answer a Ping within %.0f s; reconnecting",
                                        self.address, self.action_timeout)
                        return
        finally:
            self.connected.clear()
            if self.manager is manager:
                self.manager = None
            self._fail_pending("the AMI connection was lost")
            self._notify(self._on_disconnect)

    def _connection_lost(self, manager: _Manager, exc) -> None:
        if manager is not self.manager:
            return
        self.connected.clear()
        self._fail_pending("the AMI connection was lost")
        if self._lost is not None:
            self._lost.set()

    def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _fail_pending(self, why: str) -> None:
        for action in list(self._inflight.values()):
            if not action.future.done():
                action.future.set_exception(AmiConnectionLost(why))
                action.future.exception()  # its waiter may be gone: no "exception never retrieved"
        self._inflight.clear()
        for originate in list(self._originates.values()):
            if not originate.response.done():
                originate.response.set_exception(AmiConnectionLost(
                    f"{why} before Asterisk reported the call's outcome (OriginateResponse)"))
                originate.response.exception()
        self._originates.clear()

    def _notify(self, callbacks) -> None:
        for fn in list(callbacks):
            try:
                fn()
            except Exception:  # noqa: BLE001 - a listener's bug must not break the connection
                log.exception("AMI connection callback failed")

    def _dispatch(self, manager, event: Message) -> None:
        if event.event == "OriginateResponse":
            originate = self._originates.pop(event.actionid, None)
            if originate is not None and not originate.response.done():
                originate.response.set_result(event)
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # noqa: BLE001
                log.exception("AMI event listener failed on %s", event.event)

    async def close(self) -> None:
        self._close_transport()
        self.connected.clear()
        self._fail_pending("Hotline is stopping")

    # -- actions -----------------------------------------------------------------------

    async def _send(self, manager: _Manager, action: Action, timeout: float) -> Message:
        if manager.protocol is None or getattr(manager.protocol, "closed", True):
            raise AmiUnavailable("not connected to AMI")
        self._inflight[action.id] = action
        try:
            future = manager.protocol.send(action, as_list=False)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise AmiTimeout(f"AMI did not answer {action['Action']} within {timeout:g} s") from None
        finally:
            self._inflight.pop(action.id, None)
            if not action.future.done():
                action.future.cancel()
                if manager.protocol is not None:
                    manager.protocol.responses.pop(action.id, None)

    async def send(self, fields: dict[str, Any], timeout: float | None = None) -> Message:
        """Send one action and return its (first) response; raises AmiError on ``Response: Error``."""
        manager = self.manager
        if manager is None or not self.connected.is_set():
            raise AmiUnavailable(f"not connected to AMI at {self.address}")
        response = await self._send(manager, Action(dict(fields)), timeout or self.action_timeout)
        if response.response == "Error":
            raise AmiError(response.message or "error")
        return response

    async def send_list(self, fields: dict[str, Any], complete_event: str, timeout: float | None = None
                        ) -> list[Message]:
        """An action answered by a list of events ending with ``complete_event``."""
        manager = self.manager
        if manager is None or not self.connected.is_set():
            raise AmiUnavailable(f"not connected to AMI at {self.address}")
        action = Action(dict(fields))
        self._inflight[action.id] = action
        try:
            # as_list None: panoramisk waits for the list only when Asterisk announces one
            # ("EventList: start"); an error answer ends the action at once.
            future = manager.protocol.send(action, as_list=None)
            async with asyncio.timeout(timeout or self.action_timeout):
                messages = await asyncio.shield(future)
        except TimeoutError:
            raise AmiUnavailable(f"AMI did not answer {fields.get('Action')} within "
                                 f"{timeout or self.action_timeout:g} s") from None
        finally:
            self._inflight.pop(action.id, None)
            manager.protocol.responses.pop(action.id, None)
            if not action.future.done():
                action.future.cancel()
        if isinstance(messages, Message):
            messages = [messages]
        if messages and messages[0].response == "Error":
            raise AmiError(messages[0].message or "error")
        return [m for m in messages if m.event and m.event != complete_event]

    async def originate(self, *, channel: str, context: str, exten: str = "s", priority: int = 1,
                        timeout: float, caller_id: str | None = None, variables: dict[str, str] | None = None,
                        channel_id: str | None = None) -> Originate:
        """Queue an asynchronous Originate; returns once Asterisk accepted it.

        ``timeout`` is how long the channel rings (seconds). The returned handle's ``response``
        resolves with the OriginateResponse event, or fails with AmiConnectionLost.
        """
        manager = self.manager
        if manager is None or not self.connected.is_set():
            raise AmiUnavailable(f"not connected to AMI at {self.address}")
        channel_id = channel_id or str(uuid.uuid4())
        fields: dict[str, Any] = {
            "Action": "Originate", "Channel": channel, "Context": context, "Exten": exten,
            "Priority": str(priority), "Timeout": str(int(timeout * 1000)), "Async": "true",
            "ChannelId": channel_id,
        }
        if caller_id:
            fields["CallerID"] = caller_id
        if variables:
            fields["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        action = Action(fields)
        originate = Originate(action.id, channel_id, asyncio.get_running_loop().create_future())
        self._originates[action.id] = originate
        try:
            response = await self._send(manager, action, self.action_timeout)
        except BaseException:
            self._originates.pop(action.id, None)
            originate.response.cancel()
            raise
        if response.response == "Error":
            self._originates.pop(action.id, None)
            originate.response.cancel()
            raise AmiError(response.message or "Originate refused")
        return originate
