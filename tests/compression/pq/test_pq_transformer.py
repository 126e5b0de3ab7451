"""iPQ + int8 on a transformer keeps its hidden states (issue 10): the feed-forward layers get blocks of 4 (kind
"ffn"), and k-means weighs each input feature by its mean square input, which matters for pretrained encoders
whose LayerNorms scale a few channels far above the others (outlier features)."""

import torch

from compression.context import RunContext
from compression.data import Dataset
from compression.pq import apply_ipq
from compression.pq.activations import linear_input_second_moments
from compression.pq.layers import find_layer_weights
from compression.specs.ipq import BlockSizes, IPQSpec
from compression.task import Task
from tests.compression.prune.conftest import exported
from tests.compression.real_shapes import bert_inputs, tiny_bert

VOCAB = 512


def pretrained_like_bert():
    """A tiny BERT with what trained encoders have and a fresh one lacks: four outlier channels that every
    LayerNorm scales 8x, and feed-forward weights large enough to matter against the residual stream."""
    model = tiny_bert(layers=2, hidden=64, intermediate=256, vocab=VOCAB)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                parameter[:4] *= 8.0
            if name.endswith(("intermediate.dense.weight", "output.dense.weight")) and "attention" not in name:
                parameter.mul_(3.0)
    return model


def encoder_task(tmp_path):
    ids, mask = bert_inputs(batch=96, length=16, vocab=VOCAB)
    mask[:] = 1
    arrays = {f"{split}.{name}": tensor.numpy() for split in ("train", "val")
              for name, tensor in (("input_ids", ids), ("attention_mask", mask))}
    dataset = Dataset.from_arrays(arrays, ["input_ids", "attention_mask"])
    example = (ids[:4], mask[:4])
    program = exported(pretrained_like_bert(), example)
    return program, Task(dataset, program, example, tmp_path)


def test_feed_forward_layers_of_a_transformer_are_their_own_kind_with_blocks_of_four():
    program = exported(pretrained_like_bert(), bert_inputs(vocab=VOCAB))
    kinds = {layer.name: layer.kind for layer in find_layer_weights(program)}
    assert kinds["bert.encoder.layer.0.intermediate.dense.weight"] == "ffn"
    assert kinds["bert.encoder.layer.0.output.dense.weight"] == "ffn"
    assert kinds["bert.encoder.layer.0.attention.self.query.weight"] == "attention"
    assert BlockSizes().ffn == 4 and BlockSizes().linear == 8  # a CNN's linear layers keep blocks of 8


def test_input_moments_are_read_from_the_exported_graph_without_changing_it():
    program = exported(pretrained_like_bert(), bert_inputs(vocab=VOCAB))
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    before = str(program.graph)
    moments = linear_input_second_moments(program, {name}, [bert_inputs(vocab=VOCAB)])
    assert set(moments) == {name} and moments[name].shape == (64,)
    assert float(moments[name][:4].mean()) > 20 * float(moments[name][4:].mean())  # the 8x outlier channels
    assert str(program.graph) == before


def test_ipq_int8_keeps_a_transformer_close_to_fp32_where_the_old_defaults_did_not(tmp_path):
    """No finetuning: what the codebooks alone keep. Embedding tables are left dense in both runs, as random
    (untrained) embeddings have no structure for k-means to find."""
    program, task = encoder_task(tmp_path)
    common = dict(centroid_dtype="int8", num_groups=1, finetune_last_group=False, kmeans_iterations=8,
                  min_embedding_rows=VOCAB + 1)
    old = IPQSpec(block_sizes=BlockSizes(ffn=8), activation_weighted=False, **common)
    before = apply_ipq(old, program, task, RunContext()).metrics
    after = apply_ipq(IPQSpec(**common), program, task, RunContext()).metrics
    assert after["quantized_layers"]["bert.encoder.layer.0.output.dense.weight"]["block_size"] == 4
    # Measured: old 21.4 dB (cosine 0.9966), new 34.6 dB (cosine 0.9998).
    assert before["after"]["sqnr_db"] < 24 < 30 < after["after"]["sqnr_db"]
    assert after["after"]["cosine"] > 0.999 > before["after"]["cosine"]
