"""The API's docs page renders its operations in a real browser with no network beyond the
gateway (headless Chromium; Swagger UI is served from its Python package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if shutil.which("/usr/bin/chromedriver") else None)

needs_chromium = pytest.mark.skipif(
    CHROMEDRIVER is None, reason="Chromium is not installed (apt-get install chromium "
    "chromium-driver)")


def test_the_page_runs_only_the_gateways_own_scripts(client: Any) -> None:
    """No inline script and no other origin: the policy says so and the page obeys it."""
    page = client.get("/docs/swagger/")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src" not in policy
    assert "<script>" not in page.get_data(as_text=True)
    assert "http" not in page.get_data(as_text=True)
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/..%2Fflask_swagger_ui.py").status_code == 404


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run",
                     # Every host but the gateway's is unreachable: a CDN script would fail.
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@needs_chromium
def test_the_docs_page_renders_every_operation_offline(served_gateway: str, browser: Any,
                                                       client: Any) -> None:
    """/docs shows each operation of /openapi.json, and the console has no blocked script."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    document = client.get("/openapi.json").get_json()
    expected = sum(1 for item in document["paths"].values() for method in item
                   if method in {"get", "post", "put", "delete", "patch"})
    browser.get(f"{served_gateway}/docs")
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    shown = browser.find_elements(By.CSS_SELECTOR, ".opblock")
    assert len(shown) == expected
    paths = {element.get_attribute("data-path") or element.text
             for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/v1/messages" in paths
    assert document["info"]["title"] in browser.find_element(By.CSS_SELECTOR, ".title").text
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
