"""What every example does around its stages: upload, submit, follow with a progress line, report, download.

    python examples/ptq.py model.pt2 data.npz [out_dir]

The service and the key come from MODELPRESS_URL and MODELPRESS_API_KEY (or ~/.config/modelpress/config.toml).
"""

from __future__ import annotations

import sys

from modelpress import Client, Evaluation


def run_example(stages: list, evaluation: Evaluation | None = None, task: str | None = None) -> int:
    """`task`: a Hugging Face folder's task (its model file is then a .zip or .tar of the folder)."""
    if len(sys.argv) < 3:
        print(f"usage: python {sys.argv[0]} model data [out_dir]", file=sys.stderr)
        return 2
    model_path, data_path = sys.argv[1], sys.argv[2]
    out_dir = sys.argv[3] if len(sys.argv) > 3 else "out"
    with Client() as client:
        model = client.upload_model(model_path, task=task)
        data = client.upload_dataset(data_path)
        job = client.submit(model, data, stages=stages, evaluation=evaluation)
        print(f"job {job.id} submitted")
        job.wait(progress=True)
        if job.status != "succeeded":
            print(f"job {job.status}: {job.error}", file=sys.stderr)
            return 1
        print(client.compare([job]).table())
        for path in job.download(out_dir):
            print(f"downloaded {path}")
    return 0
