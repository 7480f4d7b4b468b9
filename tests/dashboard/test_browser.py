"""The dashboard in Debian's headless Chromium, against a real server on SQLite: signing in, policies and
rules, who is on call, the live page, every page at 375 px for every role, CSRF, read-only keys.

Screenshots go to .artifacts/dashboard/ (ignored by git).
"""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from ivr.store.models import IncomingCallLog, IncomingCallLogItem, Role
from tests.api.factories import build_graph, unique_phone
from tests.dashboard.server import ROLES, artifact, sign_in

pytestmark = pytest.mark.browser

PAGES = ["/dashboard/", "/dashboard/live", "/dashboard/calls", "/dashboard/calls?status=Completed",
         "/dashboard/calls/{log}", "/dashboard/policies", "/dashboard/policies/new", "/dashboard/policies/{policy}",
         "/dashboard/schedules", "/dashboard/schedules/{schedule}", "/dashboard/users", "/dashboard/menus",
         "/dashboard/charts"]
#: A key with one fine-grained permission: it reads the logs and nothing else.
LOGS_ONLY = "logs-only"


@pytest.fixture(scope="module")
def graph(site):
    async def build():
        graph = await build_graph(site.api, "Dashboard")
        keys = {role: await site.api.key(graph.project_id, role=role_value)
                for role, role_value in zip(ROLES, (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER))}
        keys[LOGS_ONLY] = await site.api.key(graph.project_id, permissions=["Read Incoming Call Log"])
        now = dt.datetime.utcnow()
        for minutes, status in ((50, "Completed"), (30, "NoAnswer"), (10, "Completed")):  # for the charts
            started = now - dt.timedelta(minutes=minutes)
            log = await IncomingCallLog.acreate(project=graph.project_id, incomingCallPolicyId=graph["policy"],
                                                callerPhoneNumber=unique_phone(), status=status, startedAt=started,
                                                endedAt=started + dt.timedelta(seconds=20), callDurationInSeconds=20)
            if status == "Completed":
                await IncomingCallLogItem.acreate(project=graph.project_id, incomingCallLog=log.id, userId=graph["user"],
                                                  escalationRuleOrder=1, status="Completed", isAnswered=True,
                                                  dialDurationInSeconds=6.5, startedAt=started + dt.timedelta(seconds=2))
        other = await site.api.tenant("Other", roles=("owner",))
        other_policy = await site.api.create("incoming-call-policy", other.owner, {"name": "Theirs"})
        return graph, keys, other.owner, other_policy["_id"]

    graph, keys, other_key, other_policy = site.run(build())
    graph.keys, graph.other_key, graph.other_policy = keys, other_key, other_policy
    return graph


def pages_of(graph) -> list[str]:
    return [p.format(log=graph["log"], policy=graph["policy"], schedule=graph["schedule"]) for p in PAGES]


def rule_card(page, name: str):
    return page.locator(".rule").filter(has=page.locator(".rule-name", has_text=re.compile(f"^{name}$")))


def api_rules(site, key, policy_id) -> list[tuple[str, int]]:
    answer = site.run(site.api.post("/api/incoming-call-policy-escalation-rule/get-list", key, {
        "select": {"name": True, "order": True}, "query": {"incomingCallPolicyId": policy_id}, "sort": {"order": 1}}))
    return [(row["name"], row["order"]) for row in answer["data"]]


@pytest.fixture
def owner_page(browser, site, graph):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(5000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of test calls and deletions
    sign_in(page, site.base, graph.keys["owner"])
    try:
        yield page
    finally:
        context.close()


def test_sign_in_create_a_policy_add_and_reorder_rules(owner_page, site, graph):
    page = owner_page
    assert page.locator("nav a").all_inner_texts() == ["Live", "Calls", "Policies", "On call", "Users", "Menus",
                                                        "Charts"]
    page.click("text=Policies")
    page.click("text=New policy")
    page.fill("input[name=name]", "Night shift <b>")
    number = unique_phone()
    page.fill("input[name=routingPhoneNumber]", number)
    page.click("button:has-text('Create policy')")
    page.wait_for_url(re.compile(r".*/dashboard/policies/[0-9a-f-]{36}\?ok=policy-created$"))
    assert page.locator("h1").inner_text().startswith("Night shift <b>")  # text, never markup
    policy_id = page.url.split("/policies/")[1].split("?")[0]

    for name, target in (("First", f"user:{graph['user']}"), ("Second", f"team:{graph['team']}")):
        page.fill("#new-rule input[name=name]", name)
        page.select_option("#new-rule select[name=target]", target)
        page.fill("#new-rule input[name=escalateAfterSeconds]", "20")
        page.click("#new-rule button[type=submit]")
        page.wait_for_url(re.compile(r".*ok=rule-created$"))
    assert page.locator(".rule-name").all_inner_texts() == ["First", "Second"]
    assert api_rules(site, graph.keys["owner"], policy_id) == [("First", 1), ("Second", 2)]

    rule_card(page, "First").locator("button:has-text('Down')").click()
    page.wait_for_url(re.compile(r".*ok=rule-moved#rules$"))
    assert page.locator(".rule-name").all_inner_texts() == ["Second", "First"]
    assert api_rules(site, graph.keys["owner"], policy_id) == [("Second", 1), ("First", 2)]
    rule_card(page, "First").locator("button:has-text('Up')").click()
    page.wait_for_url(re.compile(r".*ok=rule-moved#rules$"))
    assert api_rules(site, graph.keys["owner"], policy_id) == [("First", 1), ("Second", 2)]

    page.click("button:has-text('Disable policy')")
    page.wait_for_url(re.compile(r".*ok=policy-disabled$"))
    assert page.locator("h1 .status").inner_text() == "Disabled"
    page.screenshot(path=artifact("policy-owner.png"), full_page=True)


def test_test_call_is_queued_like_the_api_would(owner_page, site, graph):
    """The rule ringing the team reaches Bob's verified number: a Call Log is queued; the rule ringing
    Alice (no verified number) is refused with a clear message."""
    page = owner_page
    page.goto(f"{site.base}/dashboard/policies/{graph['policy']}")
    page.locator(f"[data-rule-id='{graph['rule2']}'] button:has-text('Test call')").click()
    page.wait_for_url(re.compile(r".*ok=test-call#rules$"))
    logs = site.run(site.api.post("/api/call-log/get-list", graph.keys["owner"], {
        "select": {"callData": True, "toNumber": True}, "query": {"userId": graph["user2"]}}))["data"]
    assert [row["toNumber"] for row in logs if "test call from Hotline" in str(row["callData"])] == \
        ["sip:bob@10.0.0.5:5060"], logs
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.locator(f"[data-rule-id='{graph['rule']}'] button:has-text('Test call')").click()
    assert posted.value.status == 400
    assert "rings no one right now" in page.locator(".notice.error").inner_text()


def test_who_is_on_call(owner_page, site, graph):
    page = owner_page
    answer = site.run(site.api.call("GET", f"/api/on-call-duty-policy-schedule/{graph['schedule']}/on-call?next=3",
                                    graph.keys["owner"]))
    page.click("text=On call")
    card = page.locator(f"[data-schedule-id='{graph['schedule']}']")
    expected = answer["user"]["name"] if answer["user"] else "no one"
    assert card.locator(".oncall-now strong").inner_text() == expected
    card.locator("h2 a").click()
    assert page.locator(".oncall-now strong").inner_text() == expected
    assert page.locator("ol.handoffs li").count() >= 1
    assert page.locator("table.list tbody tr").count() >= 1  # the graph's override
    page.screenshot(path=artifact("schedule-owner.png"), full_page=True)
    rows = page.locator("table.list tbody tr").count()
    page.select_option("select[name=userId]", graph["user2"])
    page.fill("input[name=startsAt]", "2031-01-01T10:00")
    page.fill("input[name=endsAt]", "2031-01-02T10:00")
    page.fill("input[name=description]", "Swap for 2031")
    page.click("button:has-text('Add override')")
    page.wait_for_url(re.compile(r".*ok=override-created$"))
    assert page.locator("table.list tbody tr").count() == rows + 1
    row = page.locator("table.list tbody tr", has_text="Swap for 2031")
    assert "2031-01-01 10:00" in row.inner_text() and "Bob" in row.inner_text()
    row.locator("button:has-text('Remove')").click()
    page.wait_for_url(re.compile(r".*ok=override-deleted$"))
    assert page.locator("table.list tbody tr", has_text="Swap for 2031").count() == 0


def test_live_page_shows_a_call_appear_then_end(owner_page, site, graph):
    """The call engine's writes (as ivr.store.callstore makes them) reach the open page within a second."""
    page = owner_page
    page.goto(f"{site.base}/dashboard/live")
    page.wait_for_selector("#live-state[data-state=live]")
    caller = unique_phone()

    async def ring():
        now = dt.datetime.utcnow()
        log = await IncomingCallLog.acreate(project=graph.project_id, incomingCallPolicyId=graph["policy"],
                                            callerPhoneNumber=caller, status="Ringing", startedAt=now,
                                            currentEscalationRuleOrder=1)
        item = await IncomingCallLogItem.acreate(project=graph.project_id, incomingCallLog=log.id, userId=graph["user"],
                                                 escalationRuleOrder=1, numberDialed="sip:alice@127.0.0.1",
                                                 status="Ringing", startedAt=now)
        return log, item

    log, item = site.run(ring())
    started = time.monotonic()
    call = page.locator(f"[data-call-id='{log.id}']")
    call.wait_for(timeout=3000)
    assert time.monotonic() - started < 1.5
    assert call.locator(".caller").inner_text() == caller
    assert call.get_attribute("data-status") == "Ringing"
    assert "Alice" in call.locator(".legs").inner_text()

    async def end():
        ended = dt.datetime.utcnow()
        await IncomingCallLogItem.update(status="Completed", isAnswered=True, endedAt=ended).where(
            IncomingCallLogItem.id == item.id).aexecute()
        await IncomingCallLog.update(status="Completed", endedAt=ended, callDurationInSeconds=3,
                                     answeredByUserId=graph["user"]).where(IncomingCallLog.id == log.id).aexecute()

    site.run(end())
    started = time.monotonic()
    page.wait_for_selector(f"[data-call-id='{log.id}'][data-status=Completed]", timeout=3000)
    assert time.monotonic() - started < 1.5
    assert call.locator(".answered").inner_text() == "Answered by Alice"
    page.screenshot(path=artifact("live-owner.png"), full_page=True)


def test_every_page_at_375_px_for_every_role(browser, site, graph):
    failures = []
    for role in (*ROLES, LOGS_ONLY):
        context = browser.new_context(viewport={"width": 375, "height": 812}, device_scale_factor=1)
        context.set_default_timeout(5000)
        page = context.new_page()
        sign_in(page, site.base, graph.keys[role])
        for path in pages_of(graph):
            response = page.goto(site.base + path)
            status = response.status
            if role == LOGS_ONLY:
                readable = path.startswith(("/dashboard/live", "/dashboard/calls", "/dashboard/charts")) \
                    or path == "/dashboard/"
                expected = 200 if readable else 403
            else:
                expected = 403 if role == "viewer" and path.endswith("/new") else 200
            if status != expected:
                failures.append(f"{role} {path}: {status}, expected {expected}")
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > 375:
                failures.append(f"{role} {path}: {width} px wide at 375 px")
            if status == 403:
                assert "Permission denied" in page.locator(".notice.error").inner_text()
            if role in ("owner", "viewer", LOGS_ONLY):
                name = path.strip("/").replace("/", "-").split("?")[0].replace("dashboard", "") or "-home"
                name = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "item", name)
                page.screenshot(path=artifact(f"375-{role}{name}.png"), full_page=True)
        context.close()
    assert not failures, "\n".join(failures)


def test_a_forged_csrf_token_is_refused(owner_page, site, graph):
    page = owner_page
    page.goto(f"{site.base}/dashboard/policies/{graph['policy']}")
    before = api_rules(site, graph.keys["owner"], graph["policy"])
    page.evaluate("document.querySelector('#new-rule input[name=csrf]').value = 'forged'")
    page.select_option("#new-rule select[name=target]", f"user:{graph['user']}")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#new-rule button[type=submit]")
    assert posted.value.status == 403
    assert "CSRF" in page.locator(".notice.error").inner_text()
    assert api_rules(site, graph.keys["owner"], graph["policy"]) == before
    # Without the token at all, from a script of the page: refused too.
    answer = page.request.post(f"{site.base}/dashboard/policies", form={"name": "No token"})
    assert answer.status == 403


def test_a_read_only_key_sees_no_edit_buttons_and_its_posts_get_403(browser, site, graph):
    context = browser.new_context()
    context.set_default_timeout(5000)
    page = context.new_page()
    sign_in(page, site.base, graph.keys["viewer"])
    page.goto(f"{site.base}/dashboard/policies/{graph['policy']}")
    assert page.locator(".rule").count() == 3
    for text in ("Edit policy", "Add a rule", "Disable policy", "Up", "Down", "Test call", "Delete"):
        assert page.locator(f"text={text}").count() == 0, text
    page.goto(f"{site.base}/dashboard/policies")
    assert page.locator("text=New policy").count() == 0
    csrf = page.locator("form.signout input[name=csrf]").get_attribute("value")
    before = api_rules(site, graph.keys["owner"], graph["policy"])
    for path, form in (("/dashboard/policies", {"name": "Viewer's"}),
                       (f"/dashboard/policies/{graph['policy']}/enabled", {"enabled": "0"}),
                       (f"/dashboard/rules/{graph['rule']}/move", {"direction": "down"}),
                       (f"/dashboard/rules/{graph['rule']}/test-call", {}),
                       (f"/dashboard/schedules/{graph['schedule']}/overrides", {"userId": graph["user"]})):
        answer = page.request.post(site.base + path, form={"csrf": csrf, **form})
        assert answer.status == 403, (path, answer.status)
        assert "Permission denied" in answer.text()
    assert api_rules(site, graph.keys["owner"], graph["policy"]) == before
    page.goto(f"{site.base}/dashboard/policies/{graph['policy']}")
    page.screenshot(path=artifact("policy-viewer.png"), full_page=True)
    context.close()


def test_another_projects_rows_are_not_found(browser, site, graph):
    context = browser.new_context()
    context.set_default_timeout(5000)
    page = context.new_page()
    sign_in(page, site.base, graph.other_key)
    for path in (f"/dashboard/policies/{graph['policy']}", f"/dashboard/calls/{graph['log']}",
                 f"/dashboard/schedules/{graph['schedule']}"):
        assert page.goto(site.base + path).status == 404, path
    page.goto(f"{site.base}/dashboard/calls")
    assert page.locator("table.list tbody a").count() == 0
    page.goto(f"{site.base}/dashboard/policies")
    assert page.locator("table.list tbody a").all_inner_texts() == ["Theirs"]
    # And the signed-in owner of the graph cannot open the other project's policy either.
    context.close()


def test_sign_out_and_a_wrong_key(browser, site, graph):
    context = browser.new_context()
    context.set_default_timeout(5000)
    page = context.new_page()
    page.goto(f"{site.base}/dashboard/policies")
    assert "/dashboard/sign-in?next=" in page.url
    page.fill("input[name=apiKey]", "hk_not_a_key")
    page.click("button[type=submit]")
    assert "Invalid API key." in page.locator(".notice.error").inner_text()
    page.fill("input[name=apiKey]", graph.keys["member"])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/policies\?ok=signed-in$"))
    cookie = next(c for c in context.cookies() if c["name"] == "hotline_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert graph.keys["member"] not in cookie["value"]
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/dashboard/sign-in$"))
    page.goto(f"{site.base}/dashboard/policies")
    assert "/dashboard/sign-in?next=" in page.url
    context.close()
