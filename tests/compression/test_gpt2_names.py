"""The layer names the API checks a GPT-2 folder job's patterns against (`compression.archive.gpt2_names`) are
the names of the program the worker runs: its OPT rewrite's."""

import pytest
import torch

from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import TextSplit
from compression.io import load_program
from compression.llm.pipeline import export_folder
from compression.quant.graph import find_layers
from compression.tied_copies import tie_shared_parameters
from tests.hf_folders import CORPUS, save_tokenizer, zip_bytes


@pytest.mark.parametrize("task, model_class", [("causal-lm", "GPT2LMHeadModel"),
                                               ("feature-extraction", "GPT2Model"),
                                               ("sequence-classification", "GPT2ForSequenceClassification"),
                                               # a reader: OPTForQuestionAnswering (since 2026-12-06)
                                               ("question-answering", "GPT2ForQuestionAnswering"),
                                               # GPT-1: its own embedding names, no final norm
                                               ("causal-lm", "OpenAIGPTLMHeadModel"),
                                               ("sequence-classification", "OpenAIGPTForSequenceClassification")])
def test_the_apis_layer_names_are_the_programs(tmp_path, task, model_class):
    import transformers

    folder = tmp_path / "gpt2"
    vocab = save_tokenizer(folder)
    torch.manual_seed(0)
    if model_class.startswith("OpenAIGPT"):
        config = transformers.OpenAIGPTConfig(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                              pad_token_id=1, num_labels=2)
    else:
        config = transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                         bos_token_id=2, eos_token_id=2, pad_token_id=1, num_labels=2)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    (tmp_path / "gpt2.zip").write_bytes(zip_bytes(folder))
    signature = read_hf_folder(tmp_path / "gpt2.zip", task=task).signature()
    checked = signature.get("program_layers", signature["layers"])
    splits = {"train": TextSplit(8, CORPUS[:8], labels=[0, 1] * 4), "val": TextSplit(4, CORPUS[8:12],
                                                                                        labels=[0, 1] * 2)}
    if task == "question-answering":  # questions and their contexts
        splits = {name: TextSplit(split.rows, split.texts, paired=True, pairs=list(reversed(split.texts)))
                  for name, split in splits.items()}
    elif task != "sequence-classification":
        splits = {name: TextSplit(split.rows, split.texts) for name, split in splits.items()}
    source, _, note = export_folder(folder, task, splits, tmp_path / "work", None, "val")
    assert note["to"] == "opt"  # the rewrite ran
    program = load_program(tmp_path / "work" / "model.pt2").module()
    tie_shared_parameters(program)  # as the job does: a tied output layer keeps the embedding's name
    program_layers = {layer.name for layer in find_layers(program)}
    assert program_layers and program_layers <= set(checked), sorted(program_layers - set(checked))
