"""The ward page end to end in headless Chromium: Kafka in, a bed and an alert on screen,
a click on Acknowledge out to ``icu.alerts.ack.v1``.

Needs Selenium (a dev dependency) and the system Chromium with its driver (Debian:
``apt-get install chromium chromium-driver``); skips with the reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bedside.schemas.messages import ALERT_ACKS_TOPIC, ALERTS_TOPIC, VITALS_TOPIC, decode
from tests.kafka_broker import consume
from tests.test_ward import alert, create_topics, publish, start_ward, vitals

ALERT_ID = "icu1-03:s7:risk:1"


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) of the system Chromium, or None."""
    browser = os.environ.get("BEDSIDE_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("Selenium is not installed (pip install -e '.[dev]')")
    paths = chromium_paths()
    if paths is None:
        pytest.skip(
            "no system Chromium and chromedriver (Debian: apt-get install chromium "
            "chromium-driver; or set BEDSIDE_CHROMIUM)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(paths[1]))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_a_bed_and_an_alert_and_acknowledges_it(
    browser: Any, kafka_broker: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shows
    from selenium.webdriver.support.ui import WebDriverWait

    create_topics(kafka_broker)
    ward, url = start_ward(kafka_broker, tmp_path / "ward.log")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 20)
        wait.until(shows.text_to_be_present_in_element((By.ID, "connection"), "live"))

        publish(kafka_broker, [(VITALS_TOPIC, vitals()), (VITALS_TOPIC, vitals(seconds=60))])
        bed = wait.until(
            shows.presence_of_element_located((By.CSS_SELECTOR, 'article.bed[data-bed="icu1-03"]'))
        )
        assert "HR" in bed.text and "88" in bed.text
        assert bed.find_elements(By.CSS_SELECTOR, "svg.spark polyline"), "no sparkline drawn"

        publish(kafka_broker, [(ALERTS_TOPIC, alert())])
        item = f'li.alert[data-alert-id="{ALERT_ID}"]'
        button = wait.until(shows.element_to_be_clickable((By.CSS_SELECTOR, f"{item} button.ack")))
        assert "in-hospital mortality risk" in browser.find_element(By.CSS_SELECTOR, item).text
        browser.find_element(By.ID, "who").send_keys("nurse.lee")
        browser.find_element(By.CSS_SELECTOR, f"{item} input.note").send_keys("on my way")
        button.click()
        wait.until(
            shows.text_to_be_present_in_element(
                (By.CSS_SELECTOR, f"{item} .ack-status"), "sent by nurse.lee"
            )
        )
        (record,) = consume(kafka_broker, [ALERT_ACKS_TOPIC], expected=1, settle_s=0.3)
        ack = decode(ALERT_ACKS_TOPIC, record.value)
        assert (ack.alert_id, ack.bed, ack.by, ack.note) == (
            ALERT_ID,
            "icu1-03",
            "nurse.lee",
            "on my way",
        )

        # The engine's acknowledged record closes the button.
        publish(kafka_broker, [(ALERTS_TOPIC, alert("acknowledged"))])
        wait.until(
            shows.presence_of_element_located(
                (By.CSS_SELECTOR, f'{item}[data-state="acknowledged"]')
            )
        )
        assert not browser.find_elements(By.CSS_SELECTOR, f"{item} button.ack")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        ward.terminate()
        ward.wait(timeout=15)
