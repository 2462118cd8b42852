"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromium-driver (docs/dashboard.md).

A daemon on one simulated GPU lent in halves (two lanes) serves /ui/ on TCP. The test
signs in with the admin token, starts leases with the CLI and checks that the page
shows each within a second, that an expiry turns up, that the queue shows a waiting
request, that without the token nothing is served, and that the page follows the
daemon through a restart. Screenshots go to the test log
folder ($ZEROGPU_TEST_LOG_DIR, else build-logs/dashboard/); docs/dashboard.png is one
of them.
"""
import os
import pathlib
import subprocess
import time

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from conftest import BUILD, ROOT, ZEROGPU, free_tcp_port, visitor_token

ADMIN = "dashboard-admin-token-0123456789abcdef"
SECRET = "dashboard visitor secret of quite some length"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SEEN_WITHIN_S = 1.0
LOG_DIR = pathlib.Path(os.environ.get("ZEROGPU_TEST_LOG_DIR", ROOT / "build-logs")) / "dashboard"


def screenshot(driver, name):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"{BUILD.name}-{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.fixture
def browser(tmp_path):
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "Debian's chromium and chromium-driver are needed: run scripts/install-deps"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    # The driver is named: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=opts)
    driver.set_window_size(1280, 800)
    yield driver
    driver.quit()


def wait_for(what, check, timeout=10.0):
    """Polls check() until it returns something true; returns (it, seconds taken)."""
    t0 = time.monotonic()
    while True:
        try:
            got = check()
        except WebDriverException:
            got = None
        if got:
            return got, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"the page never showed {what}"
        time.sleep(0.02)


def run_cli(daemon, *args):
    """zerogpu run in the background, on the daemon's Unix socket."""
    return subprocess.Popen([str(ZEROGPU), "--socket", str(daemon.socket), "run", "-q", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def held_ids(daemon):
    return {l["id"]: l for l in daemon.get("/v1/leases")[1]["leases"]}


def wait_granted(daemon, app, timeout=10.0):
    """The lease app holds, as the daemon says, and when the test learnt of it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lease in held_ids(daemon).values():
            if lease["app"] == app:
                return lease, time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"{app} was never granted")


def texts(driver, selector):
    """The text of each element selector finds, read at one instant: the page redraws
    every second, so elements found earlier may be gone."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);", selector)


def lease_on_page(driver, lease_id):
    return (texts(driver, f'#timeline rect[data-lease="{lease_id}"]') and
            texts(driver, f'#leases tr[data-lease="{lease_id}"]'))


def refused(driver, url):
    """Whether the browser, opening url, gets the daemon's 401 and nothing else."""
    driver.get(url)
    text = driver.find_element(By.TAG_NAME, "body").text
    return '"code":"unauthorized"' in text and "EventSource" not in text


def counter(driver, name):
    return int(texts(driver, f"#counter-{name}")[0])


def test_the_dashboard_shows_leases_the_queue_and_expiries(make_daemon, browser):
    port = free_tcp_port()
    d = make_daemon("--simulate", "1x80G", "--split", "2", "--gate", "off",
                    "--listen", f"127.0.0.1:{port}", "--token", ADMIN,
                    "--grace", "0.5", "--visitor-secret", SECRET)
    base = f"http://127.0.0.1:{port}"

    # Without the token: the token page, and nothing of the dashboard.
    browser.get(base + "/ui/")
    assert browser.find_elements(By.ID, "token") and not browser.find_elements(By.ID, "timeline")
    for path in ("/ui/app.js", "/v1/events", "/v1/status"):
        assert refused(browser, base + path), path
    browser.get(base + "/ui/")
    browser.find_element(By.ID, "token").send_keys("not-the-token-0123456789abcdef")
    browser.find_element(By.ID, "sign-in").click()
    wait_for("the token page again, saying why", lambda: browser.find_elements(By.ID, "wrong-token"))
    assert not browser.find_elements(By.ID, "timeline")

    # Signed in with the token page.
    browser.find_element(By.ID, "token").send_keys(ADMIN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for("the live stream", lambda: texts(browser, "#link") == ["live"])
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == ["zerogpu_ui"] and cookies[0]["httpOnly"]

    # A lease from the CLI shows on its lane and in the table within a second.
    pro = visitor_token("ada", "pro", secret=SECRET)
    alpha = run_cli(d, "-d", "60", "--app", "alpha", "--visitor-token", pro, "--", "sleep", "60")
    lease_a, granted_at = wait_granted(d, "alpha")
    _, took = wait_for("alpha's lease", lambda: lease_on_page(browser, lease_a["id"]))
    seen_after = time.monotonic() - granted_at
    assert seen_after < SEEN_WITHIN_S, f"alpha shown {seen_after:.3f} s after its grant"
    row = texts(browser, f'#leases tr[data-lease="{lease_a["id"]}"]')[0]
    assert "alpha" in row and "pro" in row and "ada" in row

    # The other half goes to beta for 2 s, running past it: an expiry.
    beta = run_cli(d, "-d", "2", "--app", "beta", "--visitor-ip", "10.9.8.7", "--", "sleep", "60")
    lease_b, granted_at = wait_granted(d, "beta")
    wait_for("beta's lease", lambda: lease_on_page(browser, lease_b["id"]))
    assert time.monotonic() - granted_at < SEEN_WITHIN_S

    # The GPU is full: gamma waits, and the queue says so.
    gamma = run_cli(d, "-d", "30", "--app", "gamma", "--visitor-token", visitor_token("bo", "free", secret=SECRET),
                    "--", "sleep", "30")
    queued, _ = wait_for("gamma in the queue", lambda: [
        r for r in texts(browser, "#queue tbody tr") if "gamma" in r])
    assert "no GPU free" in queued[0] and "free" in queued[0]
    assert counter(browser, "waiting") == 1 and counter(browser, "held") == 2
    screenshot(browser, "last-hour")
    # The last minute, closer: the timeline's range buttons.
    browser.execute_script("[...document.querySelectorAll('#ranges button')]"
                           ".find((b) => b.textContent === '1 min').click()")
    wait_for("the last minute", lambda: "−10 s" in "".join(texts(browser, "#timeline text")))
    time.sleep(0.3)  # a few clock ticks on the page: time left, time waited
    shot = screenshot(browser, "leases-and-queue")

    # beta's deadline passes: marked expired, then killed after the grace and counted;
    # gamma takes its half.
    wait_for("beta expired", lambda: "expired" in "".join(
        texts(browser, f'#leases tr[data-lease="{lease_b["id"]}"]')))
    wait_for("the expiry counted", lambda: counter(browser, "expiries") == 1 and counter(browser, "kills") == 1)
    assert beta.wait(timeout=10) == 124  # zerogpu run: the lease expired, COMMAND killed
    wait_for("beta's bar ended, marked expired", lambda: texts(
        browser, f'#timeline rect.ended.expired[data-lease="{lease_b["id"]}"]'))
    lease_c, granted_at = wait_granted(d, "gamma")
    wait_for("gamma's lease", lambda: lease_on_page(browser, lease_c["id"]))
    assert time.monotonic() - granted_at < SEEN_WITHIN_S
    wait_for("an empty queue", lambda: browser.execute_script(
        "return !document.getElementById('queue-empty').hidden"))

    # Today's usage per app, and the visitor closest to the quota (beta's: 2.5 s charged).
    wait_for("beta's usage", lambda: [t for t in texts(browser, '#usage tr[data-app="beta"]')
                                      if "0.0 s" not in t])
    wait_for("beta's visitor", lambda: texts(browser, '#visitors tr[data-visitor="ip:10.9.8.7"]'))
    shot_after = screenshot(browser, "after-expiry")

    # A phone's width: one column, nothing wider than the screen.
    browser.set_window_size(390, 844)
    time.sleep(0.3)
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone's screen"
    screenshot(browser, "phone")
    browser.set_window_size(1280, 800)

    # The daemon restarts: the page says so, and follows the new run by itself.
    for p in (alpha, gamma):
        p.kill()
        p.wait()
    assert d.stop() == 0
    wait_for("the stream lost", lambda: texts(browser, "#link") == ["reconnecting…"])
    d.start()
    wait_for("the new run", lambda: texts(browser, "#link") == ["live"] and counter(browser, "grants") == 0)
    delta = run_cli(d, "-d", "30", "--app", "delta", "--", "sleep", "30")
    lease_d, granted_at = wait_granted(d, "delta")
    wait_for("delta's lease", lambda: lease_on_page(browser, lease_d["id"]))
    assert time.monotonic() - granted_at < SEEN_WITHIN_S

    # Signed out: nothing is served any more.
    browser.find_element(By.CSS_SELECTOR, "#logout button").click()
    wait_for("the token page", lambda: browser.find_elements(By.ID, "token"))
    assert refused(browser, base + "/v1/events")

    delta.kill()
    delta.wait()
    assert shot.stat().st_size > 10_000 and shot_after.stat().st_size > 10_000
