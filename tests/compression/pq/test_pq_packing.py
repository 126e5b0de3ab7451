import lzma

import pytest
import torch
from safetensors import safe_open

from compression.io import export_model
from compression.modes import eval_mode
from compression.pq.layers import find_layer_weights
from compression.pq.packing import (
    GRAPH_KEY,
    MANIFEST_KEY,
    index_bits,
    load_ipq,
    pack_indices,
    save_ipq,
    theoretical_bytes,
    unpack_indices,
)
from compression.pq.quantize import plan_layers, quantize_layer
from compression.specs.ipq import BlockSizes
from tests.compression.pq.conftest import digits_cnn


@pytest.mark.parametrize("bits", range(1, 9))
def test_index_bit_packing_round_trips_at_the_theoretical_size(bits):
    count = 1001
    indices = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(bits))
    packed = pack_indices(indices, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-count * bits // 8)
    assert torch.equal(unpack_indices(packed, bits, count), indices)


def test_bit_layout_is_lsb_first():
    # indices 1, 2, 3 at 2 bits: stream 10 01 11 (LSB first) -> byte 0b00111001.
    assert pack_indices(torch.tensor([1, 2, 3]), 2).tolist() == [0b00111001]


@pytest.mark.parametrize("centroid_dtype", ["float16", "int8"])
def test_packed_model_round_trip_is_exact_and_size_matches_theory(tmp_path, centroid_dtype):
    torch.manual_seed(0)
    example = (torch.randn(4, 1, 8, 8),)
    model = eval_mode(export_model(digits_cnn().eval(), example).module())
    plans, skipped = plan_layers(find_layer_weights(model), BlockSizes(), 256, 4)
    assert not skipped and len(plans) == 5
    for plan in plans:
        quantize_layer(model, plan, iterations=5, centroid_dtype=centroid_dtype)
    path = tmp_path / "model.ipq"
    manifest = save_ipq(model, example, path, dense_dtype="float32")
    loaded = load_ipq(path)

    for plan in plans:  # every product-quantized weight comes back bit for bit
        name = plan.layer.name
        assert torch.equal(loaded.get_parameter(name), model.get_submodule(name.rpartition(".")[0]).weight)
    inputs = torch.randn(7, 1, 8, 8)  # another batch size: the packed graph keeps a dynamic batch dimension
    assert torch.allclose(loaded(inputs), model(inputs), atol=1e-5)

    payload = theoretical_bytes(manifest)
    assert payload == (sum(-(-plan.num_blocks * index_bits(plan.centroids) // 8) for plan in plans)
                       + sum(plan.centroids * plan.block_size for plan in plans)
                       * (1 if centroid_dtype == "int8" else 2)
                       + (4 * len(plans) if centroid_dtype == "int8" else 0)
                       + sum(t.numel() * t.element_size() for n, t in model.state_dict().items()
                             if n in dense_names(manifest)))  # float32 dense here, batch-norm counters int64
    with safe_open(str(path), framework="pt") as packed:
        compressed = packed.get_tensor(GRAPH_KEY).numel() + packed.get_tensor(MANIFEST_KEY).numel()
        tensor_count = len(packed.keys())
    size = path.stat().st_size
    # Payload + compressed graph and manifest + a safetensors header of ~100 bytes per (concatenated) tensor.
    assert tensor_count <= 7  # indices, centroids (+ scales), dense per dtype, graph, manifest
    assert payload + compressed <= size <= payload + compressed + 100 * tensor_count + 256
    indices_bytes = sum(-(-layer["num_blocks"] * layer["bits"] // 8) for layer in manifest["layers"])
    # Blocks of 4 (1x1 conv), 8 (linear) and 9 (3x3 conv) at <= 8 bits: at most 2 bits of index per weight.
    assert indices_bytes * 8 <= 2 * sum(plan.layer.numel for plan in plans)


def test_the_packed_graph_carries_no_node_provenance(tmp_path):
    # A re-exported graph records where each node was traced from; on a small model that was 13 % of the file.
    example = (torch.randn(4, 1, 8, 8),)
    model = eval_mode(export_model(digits_cnn().eval(), example).module())
    assert any("from_node" in node.meta for node in export_model(model, example).graph.nodes)
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 16, 4)
    quantize_layer(model, plans[0], iterations=2)
    save_ipq(model, example, tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as packed:
        graph = lzma.decompress(packed.get_tensor(GRAPH_KEY).numpy().tobytes())  # a stored (uncompressed) zip
    assert b'"nn_module_stack"' in graph and b"from_node" not in graph and b"stack_trace" not in graph
    torch.testing.assert_close(load_ipq(tmp_path / "m.safetensors")(*example), model(*example), rtol=1e-3, atol=1e-3)


def dense_names(manifest: dict) -> set[str]:
    return {entry["name"] for entry in manifest["dense"]}


def test_loader_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a modelpress.ipq"):
        load_ipq(path)


def test_int8_activations_are_calibrated_into_the_packed_graph(tmp_path):
    torch.manual_seed(0)
    example = (torch.randn(4, 1, 8, 8),)
    model = eval_mode(export_model(digits_cnn().eval(), example).module())
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 256, 4)
    for plan in plans:
        quantize_layer(model, plan, iterations=5, centroid_dtype="int8")
    calibration = [(torch.randn(32, 1, 8, 8),) for _ in range(4)]
    save_ipq(model, example, tmp_path / "a8.ipq", activation_calibration=calibration)
    loaded = load_ipq(tmp_path / "a8.ipq")
    rounding_nodes = [n for n in loaded.graph.nodes if n.target == torch.ops.aten.round.default]
    assert len(rounding_nodes) == len(plans)
    inputs = torch.randn(64, 1, 8, 8)
    expected = model(inputs)
    # int8 inputs perturb the logits a little (SQNR well above 20 dB), never wildly.
    noise = (loaded(inputs) - expected).pow(2).sum()
    assert 0 < noise and 10 * torch.log10(expected.pow(2).sum() / noise) > 20


def test_parameters_the_graph_never_reads_are_not_stored(tmp_path):
    class WithUnusedHead(torch.nn.Module):  # like a BERT whose pooler is not part of the exported output
        def __init__(self):
            super().__init__()
            self.body, self.unused_head = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

        def forward(self, x):
            return self.body(x)

    example = (torch.randn(4, 64),)
    model = eval_mode(export_model(WithUnusedHead().eval(), example).module())
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 16, 4)
    assert [plan.layer.name for plan in plans] == ["body.weight"]
    quantize_layer(model, plans[0], iterations=3)
    manifest = save_ipq(model, example, tmp_path / "m.safetensors")
    assert manifest["unread"] == ["unused_head.bias", "unused_head.weight"]
    assert {entry["name"] for entry in manifest["dense"]} == {"body.bias"}
    packed = load_ipq(tmp_path / "m.safetensors")
    torch.testing.assert_close(packed(*example), model(*example), rtol=1e-3, atol=1e-3)


def _linear_with_skewed_codeword_use(tmp_path):
    """A 256 x 512 linear whose weights are heavy-tailed (Laplace) with a quarter of them pruned to zero, as a
    pruned pretrained layer's are: k-means then uses its codewords very unequally (the all-zero block most), so the
    index stream has well under 8 bits of entropy per index."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(512, 256)
    with torch.no_grad():
        weight = torch.distributions.Laplace(0.0, 0.05).sample(layer.weight.shape)
        layer.weight.copy_(weight * (torch.rand(256, 128, 1) > 0.25).float().expand(256, 128, 4).reshape(256, 512))
    example = (torch.randn(4, 512),)
    model = eval_mode(export_model(torch.nn.Sequential(layer).eval(), example).module())
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 256, 4)
    quantize_layer(model, plans[0], iterations=8)
    return model, example


def test_indices_are_entropy_coded_when_that_is_smaller_and_load_back_exactly(tmp_path):
    model, example = _linear_with_skewed_codeword_use(tmp_path)
    path = tmp_path / "skewed.safetensors"
    manifest = save_ipq(model, example, path)
    assert manifest["indices_codec"] == "xz"
    raw_index_bytes = -(-manifest["layers"][0]["num_blocks"] * 8 // 8)
    with safe_open(str(path), framework="pt") as packed:
        stored = packed.get_tensor("indices").numel()
        assert packed.metadata()["version"] == "3"
    assert stored < raw_index_bytes * 0.95  # k-means' unequal codeword use is worth at least 5 % here
    assert path.stat().st_size < theoretical_bytes(manifest) + 2048  # the saving shows in the file
    name = manifest["layers"][0]["name"]
    assert torch.equal(load_ipq(path).get_parameter(name), model.get_submodule(name.rpartition(".")[0]).weight)


def test_uniformly_used_codewords_stay_raw_and_version_2_files_still_load(tmp_path):
    torch.manual_seed(0)
    example = (torch.randn(4, 1, 8, 8),)
    model = eval_mode(export_model(digits_cnn().eval(), example).module())
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 4, 4)
    for plan in plans:
        quantize_layer(model, plan, iterations=3)
    path = tmp_path / "small.safetensors"
    # 2-bit indices of a tiny CNN: xz's header would outweigh the saving
    assert save_ipq(model, example, path, dense_dtype="float32")["indices_codec"] == "raw"
    _rewrite(path, metadata={"version": "2"})  # a file written before entropy coding: same layout, raw indices
    assert torch.allclose(load_ipq(path)(*example), model(*example), atol=1e-5)


def test_an_index_stream_that_expands_past_the_manifests_layers_is_refused(tmp_path):
    import lzma

    from compression.archive.errors import InvalidUpload
    from compression.pq.packing import INDEX_FILTERS

    model, example = _linear_with_skewed_codeword_use(tmp_path)
    path = tmp_path / "bomb.safetensors"
    save_ipq(model, example, path)
    bomb = lzma.compress(bytes(64 << 20), format=lzma.FORMAT_XZ, filters=INDEX_FILTERS)  # 64 MiB of zeros
    _rewrite(path, tensors={"indices": torch.frombuffer(bytearray(bomb), dtype=torch.uint8)})
    with pytest.raises(InvalidUpload, match="indices: expands past"):
        load_ipq(path)


def _rewrite(path, tensors: dict | None = None, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as packed:
        current = {key: packed.get_tensor(key) for key in packed.keys()}
        header = packed.metadata()
    save_file(current | (tensors or {}), str(path), metadata=header | (metadata or {}))


class _WithEmptyTokens(torch.nn.Module):
    """A linear layer beside an empty parameter, as a ViT with zero register tokens holds one ([1, 0, width])."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)
        self.register_tokens = torch.nn.Parameter(torch.zeros(1, 0, 16))

    def forward(self, x):
        return self.fc(x) + self.register_tokens.sum()  # (a sum over no tokens: 0)


def test_a_model_with_an_empty_parameter_packs_and_loads(tmp_path):
    # Its architecture's placeholder, one element expanded to no elements, failed torch.export.save.
    torch.manual_seed(0)
    example = (torch.randn(4, 16),)
    model = eval_mode(export_model(_WithEmptyTokens().eval(), example).module())
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 16, 4)
    for plan in plans:
        quantize_layer(model, plan, iterations=3)
    save_ipq(model, example, tmp_path / "m.ipq", dense_dtype="float32")
    inputs = torch.randn(3, 16)
    torch.testing.assert_close(load_ipq(tmp_path / "m.ipq")(inputs), model(inputs))
