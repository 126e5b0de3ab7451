"""Structured pruning of models shaped like real ones: channels pass through pads, permutes, pooling and reshapes,
and attention heads and FFN channels of a BERT encoder are removed."""

import numpy as np
import torch

from compression.context import RunContext
from compression.data import Dataset
from compression.io import export_model
from compression.prune.apply import apply_prune
from compression.prune.channel_groups import find_channel_groups
from compression.prune.structured import plan_structured, prune_channels
from compression.specs.prune import PruneSpec
from compression.task import Task
from tests.compression.prune.conftest import exported
from tests.compression.real_shapes import PitchCNN, TimeMixCNN, bert_inputs, randomize_batch_norm, tiny_bert


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_audio_cnn_with_pads_permute_and_sigmoid_prunes_every_conv_and_stays_exact():
    torch.manual_seed(0)
    model = PitchCNN()
    randomize_batch_norm(model)
    example = (torch.randn(4, 256),)
    graph_module = exported(model, example)
    groups = {tuple(p.name for p in g.producers): g for g in find_channel_groups(graph_module)}
    assert all(groups[(f"convs.{i}.weight",)].prunable for i in range(4)), \
        {k: g.frozen_because for k, g in groups.items()}
    last = {(s.name, s.dim, s.block, s.outer) for s in groups[("convs.3.weight",)].slices}
    assert ("classifier.weight", 1, 1, model.time_steps) in last  # channels interleaved along time
    assert groups[("classifier.weight",)].frozen_because == ["graph output"]

    # Every other channel gives relu(0) = 0, which BatchNorm (mean 0, shift 0) keeps at 0: removing those channels
    # must not change the outputs.
    with torch.no_grad():
        for i in range(4):
            conv, prefix = graph_module.get_submodule(f"convs.{i}"), f"norms.{i}"
            conv.weight[::2] = 0
            conv.bias[::2] = 0
            bn_bias = graph_module.get_parameter(f"{prefix}.bias")
            bn_weight = graph_module.get_parameter(f"{prefix}.weight")
            mean = graph_module.get_buffer(f"{prefix}.running_mean")
            mean[::2] = 0
            bn_bias[::2] = 0
            bn_weight[::2] = 1
    audio = torch.randn(5, 256)
    expected = graph_module(audio)
    plans, skipped = plan_structured(graph_module, 0.5, "l1")
    assert len(plans) == 4
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    torch.testing.assert_close(smaller(audio), expected, rtol=1e-5, atol=1e-5)
    assert parameters(smaller) < 0.45 * parameters(model)
    assert smaller(torch.randn(1, 256)).shape == (1, 24)


def test_time_mixing_cnn_prunes_through_transposes_residuals_and_pooling():
    torch.manual_seed(0)
    model = TimeMixCNN()
    randomize_batch_norm(model)
    example = (torch.randn(4, 2, 20),)
    graph_module = exported(model, example)
    groups = {tuple(sorted(p.name for p in g.producers)): g for g in find_channel_groups(graph_module)}
    # conv1's channels meet conv2's in the residual add; mix works on (N, T, C) and is its own group.
    assert groups[("conv1.weight", "conv2.weight")].prunable
    assert groups[("mix.weight",)].prunable
    inputs = torch.randn(3, 2, 20)
    before = parameters(graph_module)
    plans, _ = plan_structured(graph_module, 0.5, "l2")
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert smaller(inputs).shape == (3, 6)
    assert parameters(smaller) < 0.6 * before


def test_bert_heads_and_ffn_channels_are_removed_and_zeroed_ones_leave_outputs_unchanged():
    model = tiny_bert()
    ids, mask = bert_inputs()
    graph_module = exported(model, (ids, mask))
    with torch.no_grad():  # heads 1 and 3 and every other FFN channel of each layer produce exact zeros
        for layer in range(2):
            prefix = f"bert.encoder.layer.{layer}"
            for name in ("query", "key", "value"):
                graph_module.get_parameter(f"{prefix}.attention.self.{name}.weight").view(4, 8, 32)[1::2] = 0
                graph_module.get_parameter(f"{prefix}.attention.self.{name}.bias").view(4, 8)[1::2] = 0
            graph_module.get_parameter(f"{prefix}.intermediate.dense.weight")[::2] = 0
            graph_module.get_parameter(f"{prefix}.intermediate.dense.bias")[::2] = 0
    expected = graph_module(ids, mask)
    before = parameters(graph_module)
    plans, skipped = plan_structured(graph_module, 0.5, "l2")
    kinds = sorted((plan.group.unit, plan.group.size, plan.keep.tolist()) for plan in plans)
    assert kinds == [("channels", 64, list(range(1, 64, 2)))] * 2 + [("heads", 4, [0, 2])] * 2
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, (ids, mask)).module()
    assert tuple(smaller.get_parameter("bert.encoder.layer.0.attention.self.query.weight").shape) == (16, 32)
    assert tuple(smaller.get_parameter("bert.encoder.layer.0.attention.output.dense.weight").shape) == (32, 16)
    torch.testing.assert_close(smaller(ids, mask), expected, rtol=1e-5, atol=1e-5)
    assert parameters(smaller) < before - 2 * (4 * 16 * 32 + 2 * 32 * 32)
    longer = bert_inputs(batch=5, length=8, seed=1)
    assert smaller(*longer).shape == (5, 8, 32)


def test_prune_stage_shrinks_the_audio_cnn_program_on_disk(tmp_path):
    torch.manual_seed(0)
    model = PitchCNN().eval()
    randomize_batch_norm(model)
    audio = np.random.default_rng(0).normal(size=(16, 256)).astype(np.float32)
    dataset = Dataset.from_arrays({"train.x": audio, "val.x": audio[:8]}, ["x"])
    example = (torch.from_numpy(audio[:4]),)
    program = exported(model, example)
    unpruned = tmp_path / "fp32.pt2"
    torch.export.save(export_model(program, example), unpruned)
    result = apply_prune(PruneSpec(kind="structured", sparsity=0.3, recalibrate_batches=2), program,
                         Task(dataset, program, example, tmp_path / "work"), RunContext())
    assert result.metrics["parameter_reduction"] > 0.3
    assert result.artifacts[0].path.stat().st_size < 0.8 * unpruned.stat().st_size
    assert result.model(torch.from_numpy(audio[:3])).shape == (3, 24)


def test_prune_stage_on_an_exported_bert_encoder_writes_a_smaller_program_that_takes_the_same_inputs(tmp_path):
    model = tiny_bert(layers=1)
    ids, mask = bert_inputs(batch=8)
    program = exported(model, (ids, mask))
    arrays = {"train.input_ids": ids.numpy(), "train.attention_mask": mask.numpy(),
              "val.input_ids": ids.numpy(), "val.attention_mask": mask.numpy()}
    dataset = Dataset.from_arrays(arrays, ["input_ids", "attention_mask"])
    result = apply_prune(PruneSpec(kind="structured", sparsity=0.5, recalibrate_batches=0), program,
                         Task(dataset, program, (ids, mask), tmp_path), RunContext())
    units = sorted((group["unit"], group["channels"], group["kept"]) for group in result.metrics["groups"])
    assert units == [("channels", 64, 32), ("heads", 4, 2)]
    reloaded = torch.export.load(result.artifacts[0].path).module()
    assert reloaded(*bert_inputs(batch=2, seed=3)).shape == (2, 8, 32)
    assert result.metrics["parameters"] < result.metrics["parameters_before"] - 4 * 16 * 32
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, mask), result.model(ids, mask))


def test_channels_a_batch_norm_scales_up_outweigh_larger_weights_it_scales_down():
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.ReLU(), torch.nn.BatchNorm1d(4),
                                torch.nn.Conv1d(4, 2, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 1.0, 2.0, 2.0])[:, None, None].expand(4, 2, 3))
        model[2].weight.copy_(torch.tensor([4.0, 4.0, 0.5, 0.5]))  # gain 4 vs 0.5 outweighs weights 1 vs 2
    graph_module = exported(model, (torch.randn(2, 2, 8),))
    plans, _ = plan_structured(graph_module, 0.5, "l2")
    assert [plan.keep.tolist() for plan in plans] == [[0, 1]]


class _SharedAttention(torch.nn.Module):
    """ALBERT's pattern: one attention layer whose weights every layer reuses, run twice."""

    def __init__(self, width: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (torch.nn.Linear(width, width) for _ in range(4))

    def attend(self, x):
        batch, length, width = x.shape
        split = [p(x).view(batch, length, self.heads, width // self.heads).transpose(1, 2)
                 for p in (self.query, self.key, self.value)]
        mixed = torch.nn.functional.scaled_dot_product_attention(*split)
        return x + self.out(mixed.transpose(1, 2).reshape(batch, length, width))

    def forward(self, x):
        return self.attend(self.attend(x))


def test_an_attention_whose_weights_run_twice_loses_the_same_heads_in_both_calls():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    graph_module = exported(_SharedAttention(), (x,))
    with torch.no_grad():  # heads 1 and 3 produce exact zeros
        for name in ("query", "key", "value"):
            graph_module.get_parameter(f"{name}.weight").view(4, 8, 32)[1::2] = 0
            graph_module.get_parameter(f"{name}.bias").view(4, 8)[1::2] = 0
    expected = graph_module(x)
    plans, _ = plan_structured(graph_module, 0.5, "l2")
    heads = [plan for plan in plans if plan.group.unit == "heads"]
    assert len(heads) == 1 and heads[0].keep.tolist() == [0, 2]  # one choice for both calls
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, (x,)).module()
    assert tuple(smaller.get_parameter("query.weight").shape) == (16, 32)
    torch.testing.assert_close(smaller(x), expected, rtol=1e-5, atol=1e-5)


def test_a_dtype_cast_between_layers_does_not_freeze_their_channels():
    # export records `.to(float32)` (Hugging Face models cast around norms and attention) as an assertion on the
    # tensor's dtype plus the cast: the assertion froze every channel group it read (GPT-OSS).
    class Cast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)).to(torch.float32))

    graph_module = exported(Cast(), (torch.randn(2, 8),))
    assert any(node.target is torch.ops.aten._assert_tensor_metadata.default for node in graph_module.graph.nodes)
    groups = {tuple(p.name for p in g.producers): g for g in find_channel_groups(graph_module)}
    assert groups[("first.weight",)].prunable, groups[("first.weight",)].frozen_because


class _InstanceNormed(torch.nn.Module):
    """Style-transfer layout: conv -> InstanceNorm2d(affine) -> ReLU twice, then a conv back to an image."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.norm1, self.norm2 = torch.nn.InstanceNorm2d(8, affine=True), torch.nn.InstanceNorm2d(8, affine=True)
        self.out = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.norm1(self.first(x)))
        return self.out(torch.relu(self.norm2(self.second(x))))


def test_instance_norm_keeps_channels_apart_and_loses_the_pruned_ones_affine_entries():
    # InstanceNorm froze every group it read (style-transfer nets could not be pruned at all)
    torch.manual_seed(0)
    model = _InstanceNormed().eval()
    example = (torch.randn(2, 3, 8, 8),)
    graph_module = exported(model, example)
    groups = {tuple(p.name for p in g.producers): g for g in find_channel_groups(graph_module)}
    assert groups[("first.weight",)].prunable and groups[("second.weight",)].prunable
    assert ("norm1.weight", 0) in {(s.name, s.dim) for s in groups[("first.weight",)].slices}
    # a channel whose filter is zero is constant, which instance norm maps to its bias: 0 here, so relu gives 0 and
    # removing those channels must not change the image
    with torch.no_grad():
        for conv, norm in (("first", "norm1"), ("second", "norm2")):
            graph_module.get_submodule(conv).weight[::2] = 0
            graph_module.get_parameter(f"{norm}.bias")[::2] = 0
    images = torch.randn(3, 3, 8, 8)
    expected = graph_module(images)
    plans, _ = plan_structured(graph_module, 0.5, "l1")
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert tuple(smaller.get_parameter("norm2.weight").shape) == (4,)
    torch.testing.assert_close(smaller(images), expected, rtol=1e-5, atol=1e-5)
