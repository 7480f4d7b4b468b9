"""Configuration as code: ``hotline sync FILE.yaml [--dry-run]`` on a temporary SQLite database.

Applied twice, the second run changes nothing; a dry run lists the changes and makes none; a file
with a problem is reported with its file and line, and nothing of it is applied.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import pytest

from api import sync
from ivr.store import models as m
from ivr.store import schedules
from ivr.store.db import migrate, run_sync

ACME = textwrap.dedent("""\
    project: Acme
    users:
      - email: Alice@Example.com
        name: Alice
        timeZone: America/New_York
        numbers:
          - "+1 415 555 0101"
          - sip: sip:alice@10.0.0.5:5060
            verified: false
      - email: bob@example.com
        name: Bob
        numbers: ["+1 415 555 0102"]
      - email: carol@example.com
        name: Carol
    teams:
      - name: Database
        description: The DBAs
        members: [alice@example.com, bob@example.com]
    schedules:
      - name: Primary
        timeZone: America/New_York
        layers:
          - name: 24x7
            start: 2024-03-04T09:00
            rotation: 1 week
            handoffTime: "09:00"
            users: [alice@example.com, bob@example.com]
          - name: Business hours
            start: 2024-03-04T09:00
            rotation: 1 day
            restrictions:
              - daily: 09:00-17:00
                days: [Mon, Tue, Wed, Thu, Fri]
            users: [carol@example.com]
        overrides:
          - user: carol@example.com
            start: 2024-03-06T00:00
            end: 2024-03-07T00:00
            description: Alice is sick
    policies:
      - name: Database on-call
        slug: db-on-call
        routingPhoneNumber: "+1 415 555 0100"
        greetingMessage: Please hold.
        rules:
          - schedule: Primary
            escalateAfterSeconds: 20
          - team: Database
          - user: carol@example.com
    """)


@pytest.fixture
def url(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'hotline.db'}"
    run_sync(database_url, migrate)
    return database_url


def apply(url: str, text: str, **kwargs) -> sync.Result:
    async def go(db):
        return await db.run(sync.apply, text, "acme.yaml", **kwargs)
    return run_sync(url, go)


def read(url: str, fn, *args):
    async def go(db):
        return await db.run(fn, *args)
    return run_sync(url, go)


def counts() -> dict[str, int]:
    return {model.__name__: model.select().count() for model in m.MODELS}


def state() -> dict:
    """The synced project, read back through the models."""
    project = m.Project.get(m.Project.name == "Acme")
    users = {u.email: u for u in m.User.select().where(m.User.project == project.id)}
    emails = {u.id: email for email, u in users.items()}
    Number, Rule = m.UserIncomingCallNumber, m.IncomingCallPolicyEscalationRule
    numbers = sorted((emails[n.userId], n.phoneNumber or n.sipUri, n.isVerified) for n in Number.select())
    team = m.Team.get(m.Team.name == "Database")
    members = sorted(emails[t.userId] for t in m.TeamMember.select().where(m.TeamMember.team == team.id))
    policy = m.IncomingCallPolicy.get(m.IncomingCallPolicy.slug == "db-on-call")
    rules = [(r.order, r.escalateAfterSeconds, emails.get(r.userId), r.teamId == team.id,
              r.onCallDutyPolicyScheduleId is not None)
             for r in Rule.select().where(Rule.incomingCallPolicy == policy.id).order_by(Rule.order)]
    schedule = m.OnCallDutyPolicySchedule.get(m.OnCallDutyPolicySchedule.name == "Primary")
    loaded = schedules.load_schedule(schedule.id)
    layers = [(layer.name, [emails[m.uuid.UUID(u)] for u in layer.users], layer.interval.value, layer.handoff,
               len(layer.restrictions)) for layer in loaded.layers]

    def who(at):
        return emails.get(m.uuid.UUID(x)) if (x := schedules.oncall.who_is_on_call(loaded, at).user) else None

    return {"users": {e: (u.name, u.timeZone) for e, u in users.items()}, "numbers": numbers, "members": members,
            "policy": (policy.name, policy.routingPhoneNumber, policy.greetingMessage), "rules": rules,
            "layers": layers, "overrides": len(loaded.overrides),
            "on call": [who(dt.datetime.fromisoformat(t)) for t in
                        ("2024-03-05T15:00:00+00:00", "2024-03-05T23:00:00+00:00", "2024-03-06T15:00:00+00:00",
                         "2024-03-12T02:00:00+00:00")]}


def test_sync_applied_twice_changes_nothing_the_second_time(url):
    dry = apply(url, ACME, dry_run=True)
    assert not dry.applied and "+ project Acme" in dry.changes and len(dry.changes) == 18
    assert read(url, counts)["User"] == 0  # a dry run changes nothing
    first = apply(url, ACME)
    assert first.changes == dry.changes
    before = read(url, counts)
    snapshot = read(url, state)
    assert apply(url, ACME).changes == []
    assert apply(url, ACME, dry_run=True).changes == []
    assert read(url, counts) == before and read(url, state) == snapshot
    assert snapshot == {
        "users": {"alice@example.com": ("Alice", "America/New_York"), "bob@example.com": ("Bob", "UTC"),
                  "carol@example.com": ("Carol", "UTC")},
        "numbers": [("alice@example.com", "+14155550101", True),
                    ("alice@example.com", "sip:alice@10.0.0.5:5060", False),
                    ("bob@example.com", "+14155550102", True)],
        "members": ["alice@example.com", "bob@example.com"],
        "policy": ("Database on-call", "+14155550100", "Please hold."),
        "rules": [(1, 20, None, False, True), (2, 30, None, True, False), (3, 30, "carol@example.com", False, False)],
        "layers": [("24x7", ["alice@example.com", "bob@example.com"], "Week", dt.time(9), 0),
                   ("Business hours", ["carol@example.com"], "Day", None, 1)],
        "overrides": 1,
        "on call": ["carol@example.com", "alice@example.com", "carol@example.com", "bob@example.com"],
    }
    # The unverified number got a code, as through the API.
    assert read(url, lambda: m.UserIncomingCallNumberVerification.select().count()) == 1


def test_changes_are_listed_and_lists_in_the_file_are_the_whole_truth(url):
    apply(url, ACME)
    edited = (ACME
              .replace("members: [alice@example.com, bob@example.com]", "members: [bob@example.com]")
              .replace("rotation: 1 week", "rotation: 2 weeks")
              .replace("    overrides:\n      - user: carol@example.com\n        start: 2024-03-06T00:00\n"
                       "        end: 2024-03-07T00:00\n        description: Alice is sick\n", "    overrides: []\n")
              .replace("      - team: Database\n", "")
              .replace("name: Bob\n", "name: Robert\n"))
    assert edited.count("\n") == ACME.count("\n") - 5
    result = apply(url, edited)
    assert result.changes == [
        "~ user bob@example.com: name 'Bob' -> 'Robert'",
        "- team Database: member alice@example.com",
        "~ schedule Primary: layer 1: rotationIntervalCount 1 -> 2",
        "- schedule Primary: override 2024-03-06T05:00:00.000Z - 2024-03-07T05:00:00.000Z",
        "~ policy db-on-call: rule 2: target team Database -> user carol@example.com",
        "- policy db-on-call: rule 3",
    ]
    assert apply(url, edited).changes == []
    rules = read(url, state)["rules"]
    assert rules == [(1, 20, None, False, True), (2, 30, "carol@example.com", False, False)]
    # Absent keys leave things alone: a file naming only the project and one user changes nothing.
    assert apply(url, "project: Acme\nusers:\n  - email: carol@example.com\n").changes == []


def test_problems_name_file_and_line_and_nothing_is_applied(url):
    bad = ACME.replace("members: [alice@example.com, bob@example.com]",
                       "members: [alice@example.com, nobody@example.com]") \
              .replace("- schedule: Primary", "- schedule: Secondary") \
              .replace("rotation: 1 day", "rotation: 1 fortnight") \
              .replace('handoffTime: "09:00"', 'handoffTime: "9h"')
    with pytest.raises(sync.SyncError) as info:
        apply(url, bad + "extra: true\n")
    lines = bad.splitlines()

    def line_of(text):
        return next(i for i, line in enumerate(lines, 1) if text in line)

    assert info.value.problems == [
        f"acme.yaml:{len(lines) + 1}: unknown key 'extra' (keys: project, users, teams, schedules, policies, "
        "outboundNumbers, menus)",
        f"acme.yaml:{line_of('members:')}: team Database: members: no user with email 'nobody@example.com' "
        "(neither in this file nor in the project)",
        f"acme.yaml:{line_of('handoffTime')}: schedule Primary: layer 1: handoffTime: '9h' is not a time of day "
        "like 09:00 (24-hour HH:MM)",
        f"acme.yaml:{line_of('fortnight')}: schedule Primary: layer 2: rotation must be like \"1 week\", "
        "\"2 days\" or \"12 hours\" (1 to 1000), not '1 fortnight'",
        f"acme.yaml:{line_of('Secondary')}: policy db-on-call: rule 1: no schedule named 'Secondary' "
        "(neither in this file nor in the project)",
    ]
    assert read(url, counts) == {name: 0 for name in read(url, counts)}  # not even the project


@pytest.mark.parametrize(("text", "problem"), [
    ("users: [\n", "acme.yaml:2: invalid YAML: expected"),
    ("project: Acme\nproject: Other\n", "acme.yaml:2: invalid YAML: duplicate key 'project'"),
    ("- a\n", "acme.yaml:1: the file must be a mapping"),
    ("users:\n  - name: X\n", "acme.yaml:1: the project is missing"),
    ("project: Acme\nusers:\n  - name: X\n", "acme.yaml:3: user: missing email"),
    ("project: Acme\nusers: {}\n", "acme.yaml:2: the file: users must be a list"),
    ("project: Acme\nusers:\n  - email: x@example.com\n    name: X\n    numbers: ['555']\n",
     "acme.yaml:5: a number of x@example.com: "),
    ("project: Acme\npolicies:\n  - name: P\n    routingPhoneNumber: '+1 415 555 0100'\n    rules:\n"
     "      - user: x@example.com\n        team: T\n", "acme.yaml:6: policy P: rule 1: give exactly one target"),
    ("project: Acme\npolicies:\n  - name: P\n    greetingMessage: null\n",
     "acme.yaml:3: data.greetingMessage: must not be null"),
])
def test_each_problem_says_where(url, text, problem):
    with pytest.raises(sync.SyncError) as info:
        apply(url, text)
    assert info.value.problems[0].startswith(problem), info.value.problems


def test_the_cli(tmp_path):
    env = {**os.environ, "HOTLINE_GENERAL_DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)
    env.pop("HOTLINE_CONFIG", None)
    path = tmp_path / "acme.yaml"
    path.write_text(ACME)

    def hotline(*args):
        return subprocess.run([sys.executable, "-m", "ivr.main", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    assert hotline("migrate").returncode == 0
    dry = hotline("sync", str(path), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.endswith("dry run: 18 change(s) would be made (nothing was changed)\n")
    assert hotline("sync", str(path)).stdout.splitlines()[-1].startswith("applied 18 change(s) to project ")
    assert hotline("sync", str(path)).stdout == "no changes: the project matches the file\n"
    oncall = hotline("oncall", "Primary", "--at", "2024-03-05T15:00:00Z", "--next", "2")
    assert oncall.returncode == 0, oncall.stderr
    assert oncall.stdout.splitlines() == [
        "Primary (America/New_York), at 2024-03-05 10:00 EST (2024-03-05T15:00:00Z):",
        "  on call: Carol <carol@example.com>  (layer 'Business hours'), until 2024-03-05 17:00 EST",
        "Next hand-offs:",
        "  2024-03-05 17:00 EST  Alice <alice@example.com>  (layer '24x7')",
        "  2024-03-06 00:00 EST  Carol <carol@example.com>  (override 'Alice is sick')"]
    code = hotline("number", "code", "sip:alice@10.0.0.5:5060")
    assert code.returncode == 0 and code.stdout.strip().isdigit() and len(code.stdout.strip()) == 6
    verified = hotline("number", "code", "+1 415 555 0101")
    assert verified.returncode == 1 and "already verified" in verified.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("project: Acme\nteams:\n  - name: X\n    members: [ghost@example.com]\n")
    failed = hotline("sync", str(broken))
    assert failed.returncode == 1 and f"{broken}:4: team X: members: no user with email" in failed.stderr


# -- the contact center: agents, outbound numbers, menus ------------------------------------------------

CONTACT_CENTER = (ACME
                  .replace("    name: Alice\n", "    name: Alice\n    agent: true\n")
                  .replace("    name: Bob\n", "    name: Bob\n    agent:\n      number: 1002\n"
                                             "      canMakeOutboundCalls: false\n"
                                             "      availability: Unavailable\n")
                  + textwrap.dedent("""\
    outboundNumbers:
      - number: "+1 415 555 0190"
        name: Sales US
        default: true
      - "+44 20 7946 0958"
    menus:
      - name: Main
        type: ivr_menu
        message: Welcome to Acme.
        languages: [en, fr]
        timeZone: Europe/Paris
        openingHours:
          - daily: 08:00-20:00
            days: [Mon, Tue, Wed, Thu, Fri]
        routingNumber: "+1 415 555 0150"
        outboundNumber: "+1 415 555 0190"
        children:
          - name: Sales
            offer: cascade
            groupDelaySeconds: 15
            recording: ask
            maxWaitSeconds: 90
            noAgent: message
            deflectionMessage: Sales is busy.
            queue:
              - alice@example.com
              - agent: bob@example.com
                group: 2
          - name: Database emergencies
            policy: db-on-call
    """))


def cc_state() -> dict:
    project = m.Project.get(m.Project.name == "Acme")
    users = {u.email: (u.isAgent, u.agentNumber, u.canMakeOutboundCalls, u.agentAvailability)
             for u in m.User.select().where(m.User.project == project.id)}
    numbers = sorted((n.phoneNumber, n.name, n.isDefault) for n in m.OutboundPhoneNumber.select())
    M, A = m.CallMenu, m.CallMenuAgent
    emails = {u.id: u.email for u in m.User.select()}
    menus = {}
    for row in M.select().order_by(M.position):
        parent = M.get_by_id(row.parentId).name if row.parentId else None
        menus[row.name] = (parent, row.position, row.menuType, row.languages, row.routingPhoneNumber,
                           len(row.openingHours), row.offerType, row.cascadeGroupDelaySeconds, row.recordingOption,
                           row.incomingCallPolicyId is not None, row.outboundPhoneNumberId is not None,
                           row.maxWaitSeconds, row.noAgentDeflection, row.deflectionMessage,
                           sorted((emails[a.userId], a.groupNumber) for a in A.select().where(A.callMenu == row.id)))
    return {"users": users, "numbers": numbers, "menus": menus}


def test_contact_center_applied_twice_changes_nothing_the_second_time(url):
    dry = apply(url, CONTACT_CENTER, dry_run=True)
    first = apply(url, CONTACT_CENTER)
    assert first.changes == dry.changes and len(first.changes) == 18 + 7  # the on-call part, and these
    cc_changes = [c for c in first.changes if "menu" in c or "outbound" in c]
    assert cc_changes == [
        "+ outbound number +14155550190 (default)",
        "+ outbound number +442079460958",
        "+ menu Main",
        "+ menu Main > Sales",
        "+ menu Main > Sales: queue: alice@example.com (group 1)",
        "+ menu Main > Sales: queue: bob@example.com (group 2)",
        "+ menu Main > Database emergencies",
    ]
    before = read(url, counts)
    snapshot = read(url, cc_state)
    assert apply(url, CONTACT_CENTER).changes == []
    assert read(url, counts) == before and read(url, cc_state) == snapshot
    assert snapshot == {
        "users": {"alice@example.com": (True, None, True, "Available"),
                  "bob@example.com": (True, "1002", False, "Unavailable"),
                  "carol@example.com": (False, None, True, "Available")},
        "numbers": [("+14155550190", "Sales US", True), ("+442079460958", None, False)],
        "menus": {
            "Main": (None, 0, "ivr_menu", ["en", "fr"], "+14155550150", 1, "multicast", 30, "never", False, True,
                     120, "voicemail", None, []),
            "Sales": ("Main", 0, "ivr_menu", ["en"], None, 0, "cascade", 15, "ask", False, False,
                      90, "message", "Sales is busy.", [("alice@example.com", 1), ("bob@example.com", 2)]),
            "Database emergencies": ("Main", 1, "ivr_menu", ["en"], None, 0, "multicast", 30, "never", True, False,
                                     120, "voicemail", None, []),
        },
    }


def test_contact_center_lists_are_the_whole_truth(url):
    apply(url, CONTACT_CENTER)
    edited = (CONTACT_CENTER
              .replace('    name: Sales US\n    default: true\n  - "+44 20 7946 0958"\n',
                       '    name: Sales US\n  - number: "+44 20 7946 0958"\n    default: true\n')
              .replace("          - agent: bob@example.com\n            group: 2\n", "")
              .replace("          - alice@example.com\n", "          - agent: alice@example.com\n"
                                                     "            group: 3\n")
              .replace("      - name: Database emergencies\n        policy: db-on-call\n", "")
              .replace("    languages: [en, fr]\n", "    languages: [en]\n")
              .replace("    agent: true\n", "    agent: false\n", 1))
    result = apply(url, edited)
    assert result.changes == [
        "~ user alice@example.com: isAgent True -> False",
        "~ outbound number +14155550190: isDefault True -> False",
        "~ outbound number +442079460958: isDefault False -> True",
        "~ menu Main: languages ['en', 'fr'] -> ['en']",
        "~ menu Main > Sales: queue: alice@example.com: group 1 -> 3",
        "- menu Main > Sales: queue bob@example.com",
        "- menu Main > Database emergencies",
    ]
    assert apply(url, edited).changes == []
    state = read(url, cc_state)
    assert state["numbers"] == [("+14155550190", "Sales US", False), ("+442079460958", None, True)]
    assert set(state["menus"]) == {"Main", "Sales"}
    assert state["menus"]["Sales"][-1] == [("alice@example.com", 3)]
    # The queue goes, the policy comes: the same menu becomes a leaf handing calls to the policy.
    to_policy = edited.replace("        queue:\n          - agent: alice@example.com\n"
                               "            group: 3\n", "        queue: []\n        policy: db-on-call\n")
    assert apply(url, to_policy).changes == ["- menu Main > Sales: queue alice@example.com",
                                             "~ menu Main > Sales: policy none -> db-on-call"]
    assert apply(url, to_policy).changes == []


def test_contact_center_problems_name_the_line_and_nothing_is_applied(url):
    bad = (CONTACT_CENTER
           .replace("    languages: [en, fr]\n", "    languages: [en, xx]\n")
           .replace('  - "+44 20 7946 0958"\n', '  - number: "+44 20 7946 0958"\n    default: true\n')
           .replace("        policy: db-on-call\n", "        policy: no-such-policy\n"))
    lines = bad.splitlines()

    def line_of(text, start=0):
        return next(i for i, line in enumerate(lines, 1) if text in line and i > start)

    with pytest.raises(sync.SyncError) as info:
        apply(url, bad)
    assert info.value.problems == [
        f"acme.yaml:{line_of('default: true', line_of('+44 20'))}: outbound number +442079460958: only one "
        f"outbound number can be the default (line {line_of('default: true')} is already)",
        f"acme.yaml:{line_of('languages')}: menu Main: languages: Language 'xx' is not found (ISO 639-1 codes: "
        "two lowercase letters, e.g. en, fr)",
    ]
    assert read(url, counts) == {name: 0 for name in read(url, counts)}
    # An agent who is not one, a leaf with a policy and a queue, an unknown policy: each said at its line.
    for old, new, marker, problem in (
        ("      availability: Unavailable\n", "      availability: Away\n", "availability",
         "user bob@example.com: agent: availability must be one of Available, Unavailable, not 'Away'"),
        ("    agent: true\n", "", "- alice@example.com",
         "data.userId: the user 'Alice' is not an agent: set isAgent to true on the user first"),
        ("        policy: db-on-call\n", "        policy: no-such-policy\n", "no-such-policy",
         "menu Main > Database emergencies: no Incoming Call Policy with the slug or name 'no-such-policy' "
         "(neither in this file nor in the project)"),
        ("        recording: ask\n", "        recording: ask\n        policy: db-on-call\n", "policy: db-on-call",
         "data.incomingCallPolicyId: this menu has 2 agent(s) in its queue"),
        ("      - name: Database emergencies\n",
         "      - name: Database emergencies\n        routingNumber: '+1 415 555 0151'\n", "Database emergencies",
         "data.routingPhoneNumber: only a root menu (without parentId) has a routing phone number"),
    ):
        assert old in CONTACT_CENTER
        text = CONTACT_CENTER.replace(old, new)
        line = next(i for i, content in enumerate(text.splitlines(), 1) if marker in content)
        with pytest.raises(sync.SyncError) as info:
            apply(url, text)
        assert info.value.problems[0].startswith(f"acme.yaml:{line}: {problem}"), \
            (line, info.value.problems)
        assert read(url, counts)["CallMenu"] == 0


HOURS_AND_LISTS = textwrap.dedent("""\
    project: Acme
    policies:
      - name: Office line
        slug: office
        businessHoursTimeZone: Europe/Paris
        businessHours:
          - daily: 09:00-17:00
            days: [Mon, Tue, Wed, Thu, Fri]
          - weekly: Saturday 10:00 - Saturday 12:00
        afterHoursMessage: We are closed.
        callerBlockList: ["+1 415 555 0100", "+44 20*", "(212) 555-0199"]
        callerAllowList: []
        blockedCallerMessage: Not from this number.
    """)


def test_policy_hours_and_caller_lists_sync_and_apply_twice_change_nothing(url):
    assert "+ policy office" in apply(url, HOURS_AND_LISTS).changes
    assert apply(url, HOURS_AND_LISTS).changes == []

    def policy():
        row = m.IncomingCallPolicy.get(m.IncomingCallPolicy.slug == "office")
        return (row.businessHoursTimeZone, row.businessHours, row.afterHoursMessage, row.callerBlockList,
                row.callerAllowList, row.blockedCallerMessage)

    assert read(url, policy) == (
        "Europe/Paris",
        [{"type": "Daily", "startTime": "09:00", "endTime": "17:00",
          "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]},
         {"type": "Weekly", "startDay": "Saturday", "startTime": "10:00", "endDay": "Saturday", "endTime": "12:00"}],
        "We are closed.", ["+14155550100", "+4420*", "+12125550199"], [], "Not from this number.")
    edited = HOURS_AND_LISTS.replace('callerAllowList: []', 'callerAllowList: ["+1*"]')
    changes = apply(url, edited).changes
    assert changes == ["~ policy office: callerAllowList [] -> ['+1*']"]
    # Keys left out leave their fields alone.
    assert apply(url, "project: Acme\npolicies:\n  - name: Office line\n    slug: office\n").changes == []
    assert read(url, policy)[4] == ["+1*"]


@pytest.mark.parametrize(("replace", "problem"), [
    (("+44 20*", "44 20*"), "acme.yaml:11: policy office: callerBlockList: '44 20*' is not a prefix pattern"),
    (("+1 415 555 0100", "hello"), "acme.yaml:11: policy office: callerBlockList: 'hello' is not a phone number"),
    (("Europe/Paris", "Mars/Olympus"), "acme.yaml:5: policy office: businessHoursTimeZone: 'Mars/Olympus' is not "
                                       "an IANA time zone"),
    (("09:00-17:00", "09:00-25:00"), "acme.yaml:7: policy office: restriction: '25:00' is not a time of day"),
])
def test_policy_hours_and_list_problems_say_where(url, replace, problem):
    with pytest.raises(sync.SyncError) as info:
        apply(url, HOURS_AND_LISTS.replace(*replace))
    assert info.value.problems[0].startswith(problem), info.value.problems


VOICEMAIL = textwrap.dedent("""\
    project: Acme
    policies:
      - name: Night line
        slug: night
        voicemailOnNoAnswer: true
        voicemailMaxSeconds: 90
    """)


def test_a_policys_voicemail_syncs_and_applying_twice_changes_nothing(url):
    assert "+ policy night" in apply(url, VOICEMAIL).changes
    assert apply(url, VOICEMAIL).changes == []

    def policy():
        row = m.IncomingCallPolicy.get(m.IncomingCallPolicy.slug == "night")
        return row.voicemailOnNoAnswer, row.voicemailMaxSeconds

    assert read(url, policy) == (True, 90)
    assert apply(url, VOICEMAIL.replace("true", "false")).changes == ["~ policy night: voicemailOnNoAnswer True -> False"]
    assert read(url, policy) == (False, 90)


@pytest.mark.parametrize("seconds", ["4", "601", "lots"])
def test_a_voicemail_length_out_of_range_says_where(url, seconds):
    with pytest.raises(sync.SyncError) as info:
        apply(url, VOICEMAIL.replace("90", seconds))
    assert info.value.problems[0].startswith("acme.yaml:6: policy night: voicemailMaxSeconds"), info.value.problems
