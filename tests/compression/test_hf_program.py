"""Encoders and classifiers from Hugging Face folders become programs that pass the archive rules and compute
what transformers computes, with the text tokenized to the matching arrays."""

import io

import numpy as np
import pytest
import torch

from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import TextSplit
from compression.data import Dataset
from compression.hf_program import folder_to_program, load_folder_model
from compression.inspect import inspect_pt2
from compression.io import load_program
from tests.hf_folders import CORPUS, bert_folder, zip_bytes


@pytest.mark.parametrize("task, classes", [("sequence-classification", 3), ("feature-extraction", None)])
def test_a_folder_exports_to_a_program_with_its_tokenized_text(tmp_path, task, classes):
    folder = bert_folder(tmp_path / "bert", classes)
    splits = {"train": TextSplit(4, CORPUS[:4], [0, 2, 1, 0] if classes else []),
              "val": TextSplit(3, ["the cat", "the dog sees the box near the tree", "fox"], [])}
    folder_to_program(folder, task, splits, tmp_path / "m.pt2", tmp_path / "d.npz")
    program = load_program(tmp_path / "m.pt2")
    arrays = dict(np.load(tmp_path / "d.npz"))
    assert arrays["val.input_ids"].shape == (3, 8)  # the longest row: 8 words
    assert arrays["val.attention_mask"][0].sum() == 2
    assert ("train.y" in arrays) == bool(classes)
    dataset = Dataset.load(tmp_path / "d.npz", ["input_ids", "attention_mask"])
    batch = dataset.split("val").head(3)
    expected = load_folder_model(folder, task)(*batch.inputs)
    with torch.no_grad():
        got = program.module()(*batch.inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert got.shape[-1] == (classes or 32)
    # The pooler (linear -> tanh) feeds a classifier's head; under last_hidden_state it is dead and dropped.
    pooler = any(node.op == "call_function" and "tanh" in str(node.target) for node in program.graph.nodes)
    assert pooler == bool(classes)
    # ... and so are its weights: the program the job's sizes are measured against does not store them.
    assert any("pooler" in name for name in program.state_dict) == bool(classes)
    # Layer patterns are checked at submission against the names the program will have.
    folder_layers = read_hf_folder(io.BytesIO(zip_bytes(folder)), task=task).signature()["layers"]
    assert set(inspect_pt2(tmp_path / "m.pt2").layers) <= set(folder_layers)


def test_funnel_features_are_the_whole_model_whose_decoder_upsamples_the_encoder(tmp_path):
    """Funnel's `decoder` reads no decoder inputs (it upsamples the pooled encoder's features back to every token):
    taken for an encoder-decoder's, the encoder alone was exported and failed ("unexpected keyword argument
    'input_ids'"), and every job on a Funnel folder with it. T5's features stay its encoder's."""
    from bench.hf_architecture_sweep import save_tokenizer, tiny_model

    for model_type, expected in (("funnel", "FunnelModel"), ("t5", "T5EncoderModel")):
        tiny_model(model_type, "feature-extraction").save_pretrained(tmp_path / model_type)
        save_tokenizer(tmp_path / model_type)
        wrapper = load_folder_model(tmp_path / model_type, "feature-extraction")
        assert type(wrapper.model).__name__ == expected
        ids = torch.tensor([[3, 7, 8, 9, 4]])
        with torch.no_grad():
            features = wrapper(ids, torch.ones_like(ids))
        assert features.shape == (1, 5, wrapper.model.config.d_model)  # a feature per token
