"""Where the bytes of PESTO's fp32 upload and of its default int8 `.pt2` go (the issue-10 size target, 3.5x, is
missed at 2.7x): the weights, the program's JSON, the sample inputs and the zip's own headers, each as stored
(deflated) in the archive. Runs the service's default `ptq` in-process.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.real_models.pt2_composition
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from bench.real_models import cases
from compression.context import RunContext
from compression.pipeline import run_pipeline
from compression.specs import PTQSpec
from compression.specs.common import EvaluationSpec

ZIP_ENTRY_OVERHEAD = 30 + 46  # a local header and a central-directory record, before the name (twice) and extras


def composition(path: Path) -> dict[str, int]:
    parts = {"tensors": 0, "program json": 0, "sample inputs": 0, "other files": 0, "zip headers": 0}
    with zipfile.ZipFile(path) as archive:
        for entry in archive.infolist():
            name = entry.filename.split("/", 1)[-1]
            part = ("tensors" if name.startswith(("data/weights/weight_", "data/constants/constant"))
                    else "program json" if name.startswith("models/") else
                    "sample inputs" if name.startswith("data/sample_inputs/") else "other files")
            parts[part] += entry.compress_size
            parts["zip headers"] += ZIP_ENTRY_OVERHEAD + 2 * len(entry.filename) + len(entry.extra)
    return parts


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pt2_composition_"))
    case = cases.pesto_case(workdir, {"train": 256, "val": 64})
    result = run_pipeline(case.upload, case.dataset, [PTQSpec()], EvaluationSpec(latency=False), RunContext(),
                          workdir / "ptq")
    int8 = next(a.path for a in result.stages[0].artifacts if a.name.endswith(".pt2"))
    for label, path in (("fp32 upload", case.upload), ("int8 .pt2", int8)):
        parts = composition(path)
        print(f"{label}: {path.stat().st_size:,} bytes: " + ", ".join(f"{k} {v:,}" for k, v in parts.items()))
    print(f"ratio {case.upload.stat().st_size / int8.stat().st_size:.2f}x; 3.5x needs the int8 file at "
          f"{case.upload.stat().st_size / 3.5:,.0f} bytes")


if __name__ == "__main__":
    main()
