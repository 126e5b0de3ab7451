"""A real transformer through the default int8 PTQ job: a tiny random BERT sentence encoder (two integer inputs,
mean pooling, an unused pooler) exported with a bounded batch dimension, as users export theirs."""

import zipfile

import numpy as np
import pytest
import torch
import transformers
from torch.export import Dim

from compression.context import RunContext
from compression.data import Dataset
from compression.io import input_dtypes, input_names, load_model, load_program
from compression.modes import eval_mode
from compression.pipeline import run_pipeline
from compression.quant.general import apply_general_ptq
from compression.specs.common import EvaluationSpec
from compression.specs.ptq import PTQSpec
from compression.task import Task

VOCAB, SEQ = 8000, 16


class SentenceEncoder(torch.nn.Module):
    """BERT + mean pooling over the attention mask; BertModel still computes its pooler, which nothing reads."""

    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, max_position_embeddings=SEQ)
        self.bert = transformers.BertModel(config, add_pooling_layer=True)

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def _token_batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(rows, SEQ))
    lengths = rng.integers(4, SEQ + 1, size=rows)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    model = SentenceEncoder().eval()
    example = _token_batch(4, 0)
    batch = Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.from_numpy(example["input_ids"]),
                                          torch.from_numpy(example["attention_mask"])),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(directory / "encoder.pt2"))
    arrays = {f"{split}.{name}": values for split, seed, rows in (("train", 1, 64), ("val", 2, 32))
              for name, values in _token_batch(rows, seed).items()}
    np.savez(directory / "tokens.npz", **arrays)
    return directory / "encoder.pt2", directory / "tokens.npz"


def _weight_bytes(path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist() if "/data/weights/weight_" in i.filename)


def test_default_ptq_quantizes_a_bounded_bert_encoder_with_an_unused_pooler(encoder_files, tmp_path):
    model_path, dataset_path = encoder_files
    evaluation = EvaluationSpec(latency=False)  # compiled speed: bench/quantization/encoder.py
    result = run_pipeline(model_path, dataset_path, [PTQSpec(calibration_samples=64)], evaluation, RunContext(),
                          tmp_path)
    stage, = result.stages
    method = stage.metrics["method_metrics"]
    assert "bert.pooler.dense" in method["dropped_branches"]["modules"]
    assert "bert.pooler.dense.weight" in method["dropped_branches"]["parameters"]
    assert "bert.embeddings.word_embeddings.weight" in method["embeddings"]["tables"]
    assert method["quantized_layers"] == 12  # q, k, v, attention output, intermediate, output per layer

    assert stage.metrics["cosine"] > 0.99  # mean cosine of the embeddings to the fp32 ones

    artifact, = stage.artifacts
    assert artifact.metadata["dropped_branches"] == method["dropped_branches"]["modules"]
    assert "import torch.ao.quantization.fx._decomposed" in artifact.metadata["recipe"]
    # Weights (int8 tables and layers) >= 3.5x smaller; the whole file less so: the graph's JSON is a large part
    # of a model this small (bench/quantization/encoder.py measures a larger one).
    assert _weight_bytes(artifact.path) * 3.5 < _weight_bytes(model_path)
    assert stage.metrics["compression_ratio"] > 2.5

    program = load_program(artifact.path)
    (symbol, bounds), = program.range_constraints.items()  # the batch bound of the upload survived
    assert (int(bounds.lower), int(bounds.upper)) == (1, 1024)
    ids, mask = (torch.from_numpy(a) for a in _token_batch(3, 5).values())
    reloaded = program.module()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, mask), stage.model(ids, mask))
        assert reloaded(ids[:1], mask[:1]).shape == (1, 64)  # batch 1 is still allowed


def test_an_encoder_exported_with_keyword_arguments_runs_the_default_job(encoder_files, tmp_path):
    """Hugging Face's export recipe (`kwargs=dict(inputs)`): every stage used to call it positionally and fail."""
    _, dataset_path = encoder_files
    torch.manual_seed(0)
    example = {name: torch.from_numpy(values) for name, values in _token_batch(4, 0).items()}
    batch = Dim("batch", min=1, max=1024)
    program = torch.export.export(SentenceEncoder().eval(), (), kwargs=example,
                                  dynamic_shapes={name: {0: batch} for name in example})
    model_path = tmp_path / "by_name.pt2"
    torch.export.save(program, str(model_path))
    result = run_pipeline(model_path, dataset_path, [PTQSpec(calibration_samples=16)], EvaluationSpec(latency=False),
                          RunContext(), tmp_path / "job")
    stage, = result.stages
    assert stage.metrics["method_metrics"]["quantized_layers"] == 12 and stage.metrics["cosine"] > 0.99
    ids, mask = (torch.from_numpy(a) for a in _token_batch(3, 5).values())
    with torch.no_grad():  # the artifact takes the inputs in the upload's order
        torch.testing.assert_close(load_program(stage.artifacts[0].path).module()(ids, mask), stage.model(ids, mask))


def test_general_path_reports_block_sensitivity_and_exports_onnx_with_the_bounded_batch(encoder_files, tmp_path):
    import onnxruntime

    model_path, dataset_path = encoder_files
    program = load_program(model_path)
    dataset = Dataset.load(dataset_path, input_names(program), input_dtypes(program))
    task = Task(dataset, eval_mode(program.module()), dataset.split("val").head(4).inputs, tmp_path)
    spec = PTQSpec(calibration_samples=32, sensitivity=True, selection_samples=16)
    result = apply_general_ptq(spec, load_model(model_path), task, RunContext())

    assert "bert.pooler.dense" in result.metrics["dropped_branches"]["modules"]
    assert not any(row["name"].startswith("bert.pooler") for row in result.metrics["layers"])
    blocks = {row["name"]: row for row in result.metrics["blocks"]}
    assert set(blocks) == {f"bert.encoder.layer.{i}.{kind}" for i in range(2) for kind in ("attention", "mlp")}
    assert blocks["bert.encoder.layer.0.attention"]["layers"] == [
        f"bert.encoder.layer.0.attention.{name}" for name in ("self.query", "self.key", "self.value", "output.dense")]
    assert blocks["bert.encoder.layer.1.mlp"]["kind"] == "mlp"

    onnx_artifact = next(a for a in result.artifacts if a.kind == "model.onnx")
    session = onnxruntime.InferenceSession(str(onnx_artifact.path), providers=["CPUExecutionProvider"])
    assert [i.shape[0] for i in session.get_inputs()] == ["batch", "batch"]
    ids, mask = _token_batch(5, 3).values()
    assert session.run(None, {"input_ids": ids, "attention_mask": mask})[0].shape == (5, 64)
