"""The operator console in a real browser (headless Chromium driven by Selenium) against a real
gunicorn gateway, a real Redis and a real worker: sign in, live messages, the loop graph,
replaying a dead letter, releasing a held action, what a role without ``manage`` sees, text
that stays text, and axe-core's accessibility rules on every page at desktop and phone widths.
Each page's screenshot is saved under ``.screenshots/`` (ignored by git)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import ROOT, wait_for
from tests.functional.test_docs_page import CHROMEDRIVER, needs_chromium
from tests.functional.test_websocket import Gateway, http, token_for

SCREENSHOTS = ROOT / ".screenshots"
AXE = ROOT / "tests" / "support" / "axe" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
#: Every page of the console (the message page is visited with a real message).
PAGES = ["/console", "/console/dead-letters", "/console/held", "/console/breakers",
         "/console/schedules", "/console/subscriptions", "/console/queues"]


# -- without a browser ------------------------------------------------------------------------

def test_console_pages_allow_no_inline_script_and_escape_what_the_url_holds(
        client: FlaskClient) -> None:
    """Each page has a policy without 'unsafe-inline', loads only the console's own files,
    and a message id from the URL comes back escaped."""
    for path in [*PAGES, "/console/messages/abc"]:
        page = client.get(path)
        assert page.status_code == 200, path
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
        assert "connect-src 'self' ws://localhost;" in policy
        html = page.get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html
        assert "http://" not in html and "https://" not in html
    hostile = client.get('/console/messages/%22%3E%3Cscript%3Ealert(1)%3C').get_data(as_text=True)
    assert "<script>alert" not in hostile
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;" in hostile
    forged = client.get("/console", headers={"Host": "a;script-src *"})
    assert "script-src *" not in forged.headers["Content-Security-Policy"]
    assert client.get("/console/assets/console.js").status_code == 200
    assert client.get("/console/assets/base.html").status_code == 404


def test_the_vendored_axe_core_is_the_published_file() -> None:
    """tests/support/axe/axe.min.js is axe-core as its package ships it (README there)."""
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256


# -- the browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(redis_url: str, worker: Any,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    process = Gateway(redis_url, tmp_path_factory.mktemp("console-gateway"), workers=1)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMEDRIVER is None:
        pytest.skip("Chromium is not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--window-size=1280,900",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def admin() -> str:
    return token_for("console-admin", ["admin"])


def until(browser: Any, condition: Callable[[Any], Any], timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A table drawn again while a condition reads it: read it again.
    return WebDriverWait(browser, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def signed_in(browser: Any, base: str, token: str, path: str = "/console") -> None:
    """Open ``path`` signed in by the dev stack's kind of link, and wait for the page."""
    browser.get(f"{base}/console/assets/console.css")  # same origin: reset the tab's storage
    browser.execute_script("window.sessionStorage.clear()")
    browser.get(f"{base}{path}#token={token}")
    until(browser, lambda b: b.execute_script(
        "return !document.getElementById('content').hidden"))


def visible(browser: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return [e for e in browser.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]


def row_of(browser: Any, message_id: str) -> Any:
    """The table row linking to ``message_id``, once it is shown."""
    from selenium.webdriver.common.by import By

    link = f'a[href="/console/messages/{message_id}"]'
    until(browser, lambda b: visible(b, link))
    return visible(browser, link)[0].find_element(By.XPATH, "./ancestor::tr")


def submit(base: str, token: str, type_: str, data: dict[str, Any],
           source: str = "console-test") -> str:
    status, body = http("POST", f"{base}/api/v1/messages", token,
                        {"type": type_, "source": source, "data": data})
    assert status == 202, body
    return str(body["id"])


def status_of(base: str, token: str, message_id: str) -> dict[str, Any]:
    return http("GET", f"{base}/api/v1/messages/{message_id}", token)[1]


def settled(base: str, token: str, message_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    return wait_for(lambda: (r := status_of(base, token, message_id)) and
                    r.get("status") in statuses and r, timeout=30,
                    message=f"{message_id} in {statuses}")


def shot(browser: Any, name: str) -> None:
    browser.save_screenshot(str(SCREENSHOTS / f"console-{name}.png"))


def severe_logs(browser: Any) -> list[dict[str, Any]]:
    """Console errors of the page (a script or style the policy blocked would be one)."""
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
            and "favicon" not in e["message"] and "/api/v1/" not in e["message"]]


@needs_chromium
def test_sign_in_by_pasting_a_token_keeps_it_in_the_tab_only(gateway: Gateway, browser: Any,
                                                              admin: str) -> None:
    """The pasted token lands in sessionStorage, no cookie is set, and the link's fragment
    is removed from the address bar."""
    from selenium.webdriver.common.by import By

    browser.get(f"{gateway.base}/console")
    browser.execute_script("window.sessionStorage.clear()")
    browser.refresh()
    until(browser, lambda b: b.find_element(By.ID, "sign-in").is_displayed())
    shot(browser, "sign-in")
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    until(browser, lambda b: "invalid" in b.find_element(By.ID, "sign-in-error").text)
    browser.find_element(By.ID, "token").send_keys(admin)
    browser.find_element(By.CSS_SELECTOR, "#sign-in-form button").click()
    until(browser, lambda b: "console-admin" in b.find_element(By.ID, "who").text)
    assert browser.execute_script(
        "return sessionStorage.getItem('integration.console.token')") == admin
    assert browser.get_cookies() == []

    signed_in(browser, gateway.base, admin)
    assert browser.execute_script("return window.location.hash") == ""
    assert browser.execute_script(
        "return sessionStorage.getItem('integration.console.token')") == admin
    assert severe_logs(browser) == []


@needs_chromium
def test_a_sign_in_link_works_once(gateway: Gateway, browser: Any, admin: str,
                                   redis_client: Any) -> None:
    """The dev stack's link: its code is traded for the token and leaves the address bar;
    opened a second time, it signs nobody in and says why."""
    from selenium.webdriver.common.by import By

    from integration.ops.consolelink import console_link
    from integration.security.signin import SignInLinks

    link = console_link(gateway.base, admin, SignInLinks(redis_client, "integration"))
    assert admin not in link and "#code=" in link
    browser.get(f"{gateway.base}/console/assets/console.css")
    browser.execute_script("window.sessionStorage.clear()")
    browser.get(link)
    until(browser, lambda b: "console-admin" in b.find_element(By.ID, "who").text)
    assert browser.execute_script("return window.location.hash") == ""
    assert browser.execute_script(
        "return sessionStorage.getItem('integration.console.token')") == admin

    browser.get(f"{gateway.base}/console/assets/console.css")  # a new page, not a new hash
    browser.execute_script("window.sessionStorage.clear()")
    browser.get(link)
    until(browser, lambda b: "used already" in b.find_element(By.ID, "sign-in-error").text)
    assert browser.execute_script(
        "return sessionStorage.getItem('integration.console.token')") is None


@needs_chromium
def test_a_message_arrives_live_as_text_and_its_loop_is_drawn(gateway: Gateway, browser: Any,
                                                              admin: str) -> None:
    """A metric over its threshold shows up in the live stream (its hostile source as text,
    never run), filters find it by source, and its page draws metric -> alert -> diagnosis
    -> action -> action.result with a link along the chain."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    signed_in(browser, gateway.base, admin)
    until(browser, lambda b: b.find_element(By.ID, "live").text == "live")
    host = f"web-{uuid.uuid4().hex[:6]}"
    metric = submit(gateway.base, admin, "metric",
                    {"name": "cpu_usage_percent", "value": 97.5, "labels": {"host": host}},
                    source=f"{host} {HOSTILE}")
    row = row_of(browser, metric)
    assert HOSTILE in row.text
    assert browser.execute_script("return window.__pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#stream script, #stream img")

    browser.find_element(By.ID, "filter-source").send_keys(host)
    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("succeeded")
    until(browser, lambda b: [r.get_attribute("data-id")
                              for r in visible(b, "#stream tbody tr")] == [metric])
    shot(browser, "live")

    def chain_done() -> bool:
        found = http("GET", f"{gateway.base}/api/v1/messages/{metric}/trace", admin)[1]
        nodes, todo = [], [found]
        while todo:
            node = todo.pop()
            nodes.append(node)
            todo.extend(node["caused"])
        return any(n["type"] == "action.result" and n["status"] == "succeeded" for n in nodes)

    wait_for(chain_done, timeout=40, message="the loop reaching action.result")
    row_of(browser, metric).find_element(By.CSS_SELECTOR, "a").click()
    until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#loop svg a.node")) >= 5)
    labels = [n.get_attribute("data-type")
              for n in browser.find_elements(By.CSS_SELECTOR, "#loop svg a.node")]
    assert labels[:5] == ["metric", "alert", "diagnosis", "action", "action.result"]
    assert "<script>window.__pwned = 1</script>" in browser.find_element(By.ID, "payload").text
    assert browser.execute_script("return window.__pwned") is None
    shot(browser, "message")

    browser.find_elements(By.CSS_SELECTOR, "#loop svg a.node")[3].click()
    until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#loop svg a.node.current"))
    current = browser.find_element(By.CSS_SELECTOR, "#loop svg a.node.current")
    assert current.get_attribute("data-type") == "action"
    assert severe_logs(browser) == []


def tab_to(browser: Any, element: Any, limit: int = 80) -> None:
    """Press Tab until ``element`` has the focus: it is reachable by keyboard."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser.execute_script("document.activeElement && document.activeElement.blur();"
                           "window.scrollTo(0, 0)")
    for _ in range(limit):
        if browser.switch_to.active_element == element:
            return
        ActionChains(browser).send_keys(Keys.TAB).perform()
    raise AssertionError(f"{element.text!r} is not reachable with Tab")


@needs_chromium
def test_a_dead_letter_is_replayed_by_keyboard_after_a_confirmation(
        gateway: Gateway, browser: Any, admin: str) -> None:
    """Tab to the letter's Replay, Enter, Tab to Confirm, Enter: it runs again and succeeds."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    letter = submit(gateway.base, admin, "test.flaky",
                    {"key": uuid.uuid4().hex, "fail_times": 1, "kind": "permanent"})
    settled(gateway.base, admin, letter, ("dead",))
    signed_in(browser, gateway.base, admin, "/console/dead-letters")
    row = row_of(browser, letter)
    shot(browser, "dead-letters")
    [replay] = [b for b in row.find_elements(By.TAG_NAME, "button") if b.text == "Replay"]
    tab_to(browser, replay)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    until(browser, lambda b: b.find_element(By.ID, "confirm").is_displayed())
    assert letter in browser.find_element(By.ID, "confirm-text").text
    shot(browser, "dead-letters-confirm")
    ActionChains(browser).send_keys(Keys.TAB).send_keys(Keys.ENTER).perform()
    replayed = settled(gateway.base, admin, letter, ("succeeded",))
    assert "dead" in [step["status"] for step in replayed["history"]]
    until(browser, lambda b: not visible(b, f'a[href="/console/messages/{letter}"]'))


@needs_chromium
def test_dead_letters_a_filter_selects_are_replayed_with_progress(
        gateway: Gateway, browser: Any, admin: str) -> None:
    """Replay all that match: the confirmation names how many, the progress bar counts them,
    and each one runs again."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    since = browser.execute_script("return new Date(Date.now() - 1000).toISOString()")
    letters = [submit(gateway.base, admin, "test.buggy", {"key": uuid.uuid4().hex})
               for _ in range(2)]
    for letter in letters:
        settled(gateway.base, admin, letter, ("dead",))
    signed_in(browser, gateway.base, admin, "/console/dead-letters")
    until(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#dl-type option")) > 1)
    Select(browser.find_element(By.ID, "dl-type")).select_by_visible_text("test.buggy")
    browser.execute_script("document.getElementById('dl-since').value = arguments[0]",
                           since[:19])
    browser.find_element(By.CSS_SELECTOR, "#dl-filter button[type=submit]").click()
    for letter in letters:
        row_of(browser, letter)
    browser.find_element(By.ID, "dl-replay-all").click()
    until(browser, lambda b: b.find_element(By.ID, "confirm").is_displayed())
    assert "Replay 2 dead letters" in browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-ok").click()
    until(browser, lambda b: b.find_element(By.ID, "dl-progress-text").text == "2 of 2 replayed")
    assert browser.find_element(By.ID, "dl-progress-bar").get_attribute("value") == "2"
    shot(browser, "dead-letters-replayed")
    for letter in letters:  # the file is still missing: each runs again and is dead again
        record = settled(gateway.base, admin, letter, ("dead",))
        assert record.get("replayed_by") == "console-admin" or any(
            step.get("replayed_by") == "console-admin" for step in record["history"])


@needs_chromium
def test_a_held_action_is_released_from_the_console(gateway: Gateway, browser: Any,
                                                     admin: str) -> None:
    """An action held by loop detection is listed, and Release runs it."""
    target = uuid.uuid4().hex[:8]
    for _ in range(3):  # the test environment's loop limit
        done = submit(gateway.base, admin, "test.action",
                      {"action": "restart", "target": target, "key": uuid.uuid4().hex})
        settled(gateway.base, admin, done, ("succeeded",))
    held = submit(gateway.base, admin, "test.action",
                  {"action": "restart", "target": target, "key": uuid.uuid4().hex})
    settled(gateway.base, admin, held, ("held",))
    signed_in(browser, gateway.base, admin, "/console/held")
    from selenium.webdriver.common.by import By

    row = row_of(browser, held)
    shot(browser, "held")
    [release] = [b for b in row.find_elements(By.TAG_NAME, "button") if b.text == "Release"]
    release.click()
    assert settled(gateway.base, admin, held, ("succeeded",))["released_by"] == "console-admin"
    until(browser, lambda b: not visible(b, f'a[href="/console/messages/{held}"]'))


@needs_chromium
def test_a_role_without_manage_sees_no_replay_and_a_forged_replay_is_refused(
        gateway: Gateway, browser: Any, admin: str) -> None:
    """A reader reads the dead letter's message but is offered no Replay; the same request
    sent from its page by hand gets 403."""
    from selenium.webdriver.common.by import By

    letter = submit(gateway.base, admin, "test.flaky",
                    {"key": uuid.uuid4().hex, "fail_times": 5, "kind": "permanent"})
    settled(gateway.base, admin, letter, ("dead",))
    reader = token_for("console-reader", ["reader"])
    signed_in(browser, gateway.base, reader, "/console/dead-letters")
    until(browser, lambda b: "manage:dead_letters" in b.find_element(By.CSS_SELECTOR, ".note").text)
    assert not [b for b in visible(browser, "button") if "Replay" in b.text]
    signed_in(browser, gateway.base, reader, f"/console/messages/{letter}")
    until(browser, lambda b: "dead" in b.find_element(By.ID, "summary").text)
    assert not [b for b in visible(browser, "button") if "Replay" in b.text]
    forged = browser.execute_async_script("""
        var done = arguments[arguments.length - 1];
        fetch('/api/v1/dead-letters/' + encodeURIComponent(arguments[0]) + '/replay', {
          method: 'POST',
          headers: {Authorization: 'Bearer ' + sessionStorage.getItem('integration.console.token')}
        }).then(function (r) { return r.json().then(function (b) { done([r.status, b]); }); });
    """, letter)
    assert forged[0] == 403 and forged[1]["permission"] == "manage:dead_letters"
    assert status_of(gateway.base, admin, letter)["status"] == "dead"


@pytest.fixture(scope="module")
def leftovers(gateway: Gateway, admin: str) -> Iterator[list[str]]:
    """API paths to DELETE when the module ends (the pages after them show their rows)."""
    paths: list[str] = []
    yield paths
    for path in paths:
        http("DELETE", f"{gateway.base}{path}", admin)


def row_named(browser: Any, table: str, name: str) -> Any:
    """The row of table ``table`` whose first cell reads ``name``."""
    from selenium.webdriver.common.by import By

    def find(b: Any) -> Any:
        rows = [r for r in visible(b, f"#{table} tbody tr")
                if r.find_elements(By.TAG_NAME, "td")[0].text.endswith(name)]
        return rows[0] if rows else None

    return until(browser, find)


def press(browser: Any, table: str, name: str, label: str) -> None:
    """Click the button ``label`` in the row of ``name`` (the row as drawn now)."""
    from selenium.webdriver.common.by import By

    until(browser, lambda b: [x for x in row_named(b, table, name).find_elements(
        By.TAG_NAME, "button") if x.text == label and x.is_enabled()])[0].click()


@needs_chromium
def test_breakers_schedules_and_subscriptions_are_managed_from_the_console(
        gateway: Gateway, browser: Any, admin: str, settings: Any, redis_client: Any,
        leftovers: list[str]) -> None:
    """Reset an open breaker; fire a schedule now, then pause it; re-enable a subscription
    that failing deliveries disabled, found by the failing-or-disabled filter."""
    from selenium.webdriver.common.by import By

    from integration.app import build_guards
    from integration.events.webhooks import Webhooks

    breaker = f"test:{uuid.uuid4().hex[:8]}"
    build_guards(settings, redis_client).breaker(breaker).breaker.open()
    signed_in(browser, gateway.base, admin, "/console/breakers")
    assert "open" in row_named(browser, "breakers", breaker).text
    shot(browser, "breakers")
    press(browser, "breakers", breaker, "Reset")
    until(browser, lambda b: b.find_element(By.ID, "confirm").is_displayed())
    browser.find_element(By.ID, "confirm-ok").click()
    until(browser, lambda b: "closed" in row_named(b, "breakers", breaker).text)

    name = f"console-{uuid.uuid4().hex[:6]}"
    status, created = http("POST", f"{gateway.base}/api/v1/schedules", admin,
                           {"name": name, "every": 3600, "type": "event",
                            "data": {"kind": "console"}})
    assert status == 201, created
    leftovers.append(f"/api/v1/schedules/{created['id']}")
    signed_in(browser, gateway.base, admin, "/console/schedules")
    press(browser, "schedules", name, "Fire now")
    until(browser, lambda b: "fired, message" in b.find_element(By.ID, "status").text)
    fired = browser.find_element(By.ID, "status").text.rsplit(" ", 1)[-1]
    assert status_of(gateway.base, admin, fired)["channel"] == "beat"
    press(browser, "schedules", name, "Pause")
    until(browser, lambda b: "paused" in row_named(b, "schedules", name).text)
    assert http("GET", f"{gateway.base}/api/v1/schedules/{name}", admin)[1]["enabled"] is False
    shot(browser, "schedules")

    status, hook = http("POST", f"{gateway.base}/api/v1/subscriptions", admin,
                        {"url": f"http://127.0.0.1:9/{name}", "topics": ["alert.*"]})
    assert status == 201, hook
    leftovers.append(f"/api/v1/subscriptions/{hook['id']}")
    webhooks = Webhooks(redis_client, settings.key_prefix, disable_after=8)
    for _ in range(8):
        webhooks.record(hook["id"], ok=False, error="connection refused")
    signed_in(browser, gateway.base, admin, "/console/subscriptions")
    browser.find_element(By.ID, "subs-troubled").click()
    assert "disabled" in row_named(browser, "subscriptions", name).text
    shot(browser, "subscriptions")
    press(browser, "subscriptions", name, "Re-enable")
    until(browser, lambda b: "Re-enabled" in b.find_element(By.ID, "status").text)
    assert http("GET", f"{gateway.base}/api/v1/subscriptions/{hook['id']}", admin)[1]["enabled"]
    browser.find_element(By.ID, "subs-troubled").click()  # every subscription again
    assert "enabled" in row_named(browser, "subscriptions", name).text.split()


def axe_violations(browser: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current page."""
    browser.execute_script(AXE.read_text())
    violations = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(function (r) { done(r.violations); }, function (e) { done(String(e)); });")
    assert isinstance(violations, list), violations
    return [{"id": v["id"], "impact": v["impact"],
             "nodes": [n["target"] for n in v["nodes"]][:3]}
            for v in violations if v["impact"] in ("serious", "critical")]


@needs_chromium
def test_every_page_passes_axe_and_fits_a_phone_without_horizontal_scroll(
        gateway: Gateway, browser: Any, admin: str) -> None:
    """On each page, desktop and 390 px wide: no serious or critical axe-core violation and
    no horizontal scroll; a screenshot of each."""
    metric = submit(gateway.base, admin, "metric", {"name": "cpu_usage_percent", "value": 12.5,
                                                    "labels": {"host": "axe"}})
    settled(gateway.base, admin, metric, ("succeeded",))
    found: dict[str, Any] = {}
    for path in [*PAGES, f"/console/messages/{metric}", "sign-in"]:
        # Each page loaded once, then looked at in both widths (the layout follows the
        # viewport without a reload).
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        if path == "sign-in":
            browser.execute_script("window.sessionStorage.clear()")
            browser.get(f"{gateway.base}/console/breakers")
            until(browser, lambda b: b.execute_script(
                "return !document.getElementById('sign-in').hidden"))
        else:
            signed_in(browser, gateway.base, admin, path)
            until(browser, lambda b: b.execute_script(
                "return document.querySelectorAll('tbody tr, .note, dl dt').length > 0 ||"
                " !Array.prototype.every.call(document.querySelectorAll('[id$=-empty]'),"
                " function (e) { return e.hidden; })"))
        name = (path.rsplit("/", 1)[-1] if path != f"/console/messages/{metric}"
                else "message") or "live"
        for width in (1280, 390):
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": 900 if width > 400 else 844,
                "deviceScaleFactor": 1, "mobile": width < 400})
            violations = axe_violations(browser)
            if violations:
                found[f"{path} at {width}px"] = violations
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 0:
                found[f"{path} at {width}px"] = f"scrolls {overflow}px sideways"
            shot(browser, f"{name}-{width}")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert found == {}, json.dumps(found, indent=1)
    assert severe_logs(browser) == []


def test_screenshots_stay_out_of_git() -> None:
    """The folder the browser tests write to is ignored."""
    assert ".screenshots/" in (ROOT / ".gitignore").read_text().splitlines()
    assert Path(SCREENSHOTS).name == ".screenshots"
