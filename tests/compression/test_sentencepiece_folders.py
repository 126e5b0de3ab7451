"""Folders whose only tokenizer is a SentencePiece model (`tokenizer.model` of Llama-2-era checkpoints, ALBERT's
and T5's `spiece.model`), without a `tokenizer.json`: transformers reads them only with the `sentencepiece`
package installed; without it the job failed when the worker tokenized the text."""

import io
import json
import zipfile

import pytest

from bench.hf_architecture_sweep import WORDS, text_dataset, tiny_model
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, LLMPTQSpec, PTQSpec


def _sentencepiece_model(vocab_size: int) -> bytes:
    import sentencepiece

    lines = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines * 8), model_writer=model,
                                             vocab_size=vocab_size, model_type="unigram", unk_id=0, bos_id=1,
                                             eos_id=2, pad_id=3, user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
                                             hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def _folder_zip(tmp_path, model_type, task, tokenizer_file, tokenizer_class):
    folder = tmp_path / model_type
    tiny_model(model_type, task).save_pretrained(folder)
    (folder / tokenizer_file).write_bytes(_sentencepiece_model(64))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
    archive = tmp_path / f"{model_type}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.iterdir()):
            out.write(path, path.name)
    assert read_hf_folder(archive, task=task).has_tokenizer
    return archive


@pytest.mark.parametrize("model_type, task, tokenizer_file, tokenizer_class, spec", [
    ("llama", "causal-lm", "tokenizer.model", "LlamaTokenizer",
     LLMPTQSpec(algorithm="rtn", bits=8, group_size=None, calibration={"samples": 4, "sequence_length": 16},
                evaluation={"context_length": 16, "generation_tokens": 0})),
    ("albert", "feature-extraction", "spiece.model", "AlbertTokenizer", PTQSpec(calibration_samples=8)),
])
def test_a_folder_with_only_a_sentencepiece_tokenizer_runs(tmp_path, model_type, task, tokenizer_file,
                                                           tokenizer_class, spec):
    archive = _folder_zip(tmp_path, model_type, task, tokenizer_file, tokenizer_class)
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=False), task, [spec],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage, = result.stages
    if task == "causal-lm":  # perplexity on the tokenized evaluation text, within 1 % of the upload's
        assert 0 < stage.metrics["perplexity"] < 1.01 * result.baseline["perplexity"]
    else:  # fidelity of the int8 sentence vectors, on the tokenized evaluation text
        assert stage.metrics["metric_points"] > 90, stage.metrics
