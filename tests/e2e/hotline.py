"""Running Hotline's call controller against the lab Asterisk, and building policies for it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from ivr.main import CONTROLLER, build_app
from ivr.shells.ari import Controller
from ivr.store import models as m
from tests.sip.parties import Phone

_numbers = iter(range(10**6))


def routing_number() -> str:
    """A fresh, valid routing number for each policy of the session (+1 212 2xx xxxx)."""
    n = next(_numbers) + (int(time.time()) % 100) * 10000
    return f"+1212{200 + n // 10000 % 800:03d}{n % 10000:04d}"


@dataclass
class Target:
    """Who a rule rings: users (one per phone), or a team of them."""

    phones: list[Phone]
    team: bool = False
    schedule: bool = False  # an on-call schedule rotating through the phones' users, the first on call now
    escalate_after: int = 2


@dataclass
class Scenario:
    policy: m.IncomingCallPolicy
    users: dict[int, m.User] = field(default_factory=dict)  # by phone port
    rules: list[m.IncomingCallPolicyEscalationRule] = field(default_factory=list)

    @property
    def number(self) -> str:
        return self.policy.routingPhoneNumber

    def user_of(self, phone: Phone) -> m.User:
        return self.users[phone.port]


class Hotline:
    """The controller of one test, on the session's database."""

    def __init__(self, config, db):
        self.config = config
        self.db = db
        self.runner: web.AppRunner | None = None

    @property
    def controller(self) -> Controller:
        return self.runner.app[CONTROLLER]

    async def start(self) -> None:
        # What `hotline serve --controller-only` runs (the ARI controller and the dialplan services).
        app = build_app(self.config, db=self.db, api=False)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await asyncio.wait_for(self.controller.ari.connected.wait(), 10)
        # Let the first reconciliation run before calls arrive.
        await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def policy(self, *rules: Target, name: str | None = None, enabled: bool = True, repeat: int = 0,
                     confirm: bool = True, greeting: str = "", no_answer: str = "Nobody answered.",
                     no_one: str = "Nobody is on call.", **policy_fields) -> Scenario:
        """A project with one user per phone (a verified SIP URI each) and a policy ringing them;
        ``policy_fields``: more columns of the policy (business hours, caller lists, ...)."""

        def build() -> Scenario:
            project = m.Project.create(name="e2e")
            policy = m.IncomingCallPolicy.create(
                project=project, name=name or f"Ops {uuid.uuid4().hex[:6]}", slug=f"e2e-{uuid.uuid4().hex}",
                routingPhoneNumber=routing_number(), isEnabled=enabled, greetingMessage=greeting,
                noAnswerMessage=no_answer, noOneAvailableMessage=no_one,
                repeatPolicyIfNoOneAnswers=repeat > 0, repeatPolicyIfNoOneAnswersTimes=repeat,
                requireAnswerConfirmation=confirm, **policy_fields)
            scenario = Scenario(policy)
            for order, target in enumerate(rules, start=1):
                users = []
                for phone in target.phones:
                    user = scenario.users.get(phone.port)
                    if user is None:
                        user = m.User.create(project=project, name=f"User {phone.port}")
                        m.UserIncomingCallNumber.create(project=project, user=user, sipUri=phone.uri(),
                                                        isVerified=True)
                        scenario.users[phone.port] = user
                    users.append(user)
                kwargs = {}
                if target.team:
                    team = m.Team.create(project=project, name=f"Team {order}")
                    for user in users:
                        m.TeamMember.create(project=project, team=team, user=user)
                    kwargs["team"] = team
                elif target.schedule:
                    schedule = m.OnCallDutyPolicySchedule.create(project=project, name=f"Schedule {order}",
                                                                 timeZone="Europe/Paris")
                    layer = m.OnCallDutyPolicyScheduleLayer.create(
                        project=project, onCallDutyPolicySchedule=schedule, order=1,
                        startsAt=m.utcnow() - dt.timedelta(hours=1), rotationInterval="Day", rotationIntervalCount=1)
                    for position, user in enumerate(users, start=1):
                        m.OnCallDutyPolicyScheduleLayerUser.create(
                            project=project, onCallDutyPolicyScheduleLayer=layer, user=user, order=position)
                    kwargs["onCallDutyPolicySchedule"] = schedule
                elif users:
                    kwargs["user"] = users[0]
                scenario.rules.append(m.IncomingCallPolicyEscalationRule.create(
                    project=project, incomingCallPolicy=policy, order=order, name=f"Rule {order}",
                    escalateAfterSeconds=target.escalate_after, **kwargs))
            return scenario

        return await self.db.run(build)

    async def logs_of(self, scenario: Scenario) -> list[m.IncomingCallLog]:
        return await self.db.list(m.IncomingCallLog.select().where(
            m.IncomingCallLog.incomingCallPolicyId == scenario.policy.id).order_by(m.IncomingCallLog.createdAt))

    async def items_of(self, log: m.IncomingCallLog) -> list[m.IncomingCallLogItem]:
        return await self.db.list(m.IncomingCallLogItem.select().where(
            m.IncomingCallLogItem.incomingCallLog == log.id).order_by(
            m.IncomingCallLogItem.startedAt, m.IncomingCallLogItem.id))

    async def final_log(self, scenario: Scenario, timeout: float = 20.0, count: int = 1) -> m.IncomingCallLog:
        """The call's log once it reached a terminal status and every item is closed."""
        deadline = time.monotonic() + timeout
        while True:
            logs = await self.logs_of(scenario)
            if len(logs) >= count and all(log.status in m.TERMINAL_STATUSES for log in logs):
                items = [item for log in logs for item in await self.items_of(log)]
                if all(item.status in m.TERMINAL_STATUSES for item in items) and not self._busy(logs):
                    return logs[-1] if count == 1 else logs
            if time.monotonic() > deadline:
                states = [(log.status, log.statusMessage) for log in logs]
                raise AssertionError(f"the call did not end within {timeout} s: {states}")
            await asyncio.sleep(0.1)

    def _busy(self, logs) -> bool:
        # The actor of a finished call flushes its writes before it leaves.
        channels = {log.callProviderCallId for log in logs}
        return any(actor.caller_channel in channels for actor in self.controller.actors)

    async def log_status(self, scenario: Scenario, status: str, timeout: float = 10.0) -> m.IncomingCallLog:
        deadline = time.monotonic() + timeout
        while True:
            logs = await self.logs_of(scenario)
            if logs and logs[-1].status == status:
                return logs[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"log never reached {status}: {[(l.status, l.statusMessage) for l in logs]}")
            await asyncio.sleep(0.05)
