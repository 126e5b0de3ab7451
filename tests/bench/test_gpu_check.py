"""The GPU check (bench/gpu_check.py) on a machine without CUDA: it says so and exits cleanly; its job spec is one
the service accepts."""

import torch
from pydantic import TypeAdapter

from bench.gpu_check import main, stages


def test_without_cuda_it_says_so_and_exits_cleanly(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU (or CUDA)
    assert main([]) == 0
    assert "gpu-check: SKIPPED: no CUDA device visible here" in capsys.readouterr().out


def test_its_job_runs_kd_qat_ipq_and_int8_with_mixed_precision():
    from compression.specs import StageSpec
    parsed = TypeAdapter(list[StageSpec]).validate_python(stages(steps=10))
    assert [stage.method for stage in parsed] == ["kd", "qat", "ipq", "ptq"]
    assert all(stage.training.mixed_precision for stage in parsed[:3])
