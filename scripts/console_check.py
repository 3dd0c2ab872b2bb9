"""The console in a real browser: headless Chromium, driven by Selenium, against a running steward.

Usage: console_check.py BASE_URL ADMIN_EMAIL ADMIN_PASSWORD ARTIFACT_DIR

Each check prints one line; the first failure saves a screenshot and the browser log under ARTIFACT_DIR, prints
their paths and exits 1. Every page visited is also checked for console errors and CSP violations. At the end the
first load's transfer size and time to interactive are printed (docs/benchmarks.md records them).
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time
import traceback
import urllib.request

from fake_oidc import FakeOIDC
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, ADMIN_EMAIL, ADMIN_PASSWORD, ARTIFACTS = sys.argv[1:5]
PASSWORD = "Console-Check-Password-7"
results = []


# ---- the API, for set-up only (users, MFA); everything checked goes through the browser ----

def call(method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, (json.loads(text) if text else None)


def login_token(email, password):
    status, body = call("POST", "/api/v1/auth/login", {"email": email, "password": password})
    assert status == 200, (status, body)
    return body["accessToken"]


def totp(secret, at=None):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    counter = int((at or time.time()) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def make_user(admin, email, role):
    status, body = call("POST", "/api/v1/auth/register", {"email": email, "password": PASSWORD, "username": email.split("@")[0]})
    assert status == 201, (status, body)
    user_id = body["user"]["id"] if "user" in body else body["id"]
    status, body = call("PUT", f"/api/v1/users/{user_id}/roles", {"roles": [role]}, admin)
    assert status == 200, (status, body)
    return user_id


# ---- the browser ----

def browser(width=1280, height=900, extra=()):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--lang=en-US", "--no-first-run", "--disable-extensions", *extra]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "OFF"})
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    return driver


class Check:
    def __init__(self, driver):
        self.driver = driver
        self.wait = WebDriverWait(driver, 15, ignored_exceptions=[StaleElementReferenceException])
        self.problems = []

    def go(self, path):
        self.driver.get(BASE + path)
        self.ready()

    def ready(self):
        # The shell is up when the app replaced the boot text with a main element holding a heading.
        self.wait.until(lambda d: d.execute_script("return !!document.querySelector('main h1') && !document.querySelector('.boot')"))
        self.wait.until(lambda d: d.execute_script("return !document.querySelector('main .muted') || !/^Loading/.test(document.querySelector('main .muted').textContent)"))

    def js_text(self, css, attribute=None):
        """An element's text (or attribute) read in the page: live regions are re-rendered, so no stale handles."""
        return self.driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? (arguments[1] ? e.getAttribute(arguments[1]) : e.textContent) : null;",
            css, attribute)

    def heading(self):
        return (self.js_text("main h1") or "").strip()

    def find(self, css):
        return self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def click(self, css):
        element = self.wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, css)))
        element.click()
        return element

    def click_text(self, tag, text):
        element = self.wait.until(EC.element_to_be_clickable((By.XPATH, f"//{tag}[normalize-space()='{text}']")))
        element.click()
        return element

    def field(self, label):
        """The control a label names (by its text), as a user finds it."""
        label_element = self.wait.until(EC.presence_of_element_located((By.XPATH, f"//main//label[normalize-space()='{label}']")))
        return self.driver.find_element(By.ID, label_element.get_attribute("for"))

    def type(self, label, text):
        control = self.field(label)
        control.clear()
        control.send_keys(text)
        return control

    def browser_errors(self):
        """Console errors and CSP violations since the last call (Chromium logs both as SEVERE)."""
        found = []
        for entry in self.driver.get_log("browser"):
            message = entry.get("message", "")
            if entry.get("level") == "SEVERE" or "Content Security Policy" in message or "Refused to" in message:
                found.append(message)
        return found


def check(name, fn):
    fn()
    results.append(name)
    print(f"  ok: {name}", flush=True)


def save_artifacts(driver, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)[:60]
    shot = os.path.join(ARTIFACTS, f"{slug}.png")
    log = os.path.join(ARTIFACTS, f"{slug}.browser-log.json")
    try:
        driver.save_screenshot(shot)
        with open(log, "w") as out:
            json.dump(driver.get_log("browser"), out, indent=2)
        with open(os.path.join(ARTIFACTS, f"{slug}.html"), "w") as out:
            out.write(driver.page_source)
    except Exception as error:  # the browser itself may be gone
        print(f"  (could not save artifacts: {error})")
    print(f"  screenshot: {shot}\n  browser log: {log}")


def main():
    admin = login_token(ADMIN_EMAIL, ADMIN_PASSWORD)
    viewer_email, mfa_email, locked_email = "viewer@example.com", "mfa@example.com", "locked@example.com"
    make_user(admin, viewer_email, "viewer")
    make_user(admin, mfa_email, "developer")
    make_user(admin, locked_email, "viewer")
    mfa_token = login_token(mfa_email, PASSWORD)
    status, enrolled = call("POST", "/api/v1/auth/mfa/totp/enroll", {}, mfa_token)
    assert status == 200, (status, enrolled)
    secret = enrolled["secret"]
    status, body = call("POST", "/api/v1/auth/mfa/totp/activate", {"code": totp(secret)}, mfa_token)
    assert status == 200, (status, body)
    # The code just used is spent; the browser signs in with the next step's code.

    # The identity provider the server was configured with (scripts/test-console.sh).
    idp = FakeOIDC(int(os.environ["FAKE_IDP_PORT"]))

    driver = browser()
    c = Check(driver)
    current = "start"
    try:
        # First load: a fresh browser, nothing cached.
        current = "first load"
        started = time.monotonic()
        driver.get(BASE + "/console")
        c.find("input[name=email]")
        interactive_ms = (time.monotonic() - started) * 1000
        transfer = driver.execute_script("""
            const entries = [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')];
            return entries.reduce((sum, e) => sum + (e.transferSize || 0), 0);""")
        nav = driver.execute_script("const n = performance.getEntriesByType('navigation')[0]; return Math.round(n.domContentLoadedEventEnd);")

        def sign_in_page():
            assert c.heading() == "Sign in to Steward", c.heading()
            headers = urllib.request.urlopen(BASE + "/console").headers
            csp = headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
            assert headers["Cache-Control"] == "no-store", headers["Cache-Control"]
        check("the sign-in page loads under a strict CSP and is not cached", sign_in_page)

        current = "wrong password"
        def wrong_password():
            c.type("Email", ADMIN_EMAIL)
            c.type("Password", "not-the-password")
            c.click("form button[type=submit]")
            problem = c.find(".problem")
            assert "Unauthorized" in problem.text and "incorrect" in problem.text, problem.text
        check("a wrong password shows the problem's title", wrong_password)

        current = "admin sign-in"
        def admin_sign_in():
            c.type("Password", ADMIN_PASSWORD)
            c.click("form button[type=submit]")
            c.wait.until(lambda d: c.heading() == "Dashboard")
            c.find("#request-figures")
            c.find("#queue-figures")
            c.find("#webhook-figures")
            cookies = {cookie["name"]: cookie for cookie in driver.get_cookies()}
            session = cookies.get("__Host-steward_session")
            assert session and session["httpOnly"], cookies
            assert driver.execute_script("return document.cookie").find("steward_session") < 0
        check("the admin signs in with the password; the session cookie is HttpOnly; the dashboard shows figures", admin_sign_in)

        current = "dashboard live"
        def dashboard_live():
            c.wait.until(lambda d: c.js_text("#dashboard-updated"))
            first = c.js_text("#dashboard-updated")
            c.wait.until(lambda d: c.js_text("#dashboard-updated") not in ("", first))
        check("the dashboard updates by itself", dashboard_live)

        current = "create skill"
        def create_skill():
            c.go("/console/skills")
            c.click_text("a", "New skill")
            c.wait.until(lambda d: c.heading() == "New skill")
            c.type("Slug", "console-sleep")
            c.type("Name", "Console sleep")
            c.type("Description", "Sleeps for a while, reporting progress.")
            c.type("Tags", "console, demo")
            Select(c.field("Built-in runner")).select_by_value("sleep")
            schema = c.field("Input schema (JSON Schema)")
            schema.clear()
            schema.send_keys('{"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60}, "mode": {"enum": ["fast", "slow"]}}, "required": ["seconds"], "oneOf": []}')
            status = c.find(".schema-status")
            c.wait.until(lambda d: "oneOf" in status.text)
            c.click_text("button", "Create skill")
            problem = c.find(".form-errors .problem")
            assert "input schema" in problem.text.lower(), problem.text
            schema.clear()
            schema.send_keys('{"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60}, "mode": {"enum": ["fast", "slow"]}}, "required": ["seconds"]}')
            c.wait.until(lambda d: "valid" in status.text)
            c.click_text("button", "Create skill")
            c.wait.until(lambda d: c.heading() == "Console sleep")
        check("a skill is created through the form; the schema editor refuses an unsupported keyword before saving", create_skill)

        current = "search skill"
        def search_skill():
            c.go("/console/skills")
            c.type("Search", "reporting progress")
            c.click("form[role=search] button[type=submit]")
            c.wait.until(lambda d: "Console sleep" in (c.js_text("main table") or ""))
        check("full-text search finds the skill by its description", search_skill)

        current = "run skill"
        def run_skill():
            c.go("/console/skills/console-sleep")
            c.click("#run-skill")
            c.wait.until(lambda d: c.heading() == "Run Console sleep")
            c.type("seconds *", "2")
            driver.execute_script("window.__stillHere = true")
            c.click("#start-run")
            c.wait.until(lambda d: c.heading().startswith("Execution"))
            c.find("#execution-progress-text")
            seen = set()
            def progressed(_):
                seen.add(c.js_text("#execution-progress-text"))
                return c.js_text("#execution-progress-text") == "100%"
            WebDriverWait(driver, 30, poll_frequency=0.05).until(progressed)
            assert c.js_text("#execution-progress-text", "data-status") == "succeeded"
            assert len(seen) >= 2, seen
            assert driver.execute_script("return window.__stillHere === true"), "the page reloaded"
            assert "slept" in driver.find_element(By.CSS_SELECTOR, "main").text
        check("the run form starts an execution, and its progress reaches 100% live, without a reload", run_skill)
        execution_url = driver.current_url
        execution_id = execution_url.rstrip("/").split("/")[-1]

        current = "cancel"
        def cancel():
            c.go("/console/skills/console-sleep/run")
            c.type("seconds *", "30")
            c.click("#start-run")
            c.wait.until(lambda d: c.heading().startswith("Execution"))
            c.click("#cancel-execution")
            WebDriverWait(driver, 20).until(lambda d: c.js_text("#execution-progress-text", "data-status") == "cancelled")
        check("a long sleep execution is cancelled from its page", cancel)

        current = "executions list"
        def executions_list():
            c.go("/console/executions")
            Select(c.field("Status")).select_by_value("cancelled")
            c.click("form.filters button[type=submit]")
            c.wait.until(lambda d: "cancelled" in (c.js_text("main table tbody") or ""))
            rows = driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")
            assert all("cancelled" in row.text for row in rows), [row.text for row in rows]
        check("the executions list filters by status", executions_list)

        current = "audit"
        def audit():
            c.go(f"/console/audit?resourceId={execution_id}")
            c.type("Resource id", execution_id)
            c.click("form.filters button[type=submit]")
            c.wait.until(lambda d: "execution.succeeded" in (c.js_text("main table tbody") or ""))
            c.click("#verify-audit")
            verdict = c.find("#audit-verdict .notice")
            assert "intact" in verdict.text, verdict.text
        check("the run is in the audit log, and the chain verifies", audit)

        current = "api key"
        def api_key():
            c.go("/console/api-keys")
            c.type("Name", "console check key")
            c.click("#create-key")
            secret = c.find("#created-key [data-secret]").text
            assert secret.startswith("stw_"), secret
            status, _ = call("GET", "/api/v1/auth/me", token=secret)
            assert status == 403 or status == 200, status
            status, body = call("GET", "/api/v1/skills?limit=1", token=secret)
            assert status == 200, (status, body)
            c.go("/console/api-keys")
            c.wait.until(lambda d: "console check key" in (c.js_text("main table") or ""))
            assert secret not in driver.page_source, "the secret is shown again"
        check("an API key is created, works, and its secret is shown once", api_key)

        current = "pages"
        def pages():
            for path in ["/console", "/console/skills", "/console/executions", "/console/workflows", "/console/schedules",
                         "/console/schedules/new", "/console/webhooks", "/console/users", "/console/api-keys", "/console/audit",
                         "/console/about", "/console/account", f"/console/executions/{execution_id}"]:
                c.go(path)
                assert c.heading() not in ("Not found", "Not allowed"), (path, c.heading())
                assert not driver.find_elements(By.CSS_SELECTOR, "main .problem"), (path, driver.find_element(By.CSS_SELECTOR, "main .problem").text)
            c.go("/console/about")
            facts = c.find("#about-facts").text
            assert "sqlite" in facts and "Pending migrations" in facts, facts
        check("every admin page renders without a problem", pages)

        current = "generated form"
        status, _ = call("POST", "/api/v1/skills", {"slug": "console-form", "name": "Console form", "runner": {"type": "builtin", "name": "echo"},
            "inputSchema": {"type": "object", "required": ["name", "target"], "properties": {
                "name": {"type": "string", "minLength": 1}, "count": {"type": "integer", "minimum": 0},
                "loud": {"type": "boolean"}, "level": {"enum": ["low", "high"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "target": {"type": "object", "required": ["host"], "properties": {"host": {"type": "string"}, "port": {"type": "integer"}}}}}}, admin)
        assert status == 201, status
        def generated_form():
            c.go("/console/skills/console-form/run")
            labels = driver.execute_script("return [...document.querySelectorAll('main form > .schema-form > .object > .field > label, main form > .schema-form > .object > fieldset > legend')].map(e => e.textContent)")
            assert labels[:2] == ["name *", "target"], labels
            c.type("name *", "deploy")
            c.type("count", "3")
            c.field("loud").click()
            Select(c.field("level")).select_by_visible_text("high")
            c.click_text("button", "Add to tags")
            c.click_text("button", "Add to tags")
            c.type("Item 1 *", "a")
            c.type("Item 2 *", "b")
            c.type("port", "8080")
            driver.execute_script("window.__stillHere = true")
            c.click("#start-run")
            problem = c.find(".form-errors .problem")
            assert "target.host" in problem.text and "required" in problem.text, problem.text
            assert driver.execute_script("return window.__stillHere === true")
            c.type("host *", "example.org")
            c.click_text("button", "Edit as JSON")
            raw = json.loads(c.field("Input as JSON").get_attribute("value"))
            expected = {"name": "deploy", "count": 3, "loud": True, "level": "high", "tags": ["a", "b"], "target": {"host": "example.org", "port": 8080}}
            assert raw == expected, raw
            c.type("Input as JSON", json.dumps({**expected, "count": 4}))
            c.click("#start-run")
            c.wait.until(lambda d: c.heading().startswith("Execution"))
            WebDriverWait(driver, 20).until(lambda d: c.js_text("#execution-progress-text", "data-status") == "succeeded")
            blocks = driver.execute_script("return [...document.querySelectorAll('main pre.json')].map(e => e.textContent)")
            assert json.loads(blocks[1]) == {**expected, "count": 4}, blocks
        check("the run form covers strings, numbers, booleans, enums, arrays and nested objects, checks required fields, and has raw JSON as its fallback", generated_form)

        current = "rollback"
        def rollback():
            c.click("#rollback-execution")
            WebDriverWait(driver, 20).until(lambda d: c.js_text("#execution-progress-text", "data-status") == "rolled_back")
        check("a finished execution is rolled back from its page", rollback)

        current = "workflow"
        status, body = call("POST", "/api/v1/workflows", {"slug": "console-flow", "name": "Console flow", "steps": [
            {"id": "build", "skillId": "console-sleep", "input": {"seconds": 1}},
            {"id": "test", "skillId": "console-sleep", "input": {"seconds": 1}, "dependsOn": ["build"]},
            {"id": "lint", "skillId": "console-sleep", "input": {"seconds": 0}, "dependsOn": ["build"]},
            {"id": "ship", "skillId": "console-sleep", "input": {"seconds": 0}, "dependsOn": ["test", "lint"]}]}, admin)
        assert status == 201, (status, body)
        def workflow():
            c.go(f"/console/workflows/{body['id']}")
            assert len(driver.find_elements(By.CSS_SELECTOR, "svg.dag g.node")) == 4
            assert len(driver.find_elements(By.CSS_SELECTOR, "svg.dag path.edge")) == 4
            c.click("#start-workflow-run")
            c.wait.until(lambda d: c.heading().startswith("Run"))
            driver.execute_script("window.__stillHere = true")
            seen = set()
            def finished(_):
                states = driver.execute_script("return [...document.querySelectorAll('svg.dag g.node')].map(g => g.dataset.state)")
                seen.update(states)
                return len(states) == 4 and all(state == "succeeded" for state in states)
            WebDriverWait(driver, 30, poll_frequency=0.1).until(finished)
            assert seen & {"running", "pending"}, seen
            assert driver.execute_script("return window.__stillHere === true"), "the page reloaded"
            c.wait.until(lambda d: c.js_text("#run-progress-text", "data-status") == "succeeded")
        check("a workflow's graph is drawn; a run started from it colours its steps live until all succeed", workflow)

        current = "schedule"
        def schedule():
            c.go("/console/schedules/new")
            c.type("Name", "nightly form")
            Select(c.field("Runs")).select_by_visible_text("Skill: Console sleep")
            c.type("Cron expression", "0 3 * * *")
            c.type("Input (JSON object)", '{"seconds": 0}')
            c.click_text("button", "Create schedule")
            c.wait.until(lambda d: c.heading() == "nightly form")
            c.click("#toggle-schedule")
            c.wait.until(lambda d: c.js_text("#schedule-state") == "paused")
            c.click("#toggle-schedule")
            c.wait.until(lambda d: c.js_text("#schedule-state") == "active")
            c.wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cron-preview li")) == 5)
            c.click("#run-schedule-now")
            c.click("#started-link")
            c.wait.until(lambda d: c.heading().startswith("Execution"))
            WebDriverWait(driver, 20).until(lambda d: c.js_text("#execution-progress-text", "data-status") == "succeeded")
        check("a schedule is created, paused, resumed and run now from the console", schedule)

        current = "webhook"
        def webhook():
            c.go("/console/webhooks")
            c.type("Endpoint URL", "http://127.0.0.1:9/console-hook")
            c.type("Events", "webhook.test, execution.*")
            c.click_text("button", "Add subscription")
            # The outbound guard refuses a loopback endpoint; the form shows the problem with its field.
            problem = c.find(".form-errors .problem")
            assert "private" in problem.text and "url" in problem.text, problem.text
            c.type("Endpoint URL", "https://hooks.example.com/console-hook")
            c.click_text("button", "Add subscription")
            secret = c.find(".secret [data-secret]").text
            assert secret.startswith("whsec_"), secret
            c.wait.until(lambda d: "console-hook" in (c.js_text("main table") or ""))
            driver.find_element(By.PARTIAL_LINK_TEXT, "console-hook").click()
            c.wait.until(lambda d: c.heading().startswith("Webhook"))
            c.click("#ping-webhook")
            c.wait.until(lambda d: "webhook.test" in (c.js_text("main table tbody") or ""))
        check("a webhook subscription refuses a private endpoint, shows its secret once, and a test ping appears among its deliveries", webhook)

        current = "user admin"
        def user_admin():
            c.go("/console/users")
            c.type("Search", locked_email)
            c.click("form[role=search] button[type=submit]")
            c.wait.until(lambda d: locked_email in (c.js_text("main table tbody") or ""))
            driver.find_element(By.LINK_TEXT, locked_email).click()
            c.wait.until(lambda d: c.heading() == locked_email)
            c.field("developer").click()
            c.click_text("button", "Save roles")
            c.wait.until(lambda d: "viewer, developer" in (c.js_text("main dl") or "") or "developer, viewer" in (c.js_text("main dl") or ""))
            status, body = call("GET", f"/api/v1/users?q={locked_email}", token=admin)
            assert sorted(body["items"][0]["roles"]) == ["developer", "viewer"], body
            c.go("/console/users")
            c.type("Search", ADMIN_EMAIL)
            c.click("form[role=search] button[type=submit]")
            c.wait.until(lambda d: ADMIN_EMAIL in (c.js_text("main table tbody") or ""))
            driver.find_element(By.LINK_TEXT, ADMIN_EMAIL).click()
            c.wait.until(lambda d: c.heading() == ADMIN_EMAIL)
            c.wait.until(lambda d: "Chrome" in (c.js_text("main") or "") and "this one" not in (c.js_text("main") or ""))
        check("an admin finds a user, adds a role, and sees a user's sessions", user_admin)

        current = "schedule preview"
        def schedule_preview():
            c.go("/console/schedules/new")
            c.type("Cron expression", "0 9 * * MON-FRI")
            c.type("Time zone", "Europe/Berlin")
            c.wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cron-preview li")) == 5)
            c.type("Cron expression", "61 * * * *")
            c.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cron-preview .problem"))
        check("a new schedule shows its next five fire times, and a bad expression's problem", schedule_preview)

        current = "narrow"
        def narrow():
            driver.set_window_size(360, 800)
            for path in ["/console/executions", "/console/skills", f"/console/executions/{execution_id}"]:
                c.go(path)
                overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 0, (path, overflow)
            c.click(".nav-toggle")
            c.wait.until(lambda d: d.find_element(By.LINK_TEXT, "Audit log").is_displayed())
            driver.set_window_size(1280, 900)
        check("at 360 px wide nothing overflows and the menu opens from its button", narrow)

        current = "contrast"
        def contrast():
            # WCAG contrast of text against the background it sits on, in the light and the dark scheme: 4.5:1 for
            # text, on every kind of text the pages use (body, muted, links, buttons, badges, headers, problems).
            script = """
              const lum = (c) => { const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                                   return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
              const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
              const background = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
                                           if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
              const worst = [];
              for (const el of document.querySelectorAll('main p, main td, main th, main dt, main dd, main label, main a, main button, main .badge, main .muted, header.top a, header.top button, .problem, .notice')) {
                if (!el.offsetParent || !el.textContent.trim()) continue;
                const fg = rgb(getComputedStyle(el).color).slice(0, 3); const bg = background(el);
                const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
                const ratio = (a + 0.05) / (b + 0.05);
                if (ratio < 4.5) worst.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
              }
              return worst;"""
            try:
                for scheme in ("light", "dark"):
                    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
                    for path in ["/console", "/console/executions", f"/console/executions/{execution_id}", "/console/audit", "/console/users"]:
                        c.go(path)
                        low = driver.execute_script(script)
                        assert not low, (scheme, path, low[:5])
            finally:
                driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        check("text contrast is at least 4.5:1 in the light and the dark scheme", contrast)

        current = "keyboard"
        def keyboard():
            c.go("/console/skills")
            # A page puts the focus on its heading, so a keyboard user starts at the content, not the menu.
            focused = driver.switch_to.active_element
            assert focused.tag_name == "h1" and focused.text == "Skills", (focused.tag_name, focused.text)
            focused.send_keys(Keys.TAB)
            focused = driver.switch_to.active_element
            assert focused.text == "New skill", focused.text
            outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), outline
            focused.send_keys(Keys.ENTER)
            c.wait.until(lambda d: c.heading() == "New skill")
        check("keyboard: a page focuses its heading, Tab reaches its action with a visible focus ring, Enter follows it", keyboard)

        current = "maintenance"
        def maintenance():
            status, body = call("PUT", "/api/v1/settings/maintenance.message", {"value": "Upgrade at 18:00 UTC"}, admin)
            assert status == 200, (status, body)
            status, body = call("PUT", "/api/v1/settings/features.webhooks", {"value": False}, admin)
            assert status == 200, (status, body)
            try:
                c.go("/console/skills")
                c.wait.until(lambda d: "Upgrade at 18:00 UTC" in (c.js_text("#maintenance") or ""))
                links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#nav-list a")]
                assert "Webhooks" not in links and "Skills" in links, links
            finally:
                call("DELETE", "/api/v1/settings/maintenance.message", None, admin)
                call("DELETE", "/api/v1/settings/features.webhooks", None, admin)
            c.go("/console/executions")
            c.wait.until(lambda d: not driver.find_elements(By.ID, "maintenance"))
            links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#nav-list a")]
            assert "Webhooks" in links, links
        check("the maintenance message shows above every page, and a feature switched off leaves the menu", maintenance)

        current = "sign out"
        def sign_out():
            cookie = driver.get_cookie("__Host-steward_session")["value"]
            c.click("#sign-out")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
            request = urllib.request.Request(BASE + "/api/v1/auth/me", headers={"Cookie": f"__Host-steward_session={cookie}"})
            try:
                urllib.request.urlopen(request)
                raise AssertionError("the old session cookie still works")
            except urllib.error.HTTPError as error:
                assert error.code == 401, error.code
            driver.get(BASE + "/console/audit")
            c.find("input[name=email]")
        check("signing out ends the session: the console asks to sign in again", sign_out)

        current = "mfa"
        def mfa():
            c.type("Email", mfa_email)
            c.type("Password", PASSWORD)
            c.click("form button[type=submit]")
            c.wait.until(lambda d: c.heading() == "Two-step verification")
            valid = {totp(secret, time.time() + step) for step in (-30, 0, 30)}
            wrong = next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)
            c.type("Code", wrong)
            c.click("form button[type=submit]")
            c.find(".problem")
            assert c.heading() == "Two-step verification"
            c.type("Code", totp(secret, time.time() + 30))
            c.click("form button[type=submit]")
            c.wait.until(lambda d: c.heading() == "Audit log" or c.heading() == "Not allowed")
            c.click("#account-link")
            c.wait.until(lambda d: c.heading() == "My account")
            assert "mfa@example.com" in driver.find_element(By.CSS_SELECTOR, "main").text
            c.find("main table tbody tr")
            c.click("#sign-out")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
        check("an account with MFA signs in with its TOTP step (a wrong code is refused)", mfa)

        current = "viewer"
        def viewer():
            c.type("Email", viewer_email)
            c.type("Password", PASSWORD)
            c.click("form button[type=submit]")
            c.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "header.top nav"))
            nav = driver.find_element(By.CSS_SELECTOR, "header.top nav").text
            for hidden in ["Users", "API keys", "Audit log", "Webhooks"]:
                assert hidden not in nav, (hidden, nav)
            assert "Skills" in nav, nav
            for path in ["/console/users", "/console/audit", "/console/api-keys"]:
                c.go(path)
                assert c.heading() == "Not allowed", (path, c.heading())
                assert "permission" in driver.find_element(By.CSS_SELECTOR, "main .notice").text
            c.go("/console/skills/console-sleep")
            assert not driver.find_elements(By.ID, "run-skill"), "a viewer is offered Run"
            c.click("#sign-out")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
        check("a viewer sees no admin pages, and an admin address says Not allowed", viewer)

        current = "lockout"
        def lockout():
            for _ in range(4):
                c.type("Email", locked_email)
                c.type("Password", "wrong-password-for-lockout")
                c.click("form button[type=submit]")
                c.find(".problem")
            errors = driver.find_element(By.CSS_SELECTOR, ".form-errors").text
            assert "locked" in errors.lower() or "too many" in errors.lower(), errors
        check("repeated wrong passwords show the lockout message", lockout)

        current = "not found"
        def not_found():
            status = urllib.request.urlopen(BASE + "/console/nowhere").status
            assert status == 200
            request = urllib.request.Request(BASE + "/console/assets/0000/app.js")
            try:
                urllib.request.urlopen(request)
                raise AssertionError("an unknown asset version was served")
            except urllib.error.HTTPError as error:
                assert error.code == 404
        check("unknown console addresses get the page; unknown assets get 404", not_found)

        current = "plain http"
        def plain_http():
            # The same server under a name that is not localhost, over plain HTTP: not a secure context, so the
            # Secure cookie would be dropped. The sign-in page says so instead of failing silently.
            other = browser(extra=["--host-resolver-rules=MAP steward.test 127.0.0.1"])
            try:
                port = BASE.rsplit(":", 1)[1]
                other.get(f"http://steward.test:{port}/console")
                notice = WebDriverWait(other, 15).until(lambda d: d.find_elements(By.ID, "insecure-origin"))[0]
                assert "HTTPS" in notice.text and f"localhost:{port}" in notice.text, notice.text
            finally:
                other.quit()
            assert not driver.find_elements(By.ID, "insecure-origin"), "localhost is a secure context"
        check("over plain HTTP from another host name, the sign-in page explains that the session cookie will not be kept", plain_http)

        current = "identity provider"
        def provider_sign_in():
            # A new person at the provider: the console's button goes there and back, and signs them up.
            driver.get(BASE + "/console")
            idp.next_person = {"sub": "1001", "email": "sso-user@corp.example", "email_verified": True, "name": "Sso User"}
            button = c.find("#providers button[data-provider=corp]")
            assert button.text == "Sign in with Corp SSO", button.text
            button.click()
            c.wait.until(lambda d: c.heading() == "Dashboard")
            assert driver.current_url.rstrip("/").endswith("/console"), driver.current_url
            cookies = {cookie["name"]: cookie for cookie in driver.get_cookies()}
            assert "__Host-steward_session" in cookies and "__Host-steward_oauth" not in cookies, cookies
            c.click("#account-link")
            c.wait.until(lambda d: c.heading() == "My account")
            c.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "main tr[data-identity]"))
            row = driver.find_element(By.CSS_SELECTOR, "main tr[data-identity]").text
            assert "Corp SSO" in row and "sso-user@corp.example" in row, row
            c.click("#sign-out")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
        check("a provider's button signs a new person up and in, and their account lists the identity", provider_sign_in)

        current = "identity provider, account exists"
        def provider_account_exists():
            # Someone at the provider with the email of an existing account is not linked to it by email.
            idp.next_person = {"sub": "1002", "email": viewer_email, "email_verified": True, "name": "Not The Viewer"}
            c.click("#providers button[data-provider=corp]")
            c.wait.until(lambda d: c.heading() == "Sign-in did not finish")
            problem = c.find(".problem").text
            assert "already exists" in problem and "link" in problem, problem
            c.click_text("button", "Back to sign-in")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
        check("a provider identity whose email belongs to an account is refused, with what to do instead", provider_account_exists)

        current = "identity provider, link"
        def provider_link():
            # The viewer links the same identity from their account, then signs in with it, then unlinks it.
            c.type("Email", viewer_email)
            c.type("Password", PASSWORD)
            c.click("form button[type=submit]")
            c.wait.until(lambda d: d.find_elements(By.ID, "account-link"))
            c.click("#account-link")
            c.wait.until(lambda d: c.heading() == "My account")
            c.click("main button[data-link=corp]")
            c.wait.until(lambda d: "Linked your corp identity" in (c.js_text("main .notice") or ""))
            assert driver.current_url.endswith("/console/account"), driver.current_url
            c.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "main tr[data-identity]"))
            c.click("#sign-out")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
            c.click("#providers button[data-provider=corp]")
            c.wait.until(lambda d: d.find_elements(By.ID, "account-link"))
            c.click("#account-link")
            c.wait.until(lambda d: c.heading() == "My account")
            assert viewer_email in driver.find_element(By.CSS_SELECTOR, "main").text
            c.click_text("button", "Unlink")
            c.click_text("button", "Confirm unlink")
            c.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "main tr[data-identity]"))
            c.click("#sign-out")
            c.wait.until(lambda d: c.heading() == "Sign in to Steward")
        check("a signed-in user links an identity, signs in with it, and unlinks it", provider_link)

        current = "browser log"
        def clean_log():
            errors = c.browser_errors()
            # Expected, and logged by Chromium as failed loads: the 401s of the first /auth/me and of the wrong-password,
            # locked and wrong-code attempts, the 422 of a bad cron preview and of the refused webhook endpoint.
            expected = [("/api/v1/auth/login -", "401"), ("/api/v1/auth/login -", "423"), ("/api/v1/auth/mfa/verify -", "401"),
                        ("/api/v1/auth/me -", "401"), ("/api/v1/auth/oauth/exchange -", "409"), ("/api/v1/schedules/preview?", "422"), ("/api/v1/webhooks -", "422")]
            unexpected = [e for e in errors if not any(url in e and f"status of {code}" in e for url, code in expected)]
            assert not unexpected, unexpected
        check("no console errors and no CSP violations on any page", clean_log)

        print(f"console: {len(results)} checks passed")
        print(f"first load: {transfer / 1024:.1f} KiB transferred (compressed), interactive in {interactive_ms:.0f} ms "
              f"(DOMContentLoaded at {nav} ms)")
        if transfer > 150 * 1024:
            print("first load is over the 150 KB budget", file=sys.stderr)
            return 1
        return 0
    except (AssertionError, TimeoutException, Exception) as error:
        print(f"FAILED: {current}: {type(error).__name__}: {error}", file=sys.stderr)
        traceback.print_exc()
        save_artifacts(driver, current)
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
