import torch
from torch import nn

from compression.pq.layers import find_layer_weights, to_blocks
from compression.pq.parametrizations import PQWeight, QuantNoise, register, set_noise, stored_weight
from compression.pq.quantize import plan_layers, quantize_layer
from compression.quant.affine import fake_quantize, qparams_for
from compression.specs.ipq import BlockSizes
from tests.compression.pq.conftest import digits_cnn


def test_centroid_gradient_is_the_mean_of_its_members_gradients():
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    plans, _ = plan_layers(find_layer_weights(nn.Sequential(layer)), BlockSizes(), 4, 1)
    quantize_layer(nn.Sequential(layer), plans[0], iterations=5, centroid_dtype="float16")
    pq = layer.parametrizations.weight[0]
    x = torch.randn(32, 16)
    weight = layer.weight  # one forward of the parametrization, kept to read the dense gradient
    weight.retain_grad()
    torch.nn.functional.linear(x, weight, layer.bias).pow(2).sum().backward()
    member_grads = to_blocks(weight.grad, 8)
    for k in range(4):
        members = pq.assignments == k
        assert members.any()
        assert torch.allclose(pq.centroids.grad[k], member_grads[members].mean(0), atol=1e-6)
    assert not layer.parametrizations.weight.original.requires_grad  # only centroids train once quantized


def test_pq_weight_is_the_gathered_codebook():
    centroids = torch.randn(4, 9)
    assignments = torch.tensor([3, 0, 0, 1, 2, 3])
    pq = PQWeight(centroids, assignments, (3, 2, 3, 3), centroid_dtype="float16")
    weight = pq(torch.zeros(3, 2, 3, 3))
    assert torch.equal(to_blocks(weight, 9), centroids.half().float()[assignments])


def test_quant_noise_never_writes_the_stored_weights():
    torch.manual_seed(0)
    model = digits_cnn()
    names = [layer.name for layer in find_layer_weights(model)]
    for name in names:
        register(model, name, QuantNoise(stored_weight(model, name), 0.2, "proxy", 8 if "9" in name else 4))
    set_noise(model, True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(3):
        expected = {name: stored_weight(model, name).detach().clone() for name in names}
        seen = {name: model.get_submodule(name.rpartition(".")[0]).weight for name in names}
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for name in names:
            stored = stored_weight(model, name)
            expected[name] -= 0.1 * stored.grad
            # The weight the forward saw had whole blocks zeroed; the stored one has none.
            assert (seen[name] == 0).any() and not (stored == 0).any()
        optimizer.step()
        for name in names:
            # Exactly the optimizer's update (up to its fused multiply-add rounding), not a noised copy.
            assert torch.allclose(stored_weight(model, name), expected[name], rtol=0, atol=1e-6)
    set_noise(model, False)
    for name in names:
        assert torch.equal(model.get_submodule(name.rpartition(".")[0]).weight, stored_weight(model, name))


def test_proxy_noise_keeps_the_expected_weight():
    weight = torch.randn(32, 64)
    noise = QuantNoise(weight, 0.2, "proxy", 8)
    noise.enabled = True
    torch.manual_seed(0)
    draws = torch.stack([noise(weight) for _ in range(3000)])
    zeroed_blocks = (to_blocks(draws.reshape(-1, 64), 8) == 0).all(1).float().mean()
    assert abs(float(zeroed_blocks) - 0.2) < 0.01
    # Survivors scaled by 1/(1-p): the mean over draws converges to the weight (standard error ~ 0.5/sqrt(3000)).
    assert float((draws.mean(0) - weight).abs().max()) < 0.15
    assert float((draws.mean(0) - weight).abs().mean()) < 0.02


def test_exact_int8_noise_quantizes_chosen_blocks_with_straight_through_gradient():
    torch.manual_seed(0)
    weight = torch.randn(16, 32, requires_grad=True)
    noise = QuantNoise(weight.detach(), 0.5, "int8", 4)
    noise.enabled = True
    noised = noise(weight)
    quantized = fake_quantize(weight.detach(), qparams_for(weight, 8, symmetric=True, narrow=True, axis=0))
    blocks, quantized_blocks, original_blocks = to_blocks(noised, 4), to_blocks(quantized, 4), to_blocks(weight, 4)
    is_quantized = (blocks == quantized_blocks).all(1)
    is_original = (blocks == original_blocks).all(1)
    assert bool((is_quantized | is_original).all())
    assert 0.3 < float((is_quantized & ~is_original).float().mean()) < 0.7
    upstream = torch.randn(16, 32)
    (noised * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)


def test_exact_pq_noise_uses_nearest_centroids():
    torch.manual_seed(0)
    weight = torch.randn(64, 16)
    noise = QuantNoise(weight, 1.0 - 1e-6, "pq", 8, pq_centroids=8)
    noise.enabled = True
    blocks = to_blocks(noise(weight), 8)
    # w + (q - w).detach() equals q up to float rounding.
    assert torch.allclose(blocks, to_blocks(noise.quantized(weight), 8), atol=1e-6)
    assert len(blocks.round(decimals=4).unique(dim=0)) <= 8
