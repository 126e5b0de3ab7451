import torch

from compression import zoo
from compression.inspect import inspect_pt2
from compression.io import (
    export_model,
    exported_copy,
    input_dtypes,
    input_names,
    inputs_at_batch,
    load_model,
    load_program,
    save_program,
)
from compression.modes import is_training


def test_round_trip_keeps_outputs_names_and_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = zoo.build("small_cnn", image_size=8, width=4)
    program = export_model(model, (torch.randn(1, 1, 8, 8),))  # a batch of one must not pin the batch size
    path = save_program(program, tmp_path / "m.pt2")
    loaded = load_model(path)
    assert not is_training(loaded)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert input_names(program) == ["input"] and input_dtypes(program) == {"input": torch.float32}
    signature = inspect_pt2(path)  # the torch-free reader the API uses agrees
    assert [t.name for t in signature.inputs] == ["input"] and signature.inputs[0].shape == [None, 1, 8, 8]


def test_re_exporting_an_exported_module_keeps_the_dynamic_batch():
    exported = export_model(zoo.build("mlp", input_shape=4, hidden=(8,)), (torch.randn(3, 4),)).module()
    again = export_model(exported, (torch.randn(3, 4),)).module()
    assert again(torch.randn(7, 4)).shape == (7, 10)


class _MaskedLinear(torch.nn.Module):
    """A layer whose mask is cast to the activations' dtype, as a Hugging Face encoder casts its attention mask:
    export records the cast's input check (`aten._assert_tensor_metadata`), a call without an output."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x, mask):
        return self.linear(x).relu() * mask.to(x.dtype)[:, None]


def test_a_loaded_program_is_copied_without_a_new_export_and_a_hand_rewritten_graph_is_exported_again(
        tmp_path, monkeypatch):
    """Re-exporting a program's module gave the same graph at one to five seconds a call, twice per int8 stage;
    the tensor-metadata checks read as a hand-rewritten graph, so every loaded encoder was exported again."""
    inputs = (torch.randn(3, 4), torch.ones(3, dtype=torch.long))
    program = load_program(save_program(export_model(_MaskedLinear().eval(), inputs), tmp_path / "m.pt2"))
    loaded = program.module()
    assert any(node.target is torch.ops.aten._assert_tensor_metadata.default for node in loaded.graph.nodes)
    exports = []
    real_export = torch.export.export
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    copied = exported_copy(loaded, inputs)
    assert exports == [] and copied is not loaded
    # the graph is the copy's own; the weights are read, not copied (as an export's module reads them)
    relu = next(node for node in copied.graph.nodes if node.target is torch.ops.aten.relu.default)
    relu.target = torch.ops.aten.sigmoid.default
    copied.recompile()
    assert any(node.target is torch.ops.aten.relu.default for node in loaded.graph.nodes), "the graph is private"
    assert copied.get_parameter("linear.weight") is loaded.get_parameter("linear.weight")

    relu = next(node for node in loaded.graph.nodes if node.target is torch.ops.aten.relu.default)
    with loaded.graph.inserting_after(relu):  # a call without a traced output, as a low-rank rewrite adds
        doubled = loaded.graph.call_function(torch.ops.aten.mul.Tensor, (relu, 2.0))
    relu.replace_all_uses_with(doubled, delete_user_cb=lambda user: user is not doubled)
    loaded.recompile()
    again = exported_copy(loaded, inputs)
    assert exports == [1]
    assert all("val" in node.meta for node in again.graph.nodes if node.op == "call_function"
               and node.target is not torch.ops.aten._assert_tensor_metadata.default)
    torch.testing.assert_close(again(*inputs), loaded(*inputs))


def test_inputs_at_batch_tiles_and_cuts():
    x = torch.arange(3).reshape(3, 1)
    assert inputs_at_batch((x,), 7)[0].flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert inputs_at_batch((x,), 2)[0].flatten().tolist() == [0, 1]


class _TokensAndFeatures(torch.nn.Module):
    """Two inputs sharing a batch and a sequence axis, one of them integer."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 4)

    def forward(self, ids, features):
        return (self.embedding(ids) + features).sum(1)


def test_re_export_keeps_bounded_shared_and_non_batch_dims_of_the_upload(tmp_path):
    from torch.export import Dim

    batch, seq = Dim("batch", min=1, max=64), Dim("seq", min=2, max=32)
    ids, features = torch.randint(0, 10, (3, 5)), torch.randn(3, 5, 4)
    upload = torch.export.export(_TokensAndFeatures(), (ids, features),
                                 dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    upload = load_program(save_program(upload, tmp_path / "upload.pt2"))  # as the service reads it
    again = export_model(upload.module(), (ids, features))
    ranges = sorted((int(r.lower), int(r.upper)) for r in again.range_constraints.values())
    assert ranges == sorted((int(r.lower), int(r.upper)) for r in upload.range_constraints.values()) == [(1, 64),
                                                                                                        (2, 32)]
    ids_shape, features_shape = (node.meta["val"].shape for node in again.graph.nodes if node.op == "placeholder"
                                 and node.name in ("ids", "features"))
    assert ids_shape[:2] == features_shape[:2]  # still one shared symbol per axis
    twice = export_model(again.module(), (ids, features)).module()  # and again: batch 1 still allowed
    assert twice(ids[:1, :7], features[:1, :7]).shape == (1, 4)
