"""GPT-2's `Conv1D` layers (`torch.addmm(bias, x, weight)`, weight stored [in, out]) become linears before int8
quantization (`compression/ptq/addmm_linear.py`), so int8 PTQ quantizes a GPT-2 block's projections; so do products
by a stored weight (`x @ W.T`, Falcon)."""

import torch
from transformers import FalconConfig, FalconForCausalLM, GPT2Config, GPT2LMHeadModel

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


class _ProductLayers(torch.nn.Module):
    """A FalconLinear-style `x @ W.T + b`, an `x @ V` with V stored [in, out], an attention-style product of two
    activations, a fixed matrix (a buffer, as a mel filterbank), and an `x @ U` whose U another op reads too (a
    transposed copy would be stored beside it)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w, self.b = torch.nn.Parameter(torch.randn(16, 8)), torch.nn.Parameter(torch.randn(16))
        self.v = torch.nn.Parameter(torch.randn(16, 12))
        self.register_buffer("filterbank", torch.randn(12, 4))
        self.u = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        hidden = torch.relu(x @ self.w.T + self.b) @ self.v
        return (hidden @ hidden.transpose(-1, -2)) @ hidden @ self.filterbank @ self.u + self.u.mean()


def test_weight_products_become_linears_reading_the_same_weights():
    from compression.ptq.addmm_linear import weight_products_as_linear

    model, x = _ProductLayers().eval(), torch.randn(2, 5, 8)
    graph = export_model(model, (x,)).module()
    assert weight_products_as_linear(graph) == 2
    linears = graph.graph.find_nodes(op="call_function", target=_LINEAR)
    assert len(linears) == 2 and linears[0].args[2] is not None  # the bias folded into the first
    assert {tuple(parameter.shape) for parameter in graph.parameters()} == {(16, 8), (16,), (12, 16), (4, 4)}
    assert all("val" in node.meta for node in linears)  # traced shapes kept: no re-export needed
    with torch.no_grad():
        assert torch.allclose(graph(x), model(x), rtol=1e-4, atol=1e-4)


def test_every_falcon_layer_is_quantized_by_default_int8(tmp_path):
    """FalconLinear computes `x @ W.T`: int8 PTQ quantized only the output layer (1.15x smaller) before."""
    from compression.context import RunContext
    from compression.llm.pipeline import run_folder_pipeline
    from compression.specs import EvaluationSpec, PTQSpec
    from tests.hf_folders import CORPUS, jsonl_bytes, save_tokenizer, zip_bytes

    vocab = save_tokenizer(tmp_path / "falcon")
    config = FalconConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          new_decoder_architecture=False, bos_token_id=2, eos_token_id=2)
    torch.manual_seed(0)
    FalconForCausalLM(config).save_pretrained(tmp_path / "falcon")
    (tmp_path / "falcon.zip").write_bytes(zip_bytes(tmp_path / "falcon"))
    (tmp_path / "rows.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:16], "val": CORPUS[16:24]}))
    result = run_folder_pipeline(tmp_path / "falcon.zip", tmp_path / "rows.jsonl", "causal-lm", [PTQSpec()],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    metrics = result.stages[0].metrics
    assert metrics["method_metrics"]["quantized_layers"] == 1 + 2 * 4  # the output layer and each block's four
    # 1.15x with the output layer alone; this tiny model's program and scales keep it from 4x
    assert metrics["compression_ratio"] > 2 and metrics["top1_agreement"] >= 0.9


class _EinsumLayers(torch.nn.Module):
    """Layers written with einsum, stored [out, in] and [in, out], operands in either order; an einsum of two
    activations and one contracting another axis of its weight are no layers."""

    def __init__(self):
        super().__init__()
        self.projection = torch.nn.Parameter(torch.randn(16, 8) / 3)  # [out, in]
        self.bias = torch.nn.Parameter(torch.randn(16))
        self.mix = torch.nn.Parameter(torch.randn(16, 12) / 4)  # [in, out]
        self.square = torch.nn.Parameter(torch.randn(12, 12) / 4)

    def forward(self, x):
        hidden = torch.relu(torch.einsum("bsi,oi->bso", x, self.projection) + self.bias)
        hidden = torch.einsum("io,...i->...o", self.mix, hidden)
        gram = torch.einsum("bsi,bti->bst", hidden, hidden)
        return torch.einsum("bst,bsi->bti", gram, hidden) + torch.einsum("bsi,ij->bsj", hidden, self.square).sum(1,
                                                                                                           True)


def test_einsum_layers_become_linears_and_every_one_is_quantized(tmp_path):
    """Default int8 PTQ left a model of einsum layers float (its weights read by `aten.einsum`)."""
    from compression.ptq.addmm_linear import weight_products_as_linear

    model, x = _EinsumLayers().eval(), torch.randn(2, 5, 8)
    graph = export_model(model, (x,)).module()
    assert weight_products_as_linear(graph) == 3  # the two layers, and "bsi,ij->bsj": x @ W with W [in, out]
    linears = graph.graph.find_nodes(op="call_function", target=_LINEAR)
    assert linears[0].args[2] is not None  # the bias folded in
    assert len(graph.graph.find_nodes(op="call_function", target=torch.ops.aten.einsum.default)) == 2
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-4, atol=1e-4)
    quantized = quantize_int8(graph, (x,), [(torch.randn(8, 5, 8),)])
    assert quantized_layer_count(quantized) == 3
