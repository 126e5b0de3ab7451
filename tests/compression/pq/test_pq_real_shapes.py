"""iPQ block sizes follow the layer's shape: long (k, 1) audio kernels are cut into short runs of taps, attention
projections get their own block size and small embedding tables stay in full precision."""

import numpy as np
import torch

from compression.context import RunContext
from compression.data import Dataset
from compression.pq import apply_ipq
from compression.pq.layers import find_layer_weights
from compression.pq.quantize import plan_layers
from compression.specs.ipq import BlockSizes, IPQSpec
from compression.task import Task
from tests.compression.prune.conftest import exported
from tests.compression.real_shapes import PitchCNN, bert_inputs, tiny_bert


def pitch_task(tmp_path):
    torch.manual_seed(0)
    model = PitchCNN(widths=(32, 16, 16, 16))
    with torch.no_grad():
        # A trained pitch CNN's first layer is a bank of band-pass filters (windowed sinusoids of many frequencies)
        # and its outputs are confident (sigmoid far from 0.5).
        taps = model.convs[0].weight.shape[2]
        generator = torch.Generator().manual_seed(0)
        frequency = 0.02 + 0.4 * torch.rand(len(model.convs[0].weight), 1, generator=generator)
        phase = 6.28 * torch.rand(len(model.convs[0].weight), 1, generator=generator)
        bank = torch.sin(6.28 * frequency * torch.arange(taps) + phase) * torch.hann_window(taps)
        model.convs[0].weight.copy_(bank.reshape(model.convs[0].weight.shape) / 4)
        model.classifier.weight.mul_(30)
    audio = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
    dataset = Dataset.from_arrays({"train.x": audio, "val.x": audio}, ["x"])
    example = (torch.from_numpy(audio[:4]),)
    program = exported(model, example)
    return program, Task(dataset, program, example, tmp_path)


def test_long_one_dimensional_kernels_get_short_blocks():
    program, _ = pitch_task(None)
    plans, skipped = plan_layers(find_layer_weights(program), BlockSizes(), 256, 4, min_weights=2048)
    blocks = {plan.layer.name: plan.block_size for plan in plans}
    assert blocks == {"convs.0.weight": 4, "convs.1.weight": 4, "convs.2.weight": 4, "convs.3.weight": 4}
    assert set(skipped) == {"classifier.weight"}  # 1536 weights


def test_ipq_of_an_audio_cnn_with_long_kernels_keeps_fidelity_far_better_than_whole_kernel_blocks(tmp_path):
    """No finetuning: what the codebooks alone keep. One 64-tap block per kernel (the old rule) collapses."""
    program, task = pitch_task(tmp_path)
    common = dict(num_groups=1, finetune_last_group=False, kmeans_iterations=10, min_weights=2048)
    shaped = apply_ipq(IPQSpec(**common), program, task, RunContext()).metrics
    whole = apply_ipq(IPQSpec(block_sizes=BlockSizes(conv=64), **common), program, task, RunContext()).metrics
    assert shaped["quantized_layers"]["convs.0.weight"]["block_size"] == 4
    assert whole["quantized_layers"]["convs.0.weight"]["block_size"] == 64
    # Top-1 agreement over 24 pitch bins; sigmoid outputs keep the cosine high even for a collapsed model.
    assert shaped["after"]["top1_agreement"] >= 0.75 and whole["after"]["top1_agreement"] <= 0.25
    assert shaped["after"]["sqnr_db"] > whole["after"]["sqnr_db"] + 1.5


def test_transformer_attention_projections_and_small_embeddings():
    model = tiny_bert(layers=1, hidden=32, vocab=2048)
    program = exported(model, bert_inputs(vocab=2048))
    layers = {layer.name: layer.kind for layer in find_layer_weights(program)}
    projections = [f"bert.encoder.layer.0.attention.self.{n}.weight" for n in ("query", "key", "value")]
    assert {layers[name] for name in projections} == {"attention"}
    assert layers["bert.encoder.layer.0.attention.output.dense.weight"] == "attention"
    assert layers["bert.encoder.layer.0.intermediate.dense.weight"] == "ffn"
    plans, skipped = plan_layers(find_layer_weights(program), BlockSizes(), 256, 4, min_weights=1024,
                                 min_embedding_rows=1024)
    blocks = {plan.layer.name: plan.block_size for plan in plans}
    assert blocks["bert.embeddings.word_embeddings.weight"] == 4
    assert blocks[projections[0]] == 4 and blocks["bert.encoder.layer.0.output.dense.weight"] == 4
    assert "position_embeddings" in " ".join(skipped) and "min_embedding_rows" in " ".join(skipped.values())


def test_long_kernels_are_cut_into_runs_of_about_four_taps():
    from compression.pq.layers import LayerWeight, block_size_for

    def taps(kernel: tuple[int, ...], in_channels: int = 3) -> int:
        layer = LayerWeight("conv.weight", "conv", (8, in_channels, *kernel))
        return block_size_for(layer, BlockSizes())

    assert taps((3, 3)) == 9 and taps((5, 1)) == 5  # small kernels: one block each
    assert taps((512, 1)) == 4 and taps((64, 1)) == 4 and taps((6, 2)) == 4
    assert taps((5, 5)) == 5 and taps((7, 7)) == 7 and taps((15,)) == 5 and taps((1175,)) == 5  # no 4: nearest
    assert taps((11,), in_channels=8) == 4  # a prime length: runs across kernels, of the row's divisor <= 4
