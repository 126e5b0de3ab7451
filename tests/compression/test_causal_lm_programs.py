"""A causal LM uploaded as a Hugging Face folder runs every method but llm_ptq on its exported program: its text is
labelled with each position's next token, so accuracy is next-token accuracy and the metrics give the perplexity
transformers computes."""

import json
import math

import numpy as np
import pytest
import torch

from compression.archive.jsonl import TextSplit
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.formats import hf_folder
from compression.hf_program import folder_to_program, load_folder_model, next_token_labels
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, LLMPTQSpec, PruneSpec, PTQSpec
from tests.hf_folders import CORPUS, gpt2_folder, llama_folder, zip_bytes

TEXTS = {"train": CORPUS[:24], "val": ["the cat sees the ball", "the dog", *CORPUS[30:36]]}


def test_each_position_is_labelled_with_the_token_after_it():
    ids = np.array([[5, 6, 7, 1], [8, 9, 1, 1]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert next_token_labels(ids, mask).tolist() == [[6, 7, -100, -100], [9, -100, -100, -100]]


def test_the_program_gives_transformers_logits_and_its_perplexity(tmp_path):
    folder = llama_folder(tmp_path / "llama")
    splits = {name: TextSplit(len(texts), texts) for name, texts in TEXTS.items()}
    folder_to_program(folder, "causal-lm", splits, tmp_path / "m.pt2", tmp_path / "d.npz")
    dataset = Dataset.load(tmp_path / "d.npz", ["input_ids", "attention_mask"])
    dataset.label_per_position()  # as the pipeline reads labels of a sequence output
    val = dataset.split("val")
    ids, mask = val.head(len(TEXTS["val"])).inputs
    assert mask[1].tolist()[:3] == [1, 1, 0]  # padded on the right
    program = load_program(tmp_path / "m.pt2").module()
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
        torch.testing.assert_close(program(ids, mask), expected.logits, atol=1e-4, rtol=1e-4)
    metrics = evaluate(program, val, reference=load_folder_model(folder, "causal-lm"), output_kind="logits")
    assert metrics["metric"] == "accuracy"
    assert metrics["perplexity"] == pytest.approx(math.exp(expected.loss.item()), rel=1e-4)
    assert metrics["top1_agreement"] == pytest.approx(1.0)


def test_prune_kd_and_int8_run_on_a_causal_lm_folder_and_write_a_folder_that_generates(tmp_path):
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"split": split, "text": text})
                                                   for split, texts in TEXTS.items() for text in texts))
    archive = tmp_path / "llama.zip"
    archive.write_bytes(zip_bytes(llama_folder(tmp_path / "llama")))
    stages = [PruneSpec(sparsity=0.5), KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2}),
              PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False, selection_samples=16)]
    result = run_folder_pipeline(archive, tmp_path / "rows.jsonl", "causal-lm", stages,
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "accuracy" and result.baseline["perplexity"] > 1
    for stage in result.stages:
        assert math.isfinite(stage.metrics["perplexity"]) and "metric_drop" in stage.metrics
    assert result.stages[-1].metrics["compression_ratio"] > 2  # half of the layers gone, int8 weights
    written = result.stages[-1].metrics["hf_folder"]
    assert written["written"], written
    folder = next(a for a in result.stages[-1].artifacts if a.kind == hf_folder.KIND)
    model = hf_folder.load(folder.path)  # what its recipe does
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 1
    prompt = torch.tensor([[3, 4, 5]])
    assert model.generate(prompt, max_new_tokens=4, do_sample=False).shape == (1, 7)


def test_llm_ptq_runs_alone(tmp_path):
    archive = tmp_path / "gpt2.zip"
    archive.write_bytes(zip_bytes(gpt2_folder(tmp_path / "gpt2")))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"split": "val", "text": CORPUS[0]}))
    with pytest.raises(ValueError, match="llm_ptq writes a compressed-tensors folder .* so it runs alone"):
        run_folder_pipeline(archive, tmp_path / "rows.jsonl", "causal-lm", [PruneSpec(), LLMPTQSpec()],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")



def test_large_outputs_are_evaluated_a_few_examples_at_a_time(tmp_path, monkeypatch):
    """Logits over a vocabulary at every position take megabytes per example: evaluation batches (and the upload's
    outputs kept for comparison) hold at most MAX_EVALUATION_OUTPUT_BYTES, and give what whole batches give."""
    import compression.pipeline as pipeline

    splits = {name: TextSplit(len(texts), texts) for name, texts in TEXTS.items()}
    folder_to_program(llama_folder(tmp_path / "llama"), "causal-lm", splits, tmp_path / "m.pt2", tmp_path / "d.npz")
    val = Dataset.load(tmp_path / "d.npz", ["input_ids", "attention_mask"]).split("val")
    val.evaluation_max_batch = 3
    assert [len(batch) for batch in val.evaluation_batches(256)] == [3, 3, 2]
    assert [len(batch) for batch in val.evaluation_batches(2, limit=5)] == [2, 2, 1]

    def baseline(limit_bytes: int) -> dict:
        monkeypatch.setattr(pipeline, "MAX_EVALUATION_OUTPUT_BYTES", limit_bytes)
        return pipeline.run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", [PruneSpec(sparsity=0.3)],
                                     EvaluationSpec(latency=False), RunContext(),
                                     tmp_path / f"work{limit_bytes}").stages[0].metrics

    program = load_program(tmp_path / "m.pt2").module()
    row_bytes = 4 * program(*val.head(1).inputs)[0].numel()
    whole, cut = baseline(256 * row_bytes), baseline(3 * row_bytes)
    for name in ("perplexity", "accuracy", "top1_agreement", "kl"):
        assert cut[name] == pytest.approx(whole[name], rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("stage, untied", [
    (PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False, selection_samples=16), True),
    (PruneSpec(sparsity=0.5), False)])
def test_a_tied_output_layer_is_written_as_the_stage_computes_it(tmp_path, stage, untied):
    """Llama 3.2, Qwen2.5 and GPT-2 share one table between the input embedding and the output layer. The stage's
    program reads it under one name; the folder holds what each layer computes with, and unties the two (so
    transformers does not put the table back over the quantized output layer) only when they differ."""
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"split": split, "text": text})
                                                   for split, texts in TEXTS.items() for text in texts))
    archive = tmp_path / "llama.zip"
    archive.write_bytes(zip_bytes(llama_folder(tmp_path / "llama", tie=True)))
    result = run_folder_pipeline(archive, tmp_path / "rows.jsonl", "causal-lm", [stage],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    # The table is one parameter, as in the model (`compression.tied_copies`): counted once, stored once.
    from transformers import AutoModelForCausalLM

    upload = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    assert result.baseline["parameters"] == sum(parameter.numel() for parameter in upload.parameters())
    if isinstance(stage, PruneSpec):  # zeros cost as much as other values in a .pt2: only the second copy could
        assert result.stages[0].metrics["size_bytes"] <= result.baseline["size_bytes"]
    written = result.stages[0].metrics["hf_folder"]
    assert written["written"], written
    model = hf_folder.load(next(a for a in result.stages[0].artifacts if a.kind == hf_folder.KIND).path)
    assert model.config.tie_word_embeddings is not untied
    table, output = model.model.embed_tokens.weight, model.lm_head
    assert (table.data_ptr() == getattr(output, "weight", table).data_ptr()) is not untied



def test_default_int8_stores_a_tied_table_once(tmp_path):
    """The default int8 program of a tied causal LM: the embedding reads the output layer's int8 codes."""
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"split": split, "text": text})
                                                   for split, texts in TEXTS.items() for text in texts))
    archive = tmp_path / "llama.zip"
    archive.write_bytes(zip_bytes(llama_folder(tmp_path / "llama", tie=True)))
    result = run_folder_pipeline(archive, tmp_path / "rows.jsonl", "causal-lm", [PTQSpec()],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    metrics = result.stages[0].metrics
    assert metrics["method_metrics"]["embeddings"]["shared_with_output_layer"] == ["model.model.embed_tokens.weight"]
    program = load_program(next(a for a in result.stages[0].artifacts if a.path.name == "model_int8.pt2").path)
    table_shape = program.state_dict["model.model.embed_tokens.weight_codes"].shape
    assert [tensor.dtype for tensor in [*program.state_dict.values(), *program.constants.values()]
            if tensor.shape == table_shape] == [torch.int8]
    assert metrics["top1_agreement"] >= 0.9
