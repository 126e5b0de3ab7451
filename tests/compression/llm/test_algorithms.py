import pytest
import torch

from compression.llm import awq, awq_groups
from compression.llm.blockwise import _captured_inputs
from compression.llm.gptq import HessianAccumulator, gptq
from compression.llm.hqq import hqq
from compression.llm.model import run_block
from compression.llm.quantize import WeightFormat, output_error, rtn
from tests.compression.llm.conftest import tiny_llama


def _layer_problem(seed=0, rows=96, columns=128, tokens=2048):
    """A weight and inputs with correlated, unevenly scaled features, as real layer inputs have."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(columns, columns, generator=generator) / columns ** 0.5
    x = torch.randn(tokens, columns, generator=generator) @ mixing
    x = x * torch.logspace(-1, 1, columns)[torch.randperm(columns, generator=generator)]
    weight = torch.randn(rows, columns, generator=generator) / columns ** 0.5
    accumulator = HessianAccumulator(columns)
    for chunk in x.split(500):
        accumulator.add(chunk)
    return weight, x, accumulator.result()


def _objective(weight, dequantized, x):
    """||W X - Q X||^2 computed directly from the inputs."""
    return float((x @ weight.T - x @ dequantized.T).pow(2).sum())


def test_hessian_accumulator_is_the_mean_of_2xxT():
    x = torch.randn(300, 16)
    accumulator = HessianAccumulator(16)
    for chunk in x.split(70):
        accumulator.add(chunk)
    assert torch.allclose(accumulator.result(), 2 * x.T @ x / 300, atol=1e-5)


@pytest.mark.parametrize("bits,group_size", [(4, 32), (4, None), (3, 64), (8, 128)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_has_a_lower_layer_objective_than_rtn(bits, group_size, act_order):
    weight, x, hessian = _layer_problem()
    fmt = WeightFormat(bits, group_size, True)
    by_rtn = rtn(weight, fmt, torch.float32).dequantize()
    by_gptq = gptq(weight, hessian, fmt, torch.float32, act_order=act_order).dequantize()
    assert _objective(weight, by_gptq, x) < 0.8 * _objective(weight, by_rtn, x)
    # the relative error reported from H alone is the same objective
    assert output_error(weight, by_gptq, hessian) == pytest.approx(
        _objective(weight, by_gptq, x) / float((x @ weight.T).pow(2).sum()), rel=1e-3)


def test_gptq_codes_lie_on_the_stored_grid_and_groups_stay_contiguous_with_act_order():
    weight, _, hessian = _layer_problem(seed=1)
    fmt = WeightFormat(4, 32, False)
    quantized = gptq(weight, hessian, fmt, torch.float32, act_order=True)
    assert quantized.scale.shape == (96, 4) and quantized.zero_point.shape == (96, 4)
    assert int(quantized.codes.min()) >= fmt.qmin and int(quantized.codes.max()) <= fmt.qmax
    # static groups: each group's grid is the min-max grid of the original weight's group
    assert torch.equal(quantized.scale, rtn(weight, fmt, torch.float32).scale)


class _ReadsAWeight(torch.nn.Module):
    """A block whose `gate` is never called: its weight is read directly, as Jamba's mixer reads dt_proj's."""

    def __init__(self):
        super().__init__()
        self.up, self.gate = torch.nn.Linear(32, 64), torch.nn.Linear(16, 64)

    def forward(self, hidden):
        return self.up(hidden) * (hidden[..., :16] @ self.gate.weight.T).sigmoid()


def test_gptq_rounds_to_nearest_a_layer_no_calibration_input_reaches():
    from compression.llm.blockwise import Recipe, quantize_block

    torch.manual_seed(0)
    block = _ReadsAWeight()
    gate = block.gate.weight.detach().clone()
    recipe = Recipe("gptq", WeightFormat(bits=4, group_size=16), torch.float32)
    quantized, metrics = quantize_block(block, [torch.randn(2, 8, 32)], [{}], recipe)
    assert set(quantized) == {"up", "gate"}
    assert metrics["layers"]["gate"]["algorithm"] == "rtn (no calibration input)"
    assert "algorithm" not in metrics["layers"]["up"] and "output_error" in metrics["layers"]["up"]
    assert torch.equal(block.gate.weight, rtn(gate, recipe.format, torch.float32).dequantize())


def test_gptq_damping_handles_dead_inputs():
    weight, x, hessian = _layer_problem(seed=2)
    hessian[:, 5] = 0
    hessian[5, :] = 0  # an input that is always zero
    quantized = gptq(weight, hessian, WeightFormat(4, 32, True), torch.float32)
    assert torch.isfinite(quantized.dequantize()).all()


def _attention_group(block):
    modules = dict(block.named_modules())
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    return modules, names


def _block_inputs(model, tokens):
    from compression.llm.model import LayerwiseModel

    return LayerwiseModel.load(model).first_block_inputs(list(tokens.split(8)))


@pytest.mark.parametrize("duo_scaling", [True, False])
def test_awq_scaled_search_is_never_worse_than_unscaled_and_wins_with_outlier_channels(duo_scaling):
    model = tiny_llama()
    block = model.model.layers[0]
    hidden, kwargs = _block_inputs(model, torch.randint(0, 256, (16, 32), generator=torch.Generator().manual_seed(0)))
    fmt = WeightFormat(3, 32, True)
    modules, names = _attention_group(block)
    calls = _captured_inputs(block, ["self_attn", names[0]], hidden, kwargs)
    inputs = [args[0] if args else kw["hidden_states"] for args, kw in calls[names[0]]]
    scales, best, unscaled = awq.search_scales([modules[n] for n in names], modules["self_attn"],
                                               calls["self_attn"], inputs, fmt, torch.float32, 20, duo_scaling)
    assert best <= unscaled
    assert best < 0.9 * unscaled  # the norm's 12x channels make plain rounding of q/k/v costly
    assert scales[:4].mean() > scales[4:].mean()  # the outlier channels are protected


def test_awq_folding_leaves_the_float_block_unchanged():
    model = tiny_llama(kv_heads=4)  # no grouped-query attention: v -> o is scaled too
    block = model.model.layers[0]
    hidden, kwargs = _block_inputs(model, torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0)))
    before = run_block(block, hidden, kwargs)
    modules = dict(block.named_modules())
    found = awq_groups.scaling_groups(block, hidden[0], kwargs[0])
    assert [(group.previous, group.scored) for group in found.scaled] == [
        ("input_layernorm", "self_attn"), ("self_attn.v_proj", "self_attn.o_proj"),
        ("post_attention_layernorm", "mlp"), ("mlp.up_proj", "mlp.down_proj")]
    assert found.unscaled == []
    for group in found.scaled:
        scales = torch.rand(modules[group.linears[0]].in_features) + 0.5
        awq.fold_scales(modules[group.previous], [modules[n] for n in group.linears], scales)
    after = run_block(block, hidden, kwargs)
    assert torch.allclose(before[0], after[0], atol=1e-4)


def _groups_of(model_type: str):
    from bench.hf_architecture_sweep import tiny_model
    from compression.llm.model import LayerwiseModel

    model = tiny_model(model_type, "causal-lm").eval()
    layerwise = LayerwiseModel.load(model)
    tokens = torch.randint(6, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    hidden, kwargs = layerwise.first_block_inputs([tokens])
    block = layerwise.load_block(0)
    found = awq_groups.scaling_groups(block, hidden[0], kwargs[0])
    return block, hidden, kwargs, {group.linears: (group.folded_into, group.scored) for group in found.scaled}, \
        found.unscaled, found.scaled


# Per architecture, groups found in its own forward (linears: (folded into, scored on)) and groups left unscaled.
# OPT's ReLU commutes with positive scales, GPT-NeoX's GELU and Nemotron's squared ReLU do not; Phi and GPT-J read
# one norm in parallel attention and MLP (scored on the whole block); Phi-3 fuses qkv and gate/up (scored on
# their parents; down_proj's scales fold into the up half of gate_up_proj, rows 128-255); OLMo's norms have no
# weight and OLMo-2's q/k/v read the raw residual (post-norm blocks).
EXPECTED_GROUPS = {
    "opt": ({("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"): ("self_attn_layer_norm", "self_attn"),
             ("self_attn.out_proj",): ("self_attn.v_proj", "self_attn.out_proj"),
             ("fc1",): ("final_layer_norm", "fc1"), ("fc2",): ("fc1", "fc2")}, []),
    "gpt_neox": ({("attention.query_key_value",): ("input_layernorm", "attention"),
                  ("mlp.dense_h_to_4h",): ("post_attention_layernorm", "mlp")},
                 [("attention.dense",), ("mlp.dense_4h_to_h",)]),
    "nemotron": ({("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"): ("input_layernorm", "self_attn"),
                  ("mlp.up_proj",): ("post_attention_layernorm", "mlp")}, [("self_attn.o_proj",), ("mlp.down_proj",)]),
    "phi": ({("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.fc1"): ("input_layernorm", ""),
             ("self_attn.dense",): ("self_attn.v_proj", "self_attn.dense")}, [("mlp.fc2",)]),
    "phi3": ({("self_attn.qkv_proj",): ("input_layernorm", "self_attn"),
              ("mlp.gate_up_proj",): ("post_attention_layernorm", "mlp"),
              ("mlp.down_proj",): ("mlp.gate_up_proj[128:256]", "mlp.down_proj")}, [("self_attn.o_proj",)]),
    "olmo": ({("self_attn.o_proj",): ("self_attn.v_proj", "self_attn.o_proj"),
              ("mlp.down_proj",): ("mlp.up_proj", "mlp.down_proj")},
             [("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")]),
    "olmo2": ({("self_attn.o_proj",): ("self_attn.v_proj", "self_attn.o_proj"),
               ("mlp.down_proj",): ("mlp.up_proj", "mlp.down_proj")},
              [("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")]),
    "gemma2": ({("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"): ("input_layernorm", "self_attn"),
                ("mlp.gate_proj", "mlp.up_proj"): ("pre_feedforward_layernorm", "mlp"),
                ("mlp.down_proj",): ("mlp.up_proj", "mlp.down_proj")}, [("self_attn.o_proj",)]),
}


@pytest.mark.parametrize("model_type", sorted(EXPECTED_GROUPS))
def test_awq_finds_each_architectures_groups_in_its_forward_and_folding_them_keeps_its_function(model_type):
    block, hidden, kwargs, scaled, unscaled, groups = _groups_of(model_type)
    modules = dict(block.named_modules())
    assert (scaled, unscaled) == EXPECTED_GROUPS[model_type]
    with torch.no_grad():
        before = run_block(block, hidden, kwargs)[0]
        for group in groups:
            scales = torch.rand(modules[group.linears[0]].in_features,
                                generator=torch.Generator().manual_seed(1)) + 0.5
            awq.fold_scales(modules[group.previous], [modules[name] for name in group.linears], scales, group.rows)
        after = run_block(block, hidden, kwargs)[0]
    assert (after - before).abs().max() < 1e-4 * before.abs().max()


@pytest.mark.parametrize("model_type", ["gemma", "gemma2", "gemma3_text"])
def test_awq_folding_leaves_gemma_unchanged(model_type):
    """Gemma's RMSNorm scales by (1 + weight), and Gemma 2/3 feed the MLP from pre_feedforward_layernorm (their
    post_attention_layernorm normalises the attention's output): dividing the weights of the norms Llama's
    blocks use moved the logits by 1 % (Gemma) and 56-59 % (Gemma 2/3) of their scale before any rounding."""
    from bench.hf_architecture_sweep import tiny_model
    from compression.llm.model import LayerwiseModel

    model = tiny_model(model_type, "causal-lm").eval()
    tokens = torch.randint(4, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    hidden, kwargs = LayerwiseModel.load(model).first_block_inputs([tokens])
    with torch.no_grad():
        before = model(input_ids=tokens).logits
        for block in model.model.layers:  # the first block's inputs serve every block's fold check
            modules = dict(block.named_modules())
            for group in awq_groups.scaling_groups(block, hidden[0], kwargs[0]).scaled:
                scales = torch.rand(modules[group.linears[0]].in_features,
                                    generator=torch.Generator().manual_seed(1)) + 0.5
                awq.fold_scales(modules[group.previous], [modules[n] for n in group.linears], scales, group.rows)
        after = model(input_ids=tokens).logits
    assert (after - before).abs().max() < 1e-5 * before.abs().max()


def test_awq_refuses_a_norm_that_does_not_scale_its_output_by_its_weight():
    class SquaredScale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.full((8,), 2.0))

        def forward(self, x):
            return x * self.weight ** 2

    with torch.no_grad(), pytest.raises(ValueError, match="does not scale its output by its weight"):
        awq.fold_scales(SquaredScale(), [torch.nn.Linear(8, 4)], torch.rand(8) + 0.5)


def test_awq_skips_v_to_o_under_grouped_query_attention():
    model = tiny_llama(kv_heads=2)
    hidden, kwargs = _block_inputs(model, torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0)))
    found = awq_groups.scaling_groups(model.model.layers[0], hidden[0], kwargs[0])
    assert "self_attn.v_proj" not in [group.previous for group in found.scaled]
    assert found.unscaled == [("self_attn.o_proj",)]


def test_awq_leaves_a_group_unscaled_when_its_norm_also_feeds_something_else():
    """A router that is not a linear layer reads the MLP norm's output: folding into that norm would change the
    routing, so the group stays unscaled (and the block's function with it)."""
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(16)
            self.up = torch.nn.Linear(16, 32)
            self.down = torch.nn.Linear(32, 16)
            self.gate_weight = torch.nn.Parameter(torch.randn(16))

        def forward(self, x):
            normed = self.norm(x)
            return x + self.down(torch.relu(self.up(normed))) * (normed @ self.gate_weight).sigmoid()[..., None]

    block = Block()
    found = awq_groups.scaling_groups(block, torch.randn(2, 5, 16), {})
    assert found.unscaled == [("up",)]
    assert [(group.previous, group.linears) for group in found.scaled] == [("up", ("down",))]


def test_awq_does_not_clip_what_feeds_the_softmax():
    assert [name for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.qkv_proj", "attn.c_attn",
                              "attention.query_key_value", "attn.Wqkv", "self_attn.v_proj", "mlp.up_proj",
                              "self_attn.o_proj", "fc1") if awq_groups.clipped(name)] == [
        "self_attn.v_proj", "mlp.up_proj", "self_attn.o_proj", "fc1"]


def test_awq_clip_search_never_increases_the_output_error():
    weight, x, _ = _layer_problem(seed=3)
    weight[:, :3] *= 6  # a few large weights: clipping the range helps the others
    fmt = WeightFormat(4, 32, True)
    ratios = awq.search_clip(weight, x, fmt, torch.float32)
    assert ratios.shape == (96, 4) and bool((ratios <= 1).all()) and bool((ratios >= 0.5).all())
    clipped = rtn(weight, fmt, torch.float32, ratios).dequantize()
    plain = rtn(weight, fmt, torch.float32).dequantize()
    assert _objective(weight, clipped, x) < _objective(weight, plain, x)


@pytest.mark.parametrize("bits,group_size", [(4, 64), (3, 64), (2, 32), (4, None)])
@pytest.mark.parametrize("distribution", ["normal", "student_t"])
def test_hqq_error_is_lower_than_rtn_at_the_same_bits(bits, group_size, distribution):
    torch.manual_seed(0)
    weight = torch.randn(128, 256) if distribution == "normal" else torch.distributions.StudentT(3.0).sample((128, 256))
    fmt = WeightFormat(bits, group_size, False)
    by_rtn = rtn(weight, fmt, torch.float32).dequantize()
    by_hqq = hqq(weight, fmt, torch.float32).dequantize()
    assert (weight - by_hqq).abs().mean() < (weight - by_rtn).abs().mean()
    assert (weight - by_hqq).pow(2).mean() < (weight - by_rtn).pow(2).mean()


def test_hqq_needs_an_asymmetric_integer_grid():
    with pytest.raises(ValueError, match="asymmetric"):
        hqq(torch.randn(8, 32), WeightFormat(4, 32, True), torch.float32)
