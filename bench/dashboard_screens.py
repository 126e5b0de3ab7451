"""Screenshots of the dashboard with real jobs: starts the service, uploads the digits example, runs a spread of
methods on it, then opens the job and model pages in headless Debian chromium.

    .venv/bin/python -m bench.dashboard_screens [--out bench/results/dashboard]

Needs `apt-get install chromium chromium-driver` and the `test` extra (selenium). Prints each job's figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.live_service import BackendChoice, live_service
from compression.examples import write_digits_example
from modelpress import Client

EVALUATION = {"split": "val", "latency": True, "latency_batch_sizes": [1, 32], "compile": True}
FINETUNE = {"steps": 150, "batch_size": 64, "lr": 1e-4}
STAGES = {
    "int8 (default)": [{"method": "ptq"}],
    "int4 weights per channel": [{"method": "ptq", "weights": {"bits": 4}, "activations": None}],
    "int3 weights per group": [{"method": "ptq", "weights": {"bits": 3, "granularity": "per_group",
                                                             "group_size": 16}, "activations": None}],
    "fp16 weights": [{"method": "ptq", "weights": {"dtype": "fp16"}, "activations": None}],
    "structured prune 50% -> int8": [{"method": "prune", "kind": "structured", "sparsity": 0.5,
                                      "finetune": FINETUNE}, {"method": "ptq"}],
    "iPQ + int8": [{"method": "ipq", "centroid_dtype": "int8", "training": FINETUNE}],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/dashboard"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, live_service(BackendChoice("sqlite")) as service:
        model_path, dataset_path = write_digits_example(Path(tmp))
        with Client(service.base_url, service.api_key) as client:
            model, dataset = client.upload_model(model_path), client.upload_dataset(dataset_path)
            jobs = {name: client.submit(model, dataset, stages=stages, evaluation=EVALUATION)
                    for name, stages in STAGES.items()}
            for name, job in jobs.items():
                job.wait(timeout=1800)
                final = job.metrics.get("final", {})
                print(f"| {name} | {job.status} | {final.get('accuracy')} | {final.get('size_bytes')} | "
                      f"{(final.get('latency_ms') or {}).get('32')} |", flush=True)
        _screenshots(service, model.id, jobs["int8 (default)"].id, args.out)
    print(f"screenshots in {args.out}")


def _screenshots(service, model_id: str, job_id: str, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.e2e.browser import start_browser
    driver = start_browser()
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(f"{service.base_url}/ui/")
        wait.until(EC.presence_of_element_located((By.ID, "api-key"))).send_keys(service.api_key)
        driver.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        wait.until(EC.presence_of_element_located((By.XPATH, "//h1[text()='Jobs']")))
        driver.save_screenshot(str(out / "jobs.png"))
        for page, element, name in ((f"#/models/{model_id}", "pareto-bytes", "model-pareto.png"),
                                    (f"#/jobs/{job_id}", "job", "job.png")):
            driver.get(f"{service.base_url}/ui/{page}")
            wait.until(EC.presence_of_element_located((By.ID, element)))
            time.sleep(0.5)
            driver.save_screenshot(str(out / name))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
