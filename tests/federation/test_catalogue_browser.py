"""The catalogue page in a real headless browser (Debian's chromium, driven by Selenium).

The site serves three images, two of whose titles are HTML meant to run
script, and holds a fourth that the admin withdrew. In the browser: the
page loads and lists the three available images (the Show menu brings the
withdrawn one), typing in the filter box narrows the table, a column header
sorts it, the endorser is named with the DN on hover, clicking an image
opens its page with its checksum and endorser, and the hostile titles are
text: no element is injected and ``alert`` is never called (hooks installed
before any page script record every call, and every Content-Security-Policy
violation). Skipped only when chromium or
chromedriver is not installed (`.ci/run` installs both).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.serving import ServeThread, available_site, image_data, site_world
from tests.support.site import ENDORSER_DN, World, image_uuid

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(2)>'
WAIT = 10.0
PAGE_HOOKS = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', (e) => {"
    "  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);"
    "});"
    "window.__alerts = [];"
    "for (const name of ['alert', 'confirm', 'prompt']) {"
    "  window[name] = (message) => { window.__alerts.push(name + ':' + String(message)); };"
    "}"
)


def _tools() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(
            name
            for name, path in (("chromium", chromium), ("chromedriver", driver))
            if path is None
        )
        pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver)")
    return chromium, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Iterator[World]:
    with site_world(tmp_path_factory.mktemp("browser"), now) as world:
        world.image_sizes[3] = 2 * 1024 * 1024
        available_site(
            world,
            images=(1, 2, 3, 4),
            titles={1: XSS_SCRIPT, 2: XSS_ATTR, 3: "AlmaLinux 9 worker node"},
        )
        assert world.vmic("withdraw", image_uuid(4)) == 0
        yield world


@pytest.fixture(scope="module")
def server(site: World) -> Iterator[ServeThread]:
    with ServeThread(site.home) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    chromium, driver_path = _tools()
    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    driver = Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_HOOKS})
        yield driver
    finally:
        driver.quit()


def _open(browser: Chrome, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _visible_rows(browser: Chrome) -> list[str]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#images tbody tr")
    return [str(r.get_attribute("data-image")) for r in rows if r.is_displayed()]


def _no_alerts(browser: Chrome) -> None:
    assert browser.execute_script("return window.__alerts") == []
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text


def _no_policy_violations(browser: Chrome) -> None:
    """The page's own style and script ran under its Content-Security-Policy."""
    assert browser.execute_script("return window.__violations") == []


def test_the_catalogue_lists_the_images(browser: Chrome, server: ServeThread) -> None:
    _open(browser, server.url + "/")
    assert browser.title == "vmic image catalogue"
    assert sorted(_visible_rows(browser)) == [image_uuid(n) for n in (1, 2, 3)]
    assert browser.find_element(By.ID, "shown").text == "3"
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#images thead th")]
    for column in ("Title", "Endorser", "List", "OS", "Arch", "Size", "State", "Shareable"):
        assert any(h.startswith(column) for h in headers), (column, headers)
    _no_policy_violations(browser)


def test_the_show_menu_brings_images_in_every_state(browser: Chrome, server: ServeThread) -> None:
    _open(browser, server.url + "/")
    assert browser.find_element(By.ID, "other-states").is_displayed()
    Select(browser.find_element(By.ID, "state")).select_by_value("all")
    browser.find_element(By.CSS_SELECTOR, "form.filter button[type=submit]").click()
    WebDriverWait(browser, WAIT).until(lambda d: "state=all" in d.current_url)
    WebDriverWait(browser, WAIT).until(lambda d: len(_visible_rows(d)) == 4)
    assert browser.find_element(By.ID, "shown").text == "4"
    menu = Select(browser.find_element(By.ID, "state"))
    assert menu.first_selected_option.get_attribute("value") == "all"
    _no_policy_violations(browser)


def test_the_endorser_is_named_with_the_dn_on_hover(browser: Chrome, server: ServeThread) -> None:
    _open(browser, server.url + "/")
    name = browser.find_element(
        By.CSS_SELECTOR, f'#images tbody tr[data-image="{image_uuid(3)}"] td.dn span'
    )
    assert name.text == "Jane Endorser"
    assert name.get_attribute("title") == ENDORSER_DN


def test_typing_in_the_filter_narrows_the_table(browser: Chrome, server: ServeThread) -> None:
    _open(browser, server.url + "/")
    box = browser.find_element(By.ID, "filter")
    box.send_keys("worker")
    WebDriverWait(browser, WAIT).until(lambda d: _visible_rows(d) == [image_uuid(3)])
    assert browser.find_element(By.ID, "shown").text == "1"
    box.clear()
    box.send_keys("no such image anywhere")
    WebDriverWait(browser, WAIT).until(lambda d: _visible_rows(d) == [])
    assert browser.find_element(By.ID, "empty").is_displayed()
    box.clear()
    box.send_keys(" ")  # clear() sends no input event; a keystroke does
    WebDriverWait(browser, WAIT).until(lambda d: len(_visible_rows(d)) == 3)
    _no_alerts(browser)


def test_a_column_header_sorts_the_table(browser: Chrome, server: ServeThread) -> None:
    _open(browser, server.url + "/")
    size = browser.find_element(By.CSS_SELECTOR, "#images thead th[data-type=number] a")
    size.click()  # ascending
    size.click()  # descending: the 2 MiB image first
    WebDriverWait(browser, WAIT).until(lambda d: _visible_rows(d)[0] == image_uuid(3))
    assert browser.current_url.rstrip("/") == server.url  # sorted in place, no reload
    header = browser.find_element(By.CSS_SELECTOR, "#images thead th[data-type=number]")
    assert header.get_attribute("aria-sort") == "descending"


def test_clicking_an_image_opens_its_page(
    browser: Chrome, server: ServeThread, site: World
) -> None:
    _open(browser, server.url + "/")
    browser.find_element(By.LINK_TEXT, "AlmaLinux 9 worker node").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.current_url.endswith(image_uuid(3)))
    text = browser.find_element(By.TAG_NAME, "body").text
    assert hashlib.sha512(image_data(site, 3)).hexdigest() in text
    assert ENDORSER_DN in text
    assert "img-3.raw" in text
    _no_policy_violations(browser)


def test_html_in_titles_is_shown_as_text(browser: Chrome, server: ServeThread) -> None:
    _open(browser, server.url + "/")
    links = {
        str(a.get_attribute("href")).rsplit("/", 1)[-1]: a.text
        for a in browser.find_elements(By.CSS_SELECTOR, "#images tbody td:first-child a")
    }
    assert links[image_uuid(1)] == XSS_SCRIPT
    assert links[image_uuid(2)] == XSS_ATTR
    assert browser.find_elements(By.CSS_SELECTOR, "img, iframe, object, embed") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own
    _no_alerts(browser)
    for n, title in ((1, XSS_SCRIPT), (2, XSS_ATTR)):
        _open(browser, f"{server.url}/image/{image_uuid(n)}")
        assert browser.find_element(By.TAG_NAME, "h1").text == title
        assert browser.find_elements(By.CSS_SELECTOR, "img, script") == []
        _no_alerts(browser)


def test_a_screenshot_of_the_catalogue_is_a_png(
    browser: Chrome, server: ServeThread, tmp_path: Path
) -> None:
    _open(browser, server.url + "/")
    shot = tmp_path / "catalogue.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
