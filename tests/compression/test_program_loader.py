"""The checked loader accepts what our own code and common exporters write, and rebuilds the same program as
torch.export.load."""

import subprocess
import sys

import pytest
import torch
from torch.export import Dim

from compression import zoo
from compression.inspect import inspect_pt2
from compression.io import export_model, load_program, save_program

ZOO = {
    "mlp": (dict(input_shape=(1, 8, 8), num_classes=3), lambda: torch.randn(3, 1, 8, 8)),
    "small_cnn": (dict(in_channels=1, num_classes=3, image_size=8), lambda: torch.randn(3, 1, 8, 8)),
    "resnet": (dict(in_channels=1, num_classes=3), lambda: torch.randn(3, 1, 28, 28)),
    "tiny_transformer": (dict(vocab_size=20, max_length=6, num_classes=3), lambda: torch.randint(0, 20, (3, 6))),
}


def _same_as_torch(path, *inputs, **kwargs) -> None:
    ours, theirs = load_program(path), torch.export.load(path)
    assert str(ours.graph) == str(theirs.graph)
    assert ours.state_dict.keys() == theirs.state_dict.keys()
    for name, tensor in theirs.state_dict.items():
        assert type(ours.state_dict[name]) is type(tensor) and torch.equal(ours.state_dict[name], tensor)
    with torch.no_grad():
        expected = torch.utils._pytree.tree_leaves(theirs.module()(*inputs, **kwargs))
        actual = torch.utils._pytree.tree_leaves(ours.module()(*inputs, **kwargs))
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("architecture", ZOO)
def test_zoo_exports_load_as_torch_loads_them(architecture, tmp_path):
    kwargs, example = ZOO[architecture]
    model = zoo.build(architecture, **kwargs)
    path = save_program(export_model(model, (example(),)), tmp_path / "m.pt2")
    assert inspect_pt2(path).inputs[0].shape[0] is None
    _same_as_torch(path, example())


def test_an_int8_program_loads_in_a_fresh_process(tmp_path):
    """torch.export.load cannot resolve quantized_decomposed ops until something registers them; the loader does."""
    from compression.ptq.quantize import quantize_int8

    x = torch.randn(8, 1, 8, 8)
    model = zoo.build("small_cnn", in_channels=1, num_classes=3, image_size=8)
    path = save_program(export_model(quantize_int8(model, (x[:2],), [(x,)]), (x[:2],)), tmp_path / "int8.pt2")
    code = ("import sys, torch; from compression.io import load_program; "
            "p = load_program(sys.argv[1]); print(p.module()(torch.zeros(2, 1, 8, 8)).shape)")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "torch.Size([2, 3])" in run.stdout


@pytest.mark.parametrize("architecture", ["bert", "llama"])
def test_tiny_transformers_exports_with_dynamic_batch_and_sequence_load(architecture, tmp_path):
    transformers = pytest.importorskip("transformers")
    if architecture == "bert":
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, num_labels=3)
        model = transformers.BertForSequenceClassification(config)
    else:
        config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
        model = transformers.LlamaForCausalLM(config)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    ids, mask = torch.randint(0, 50, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    batch, sequence = Dim("batch"), Dim("sequence", min=2, max=32)
    program = torch.export.export(Logits(), (ids, mask), dynamic_shapes=({0: batch, 1: sequence},) * 2)
    path = tmp_path / f"{architecture}.pt2"
    torch.export.save(program, path)
    assert [spec.name for spec in inspect_pt2(path).inputs] == ["input_ids", "attention_mask"]
    _same_as_torch(path, torch.randint(0, 50, (3, 5)), torch.ones(3, 5, dtype=torch.long))
