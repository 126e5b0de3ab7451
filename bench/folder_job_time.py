"""Wall time of a default int8 job on a Hugging Face folder, in-process through the worker's folder path
(`run_folder_pipeline`): a BERT encoder of `--layers` layers (hidden 32, the tests' tokenizer), one job to warm the
process, then `--jobs` timed. Most of such a job is torch.export and program loading, not arithmetic, so this is
what the export-count work is measured with. To compare two versions, run each from its own checkout, alternating:

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python -m bench.folder_job_time [--layers 6] [--jobs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, jsonl_bytes, zip_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="modelpress-folder-job-"))
    folder = bert_folder(directory / "bert", None, layers=args.layers)
    (directory / "m.zip").write_bytes(zip_bytes(folder))
    (directory / "d.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:48], "val": CORPUS[48:]}, None))

    def job(index: int) -> float:
        started = time.monotonic()
        run_folder_pipeline(directory / "m.zip", directory / "d.jsonl", "feature-extraction", [PTQSpec()],
                            EvaluationSpec(latency=False), RunContext(), directory / f"work{index}")
        return time.monotonic() - started

    job(0)  # imports, first traces
    seconds = sorted(job(index) for index in range(1, args.jobs + 1))
    print(f"default int8 job, {args.layers}-layer BERT folder: {', '.join(f'{s:.2f}' for s in seconds)} s "
          f"(median {seconds[len(seconds) // 2]:.2f}); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
