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


@pytest.mark.parametrize("positional", [0, 1], ids=["keywords only", "mixed"])
def test_a_program_exported_with_keyword_arguments_is_called_positionally(positional, tmp_path):
    """Hugging Face's export recipe passes the inputs by name (`kwargs=dict(inputs)`); every stage calls models
    with their inputs in order, so the loader gives such a program a positional calling convention."""

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(20, 8)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).float()
            return (self.embedding(input_ids) * mask).sum(1) / mask.sum(1)

    names = ["input_ids", "attention_mask"]
    ids, mask = torch.randint(0, 20, (2, 6)), torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    inputs = dict(zip(names, (ids, mask)))
    batch = Dim("batch")
    args = tuple(inputs[name] for name in names[:positional])
    kwargs = {name: inputs[name] for name in names[positional:]}
    program = torch.export.export(Encoder(), args, kwargs=kwargs,
                                  dynamic_shapes={name: {0: batch} for name in names})
    path = tmp_path / "encoder.pt2"
    torch.export.save(program, path)
    assert [spec.name for spec in inspect_pt2(path).inputs] == names

    ours, theirs = load_program(path), torch.export.load(path)
    new_ids, new_mask = torch.randint(0, 20, (3, 6)), torch.ones(3, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="keyword mismatch"):
        theirs.module()(new_ids, new_mask)  # what every stage did before
    expected = theirs.module()(input_ids=new_ids, attention_mask=new_mask) if positional == 0 \
        else theirs.module()(new_ids, attention_mask=new_mask)
    torch.testing.assert_close(ours.module()(new_ids, new_mask), expected, rtol=0, atol=0)
    example_args, example_kwargs = ours.example_inputs
    assert example_kwargs == {} and [tuple(t.shape) for t in example_args] == [(2, 6), (2, 6)]
    # Re-exported positionally (what a stage does), the batch stays dynamic.
    again = export_model(ours.module(), (new_ids, new_mask))
    assert again.module()(ids, mask).shape == (2, 8)


def test_a_program_with_tensor_constants_reexports_after_loading(tmp_path):
    """A tensor built in forward (CPM-Ant's reversed positions, `torch.tensor(list(range(n))[::-1])`) is a lifted
    constant that the program detaches in place; loaded as a view of its file, re-exporting (what every stage
    does) failed with "Can't detach views in-place"."""

    class ReversedPositions(torch.nn.Module):
        def forward(self, scores):
            return scores + torch.tensor(list(range(4))[::-1])[None, :]

    scores = torch.randn(3, 4)
    path = save_program(export_model(ReversedPositions(), (scores,)), tmp_path / "positions.pt2")
    ours = load_program(path)
    assert any(str(node.target) == "aten.detach_.default" for node in ours.graph.nodes)
    again = export_model(ours.module(), (scores,))
    torch.testing.assert_close(again.module()(scores), ReversedPositions()(scores), rtol=0, atol=0)


def test_a_program_with_a_nested_input_keeps_its_calling_convention(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, x, extra):
            return x * extra["scale"]

    x, scale = torch.randn(2, 3), torch.randn(2, 3)
    program = torch.export.export(Pair(), (x,), kwargs={"extra": {"scale": scale}})
    path = tmp_path / "pair.pt2"
    torch.export.save(program, path)
    ours = load_program(path)
    assert ours.call_spec.in_spec == torch.export.load(path).call_spec.in_spec
    torch.testing.assert_close(ours.module()(x, extra={"scale": scale}), x * scale)


@pytest.mark.parametrize("by_name", [False, True], ids=["positional flag", "keyword flag"])
def test_a_constant_argument_is_baked_in_and_no_longer_an_input(by_name, tmp_path):
    """A flag among the exported inputs (`normalize=True`): export bakes it into the graph, yet torch's module
    still wants it passed, with the same value; the dataset holds only the tensors."""

    class Embedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x, normalize=False, scale=None):
            out = self.linear(x)
            return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    x = torch.randn(2, 4)
    args, kwargs = ((x,), {"normalize": True, "scale": None}) if by_name else ((x, True), {})
    dynamic = {"x": {0: Dim("batch")}, "normalize": None} | ({"scale": None} if by_name else {})
    program = torch.export.export(Embedder().eval(), args, kwargs=kwargs, dynamic_shapes=dynamic)
    path = tmp_path / "embedder.pt2"
    torch.export.save(program, path)
    assert [spec.name for spec in inspect_pt2(path).inputs] == ["x"]
    ours, theirs = load_program(path), torch.export.load(path)
    new = torch.randn(5, 4)
    expected = theirs.module()(new, *args[1:], **kwargs)  # torch's module wants the flag, as exported
    torch.testing.assert_close(ours.module()(new), expected, rtol=0, atol=0)
    torch.testing.assert_close(ours.module()(new).norm(dim=-1), torch.ones(5))
    assert [name for name in ours.graph_signature.user_inputs] == ["x"]
    saved = tmp_path / "again.pt2"
    save_program(export_model(ours.module(), (new,)), saved)
    torch.testing.assert_close(load_program(saved).module()(new), expected)


class _HalvesItsWeight(torch.nn.Module):
    def __init__(self, row: bool):
        super().__init__()
        self.linear, self.row = torch.nn.Linear(4, 2), row

    def forward(self, x):
        with torch.no_grad():  # as RWKV's first call in eval mode rescales its weights
            halved = (self.linear.weight[0] if self.row else self.linear.weight).mul_(0.5).sum()
        return self.linear(x) + halved + self.linear.bias.to(torch.float16).mul_(2).float()  # a copy's write


@pytest.mark.parametrize("row", [False, True])
def test_a_program_that_writes_to_its_own_parameters_is_refused(tmp_path, row):
    """Each call would compute with other weights, and every method would fail on it in its own way; a write to a
    view of a parameter counts, one to a copy (the bias cast to another dtype) does not."""
    from compression.archive import InvalidUpload
    from compression.parameter_writes import written_parameters

    program = torch.export.export(_HalvesItsWeight(row), (torch.randn(2, 4),))
    path = save_program(program, tmp_path / "m.pt2")
    with pytest.raises(InvalidUpload, match=r"writes to its own parameters each time it runs \(linear.weight\)"):
        load_program(path)
    assert written_parameters(export_model(zoo.build("mlp", input_shape=(1, 8, 8), num_classes=3),
                                           (torch.randn(2, 1, 8, 8),))) == []
