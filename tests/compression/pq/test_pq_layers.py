import torch
from torch import nn

from compression.io import export_model
from compression.pq.layers import find_layer_weights
from compression.pq.packing import load_ipq, save_ipq
from compression.pq.quantize import order_groups, plan_layers, quantize_layer
from compression.specs.ipq import BlockSizes


class TokenClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(64, 16)
        self.conv = nn.Conv1d(16, 32, 1)
        self.head = nn.Linear(32, 4)

    def forward(self, tokens):
        features = self.conv(self.embedding(tokens).transpose(1, 2)).mean(-1)
        return self.head(features)


def test_layer_kinds_block_sizes_and_codebook_sizes_of_an_exported_model():
    torch.manual_seed(0)
    model = export_model(TokenClassifier().eval(), (torch.randint(0, 64, (2, 5)),)).module()
    layers = find_layer_weights(model)
    assert [(layer.name, layer.kind) for layer in layers] == [
        ("embedding.weight", "embedding"), ("conv.weight", "conv1x1"), ("head.weight", "linear")]
    plans, skipped = plan_layers(layers, BlockSizes(), 256, 4)
    assert {plan.layer.name: (plan.block_size, plan.centroids) for plan in plans} == {
        "embedding.weight": (4, 64),  # 256 blocks / 4 per centroid
        "conv.weight": (4, 32),  # 128 blocks
        "head.weight": (8, 4)}  # 16 blocks
    assert not skipped
    assert plan_layers(layers, BlockSizes(), 256, 4, min_weights=512)[1].keys() == {"head.weight"}


def test_embedding_model_round_trips_through_the_packed_file(tmp_path):
    torch.manual_seed(0)
    example = (torch.randint(0, 64, (2, 5)),)
    model = export_model(TokenClassifier().eval(), example).module()
    plans, _ = plan_layers(find_layer_weights(model), BlockSizes(), 256, 4)
    for plan in plans:
        quantize_layer(model, plan, iterations=5)
    save_ipq(model, example, tmp_path / "tokens.ipq")
    tokens = torch.randint(0, 64, (3, 5))  # another batch size; the sequence length was exported static
    assert torch.allclose(load_ipq(tmp_path / "tokens.ipq")(tokens), model(tokens), atol=1e-3)


def test_group_orders():
    layers = find_layer_weights(nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 64), nn.Linear(64, 8)))
    plans, _ = plan_layers(layers, BlockSizes(), 4, 1)
    names = lambda groups: [[plan.layer.name for plan in group] for group in groups]
    assert names(order_groups(plans, None, 2, "input_first")) == [["0.weight", "1.weight"], ["2.weight"]]
    assert names(order_groups(plans, None, 3, "output_first")) == [["2.weight"], ["1.weight"], ["0.weight"]]
    assert names(order_groups(plans, None, 1, "largest_first")) == [["1.weight", "0.weight", "2.weight"]]
    # Explicit groups: first matching group wins, unmatched layers form a last group.
    assert names(order_groups(plans, [["2.*"], ["0.*", "2.*"]], 1, "input_first")) == [
        ["2.weight"], ["0.weight"], ["1.weight"]]
