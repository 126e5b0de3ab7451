"""GPT-2's `Conv1D` layers (`torch.addmm(bias, x, weight)`, weight stored [in, out]) become linears before int8
quantization (`compression/ptq/addmm_linear.py`), so int8 PTQ quantizes a GPT-2 block's projections."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from compression.evaluate import tensor_sqnr_db
from compression.io import export_model
from compression.ptq import quantize_int8
from compression.ptq.addmm_linear import addmm_as_linear
from compression.ptq.quantize import quantized_layer_count

_ADDMM, _LINEAR = torch.ops.aten.addmm.default, torch.ops.aten.linear.default


class _LogitsOf(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


def _tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0,
                        eos_token_id=0)
    return _LogitsOf(GPT2LMHeadModel(config)).eval()


def test_gpt2_conv1d_layers_become_linears_computing_the_same():
    model, ids = _tiny_gpt2(), torch.randint(0, 96, (2, 12))
    graph = export_model(model, (ids,)).module()
    assert sum(node.target == _ADDMM for node in graph.graph.nodes) == 8  # c_attn, c_proj, c_fc, c_proj per block
    assert addmm_as_linear(graph) == 8
    assert not any(node.target == _ADDMM for node in graph.graph.nodes)
    weights = {node.args[1].target for node in graph.graph.nodes if node.target == _LINEAR}
    assert "model.transformer.h.0.attn.c_attn.weight_as_linear" in weights
    with torch.no_grad():
        torch.testing.assert_close(graph(ids), model(ids), rtol=1e-5, atol=1e-5)


def test_an_addmm_whose_operands_are_computed_is_left_alone():
    class Computed(torch.nn.Module):
        def forward(self, x, w):
            return torch.addmm(torch.zeros(3), x, w)

    graph = torch.export.export(Computed(), (torch.randn(2, 4), torch.randn(4, 3))).module()
    assert addmm_as_linear(graph) == 0


def test_int8_ptq_quantizes_every_gpt2_projection():
    model, ids = _tiny_gpt2(), torch.randint(0, 96, (64, 12), generator=torch.Generator().manual_seed(1))
    report = {}
    quantized = quantize_int8(model, (ids[:4],), [(ids[i:i + 16],) for i in range(0, 64, 16)], report=report)
    assert report["addmm_as_linear"] == 8
    assert quantized_layer_count(quantized) == 9  # the 8 projections and the lm_head (before: the lm_head alone)
    with torch.no_grad():
        assert tensor_sqnr_db(model(ids), quantized(ids)) > 20


def test_weight_only_ptq_quantizes_the_projections_and_ships_no_float_original(tmp_path):
    # The general (weight-only) path found no layer in an addmm: the 8 projections stayed float in the packed
    # file (1.17x smaller). Rewritten, they are packed, and their [in, out] originals are not shipped beside them.
    import numpy as np

    from compression.context import RunContext
    from compression.io import save_program
    from compression.pipeline import run_pipeline
    from compression.quant.packed import FORMAT, open_with_graph
    from compression.specs import EvaluationSpec, PTQSpec

    model, ids = _tiny_gpt2(), torch.randint(0, 96, (4, 12))
    save_program(export_model(model, (ids,)), tmp_path / "gpt2.pt2")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", **{"train.input_ids": rng.integers(0, 96, (32, 12)),
                                       "val.input_ids": rng.integers(0, 96, (32, 12))})
    result = run_pipeline(tmp_path / "gpt2.pt2", tmp_path / "data.npz", [PTQSpec(activations=None)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    packed = next(a.path for a in result.stages[0].artifacts if a.name == "model_packed.safetensors")
    graph, _, manifest = open_with_graph(packed, FORMAT)
    packed_attrs = {entry["attr"] for entry in manifest}
    assert sum(attr.endswith(".weight_as_linear") for attr in packed_attrs) == 8
    assert not any(name.endswith("c_attn.weight") for name, _ in graph.named_parameters())
    assert result.final["compression_ratio"] > 2.5 and result.final["metric_points"] > 95


def test_a_low_rank_student_factorizes_the_gpt2_projections():
    # The graph factorizer took only linear/conv2d calls: a GPT-2 program had "no layer that gets smaller".
    from compression.distill.low_rank import low_rank_factorize

    model, ids = _tiny_gpt2(), torch.randint(0, 96, (2, 12))
    graph = export_model(model, (ids,)).module()
    factorized = low_rank_factorize(graph, rank=4)
    assert sum(f.name.endswith("weight_as_linear") for f in factorized) == 8
    assert not any(name.endswith("c_attn.weight") for name, _ in graph.named_parameters())  # originals dropped
    with torch.no_grad():
        assert tensor_sqnr_db(model(ids), graph(ids)) > 0  # still the model, at rank 4
