"""Sentence pairs (`text_pair` in a `.jsonl` row) for cross-encoders and NLI classifiers: tokenized as pairs by the
folder's tokenizer, with segment ids as a third program input where the model reads them (BERT-style), and
refused for a causal LM, whose job reads running text."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from bench.hf_architecture_sweep import WORDS, tiny_model
from compression.archive.errors import InvalidUpload
from compression.archive.jsonl import manifest_splits, read_jsonl
from compression.context import RunContext
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, LLMPTQSpec, PTQSpec

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _pairs_jsonl(path, labels: bool = True):
    generator = torch.Generator().manual_seed(0)

    def sentence(count):
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (count,), generator=generator))

    rows = [{"split": split, "text": sentence(6), "text_pair": sentence(4)} | ({"label": row % 2} if labels else {})
            for split, count in (("train", 24), ("val", 12)) for row in range(count)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _bert_cross_encoder(tmp_path):
    from transformers import BertTokenizerFast

    folder = tmp_path / "cross-encoder"
    torch.manual_seed(0)
    model = tiny_model("bert", "sequence-classification").eval()
    model.save_pretrained(folder)
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(SPECIAL + list(WORDS))})
    tokenizer.save_pretrained(folder)
    archive = tmp_path / "cross-encoder.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.iterdir()):
            out.write(path, path.name)
    return model, tokenizer, archive


def test_rows_are_pairs_in_the_whole_file_or_in_none():
    both = b'{"split": "train", "text": "a b", "text_pair": "c"}\n{"split": "val", "text": "d", "text_pair": "e"}\n'
    splits = read_jsonl(io.BytesIO(both), keep_text=True)
    assert splits["val"].paired and splits["val"].pairs == ["e"]
    assert "text_pair" in manifest_splits(splits)[0]["train"]
    mixed = both + b'{"split": "val", "text": "f"}\n'
    with pytest.raises(InvalidUpload, match="line 3: no 'text_pair' where the rows before have one"):
        read_jsonl(io.BytesIO(mixed))
    with pytest.raises(InvalidUpload, match="'text_pair' must be a non-empty string"):
        read_jsonl(io.BytesIO(b'{"split": "train", "text": "a", "text_pair": 3}\n'))


def test_a_bert_cross_encoder_reads_its_pairs_with_segment_ids(tmp_path):
    model, tokenizer, archive = _bert_cross_encoder(tmp_path)
    result = run_folder_pipeline(archive, _pairs_jsonl(tmp_path / "pairs.jsonl"), "sequence-classification",
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.stages[0].metrics["accuracy"] is not None
    arrays = np.load(tmp_path / "work" / "dataset.npz")
    ids, mask, segments = (arrays[f"val.{name}"] for name in ("input_ids", "attention_mask", "token_type_ids"))
    assert segments[0].max() == 1  # the second text is segment 1, after the first [SEP]
    # The program computes what the folder's model computes on the tokenizer's pairs.
    program = load_program(tmp_path / "work" / "model.pt2").module()
    inputs = tuple(torch.from_numpy(a[:4]) for a in (ids, mask, segments))
    expected = model(input_ids=inputs[0], attention_mask=inputs[1], token_type_ids=inputs[2]).logits
    torch.testing.assert_close(program(*inputs), expected, rtol=1e-4, atol=1e-5)
    wrong = model(input_ids=inputs[0], attention_mask=inputs[1]).logits  # segment 0 throughout
    assert not torch.allclose(program(*inputs), wrong, atol=1e-4)


def test_a_causal_lm_job_refuses_pairs(tmp_path):
    from tests.hf_folders import llama_folder, zip_bytes

    archive = tmp_path / "llama.zip"
    archive.write_bytes(zip_bytes(llama_folder(tmp_path / "llama")))
    spec = LLMPTQSpec(algorithm="rtn", bits=8, group_size=None)
    with pytest.raises(ValueError, match="rows take no 'text_pair'"):
        run_folder_pipeline(archive, _pairs_jsonl(tmp_path / "pairs.jsonl", labels=False), "causal-lm", [spec],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
