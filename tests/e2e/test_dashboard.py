"""The dashboard in a real headless browser against the real API and worker: sign in, submit a job from the
form, watch its progress reach the end, open the model's Pareto plot. Screenshots go to test-screenshots/."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.browser import screenshot, start_browser

pytestmark = [pytest.mark.e2e, pytest.mark.one_backend]


@pytest.fixture
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def test_sign_in_submit_watch_progress_and_open_the_pareto_plot(service, fresh_tenant, browser):
    wait = WebDriverWait(browser, 30)
    browser.get(f"{service.base_url}/ui")
    wrong = wait.until(EC.presence_of_element_located((By.ID, "api-key")))
    wrong.send_keys("mp_not_a_key")
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "error"), "not accepted"))

    key_input = browser.find_element(By.ID, "api-key")
    key_input.clear()
    key_input.send_keys(fresh_tenant["key"])
    browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
    wait.until(EC.presence_of_element_located((By.XPATH, "//h1[text()='Jobs']")))

    browser.get(f"{service.base_url}/ui/#/submit")
    method = Select(wait.until(EC.presence_of_element_located((By.ID, "method-0"))))
    method.select_by_value("ptq")
    wait.until(EC.presence_of_element_located((By.ID, "field-calibration_samples")))
    browser.find_element(By.ID, "field-sensitivity").click()  # the general path, which reports every layer
    Select(browser.find_element(By.ID, "model")).select_by_value(fresh_tenant["model"])
    Select(browser.find_element(By.ID, "dataset")).select_by_value(fresh_tenant["dataset"])
    evaluation = browser.find_element(By.ID, "evaluation")
    evaluation.clear()
    evaluation.send_keys('{"split": "val", "latency": true, "latency_batch_sizes": [32], "compile": false}')
    browser.find_element(By.ID, "submit").click()

    job = wait.until(EC.presence_of_element_located((By.ID, "job")))
    assert browser.find_elements(By.CSS_SELECTOR, "[role=progressbar]")
    screenshot(browser, "job-running")
    # The page re-renders every second while the job runs, so the status is read by script, not by a held element.
    job_status = "return document.getElementById('job') && document.getElementById('job').dataset.status"
    WebDriverWait(browser, 300, poll_frequency=0.5).until(
        lambda driver: driver.execute_script(job_status) in ("succeeded", "failed"))
    assert browser.execute_script(job_status) == "succeeded", browser.find_element(By.ID, "job").text
    assert browser.find_element(By.CSS_SELECTOR, "[role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert browser.find_elements(By.CSS_SELECTOR, "button.download"), "the finished job lists artifacts"
    assert browser.find_elements(By.CSS_SELECTOR, "svg.plot rect.bar"), "the PTQ stage charts its layers' sensitivity"
    screenshot(browser, "job-done")

    browser.find_element(By.LINK_TEXT, fresh_tenant["model"]).click()
    plot = wait.until(EC.presence_of_element_located((By.ID, "pareto-bytes")))
    points = plot.find_elements(By.TAG_NAME, "circle")
    assert len(points) == 2, "the job and the uploaded model"
    assert plot.find_elements(By.CSS_SELECTOR, "circle.baseline")
    assert browser.find_element(By.ID, "pareto-latency").find_elements(By.TAG_NAME, "circle")
    screenshot(browser, "model-pareto")
