"""The job pipeline of a causal-LM folder: metrics before and after, and a killed run resuming mid-model from the
per-block checkpoints kept by the runner."""

import json

import pytest

from compression.context import Cancelled, RunContext
from compression.llm.pipeline import run_llm_pipeline
from compression.specs import EvaluationSpec, LLMPTQSpec
from tests.hf_folders import (  # noqa: F401 (fixture)
    CORPUS,
    gpt1_folder,
    gpt2_folder,
    jsonl_bytes,
    llama_dir,
    zip_bytes,
)

SPEC = LLMPTQSpec(algorithm="gptq", group_size=32, calibration={"samples": 8, "sequence_length": 32},
                  evaluation={"context_length": 32, "generation_tokens": 0})


@pytest.fixture
def inputs(tmp_path, llama_dir):
    (tmp_path / "m.zip").write_bytes(zip_bytes(llama_dir))
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:50], "val": CORPUS[50:]}))
    return tmp_path / "m.zip", tmp_path / "d.jsonl"


def test_a_killed_run_resumes_from_the_block_it_reached(inputs, tmp_path):
    store, events = {}, []

    def stop_after_first_block():
        return "killed" if any(e.phase == "quantize" and e.step == 1 for e in events) else None

    killed = RunContext(report=events.append, should_stop=stop_after_first_block,
                        save_checkpoint=store.__setitem__, load_checkpoint=store.get)
    with pytest.raises(Cancelled):
        run_llm_pipeline(*inputs, [SPEC], EvaluationSpec(), killed, tmp_path / "first")
    assert list(store) == ["0:llm_ptq/block_0"]

    progress = []
    resumed = RunContext(report=progress.append, save_checkpoint=store.__setitem__, load_checkpoint=store.get)
    result = run_llm_pipeline(*inputs, [SPEC], EvaluationSpec(), resumed, tmp_path / "second")
    metrics = result.stages[0].metrics
    assert metrics["method_metrics"]["resumed_blocks"] == 1 and sorted(store) == ["0:llm_ptq/block_0",
                                                                                  "0:llm_ptq/block_1"]
    assert [e.step for e in progress if e.phase == "quantize"] == [0, 1, 2]

    fresh = run_llm_pipeline(*inputs, [SPEC], EvaluationSpec(), RunContext(), tmp_path / "third")
    assert fresh.stages[0].metrics["perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-5)
    assert metrics["perplexity"] < result.baseline["perplexity"] * 1.05
    assert result.stages[0].artifacts[0].kind == "model.hf_folder"


def test_missing_splits_fail_with_the_reason(inputs, tmp_path):
    with pytest.raises(ValueError, match="evaluation split 'test'"):
        run_llm_pipeline(*inputs, [SPEC], EvaluationSpec(split="test"), RunContext(), tmp_path / "a")
    with pytest.raises(ValueError, match="calibrates on the 'calib' split"):
        run_llm_pipeline(*inputs, [SPEC], EvaluationSpec(), RunContext(), tmp_path / "b", train_split="calib")


@pytest.mark.parametrize("model_type, make_folder", [("gpt2", gpt2_folder), ("openai-gpt", gpt1_folder)])
def test_a_gpt2_model_is_compressed_as_its_opt_rewrite(inputs, tmp_path, model_type, make_folder):
    # GPT-2's Conv1D blocks hold no nn.Linear: the job used to refuse it. Now it quantizes the OPT model that
    # computes the same function, and the written folder (loaded back with transformers for the metrics) is OPT's.
    # GPT-1's (post-norm) was refused the same way until 2026-12-06 ("GPT-1's Conv1D blocks").
    (tmp_path / "gpt2.zip").write_bytes(zip_bytes(make_folder(tmp_path / "gpt2")))
    result = run_llm_pipeline(tmp_path / "gpt2.zip", inputs[1], [SPEC], EvaluationSpec(), RunContext(),
                              tmp_path / "a")
    assert result.baseline["rewritten_as"]["to"] == "opt" and result.baseline["rewritten_as"]["max_output_gap"] < 1e-5
    assert result.baseline["rewritten_as"]["from"] == model_type
    metrics = result.stages[0].metrics
    assert metrics["perplexity"] == pytest.approx(result.baseline["perplexity"], rel=0.05)
    assert metrics["method_metrics"]["blocks"] == 2 and metrics["compression_ratio"] > 2
    folder = tmp_path / "a" / "0_llm_ptq" / "model"
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["OPTForCausalLM"]
