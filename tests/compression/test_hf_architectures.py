"""Architectures beyond BERT, GPT-2 and Llama, uploaded as Hugging Face folders and run through the service's own
path (`run_folder_pipeline`), each one that failed before (bench/hf_architecture_sweep.py finds them): tiny random
models of a few hundred thousand parameters, a few seconds each."""

import json
import zipfile

import numpy as np
import pytest
import torch

from bench.hf_architecture_sweep import (
    WORDS,
    folder_zip,
    save_tokenizer,
    text_dataset,
    tiny_model,
)
from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import read_jsonl
from compression.context import RunContext
from compression.dry_run import DryRunFailed
from compression.fidelity import relative_max_gap
from compression.formats import hf_folder
from compression.hf_program import (
    folder_to_program,
    load_folder_model,
    usable_positions,
)
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, LLMPTQSpec, PruneSpec, PTQSpec, QATSpec

RTN = LLMPTQSpec(algorithm="rtn", bits=8, group_size=None, calibration={"samples": 4, "sequence_length": 16},
                 evaluation={"context_length": 16, "generation_tokens": 0})


def _job(tmp_path, model_type, task, spec):
    archive = folder_zip(model_type, task, tmp_path)
    read_hf_folder(archive, task=task)  # the upload check
    dataset = text_dataset(tmp_path, labels=task == "sequence-classification")
    return run_folder_pipeline(archive, dataset, task, [spec], EvaluationSpec(latency=False), RunContext(),
                               tmp_path / "work")


def test_roberta_int8_ptq_leaves_its_integer_position_ids_unobserved(tmp_path):
    # RoBERTa computes position ids as int32 `cumsum(mask) * mask + padding_idx`: the histogram observer the x86
    # quantizer put on those adds failed the dry run ("histogram_cpu" not implemented for 'Int').
    result = _job(tmp_path, "roberta", "feature-extraction", PTQSpec(calibration_samples=8))
    folder = result.stages[0].metrics["hf_folder"]
    assert result.stages[0].metrics["metric_points"] > 0.9 and folder["written"], folder


@pytest.mark.parametrize("model_type", ["deberta-v2", "mpnet"])
def test_encoders_without_sdpa_attention_export_with_eager_attention(tmp_path, model_type):
    folder = tmp_path / model_type
    tiny_model(model_type, "feature-extraction").save_pretrained(folder)
    save_tokenizer(folder)
    splits = read_jsonl(text_dataset(tmp_path, labels=False), keep_text=True)
    example = folder_to_program(folder, "feature-extraction", splits, tmp_path / "m.pt2", tmp_path / "d.npz")
    program = load_program(tmp_path / "m.pt2").module()
    expected = load_folder_model(folder, "feature-extraction")(*example)
    assert torch.allclose(program(*example), expected, atol=1e-5)


def test_a_model_that_rescales_its_weights_on_its_first_call_is_exported_without_that_step(tmp_path):
    # RWKV divides some weights in place on its first call in eval mode: the program recorded the division (a
    # parameter mutation, repeated on each call) and every method failed on it ("a leaf Variable that requires
    # grad is being used in an in-place operation").
    from compression.parameter_writes import written_parameters

    folder = tmp_path / "rwkv"
    model = tiny_model("rwkv", "causal-lm")
    model.config.rescale_every = 1  # the second block's weights halved
    model.save_pretrained(folder)
    save_tokenizer(folder)
    splits = read_jsonl(text_dataset(tmp_path, labels=False), keep_text=True)
    example = folder_to_program(folder, "causal-lm", splits, tmp_path / "m.pt2", tmp_path / "d.npz")
    program = load_program(tmp_path / "m.pt2")
    assert written_parameters(program) == []
    expected = load_folder_model(folder, "causal-lm")(*example)
    assert torch.allclose(program.module()(*example), expected, atol=1e-5)
    assert torch.allclose(program.module()(*example), expected, atol=1e-5)  # the weights stay as they are


@pytest.mark.parametrize("model_type", [
    "opt",  # tied lm_head: written as two tensors sharing memory, which safetensors refuses
    "gpt_neo",  # its causal mask is a buffer no checkpoint stores: left on the meta device
    "gemma",  # its embedding scale likewise; rebuilding the module from the config failed
    "gpt_neox",  # the checkpoint's `embed_out` is the model's `lm_head` (transformers renames it on loading)
    "qwen3_moe",  # a mixture of experts: loaded whole (its experts are stacked on loading), quantized per expert
    # weight initialisations that read c_proj.weight, out_proj.weight: those layers stay float (the folder failed
    # to load back, "'Linear' object has no attribute 'weight'")
    "gpt_bigcode", "falcon_mamba",
    # a dense Nemotron-H: transformers' rule that stacks its experts matches no stored tensor (it was refused)
    "nemotron_h",
])
def test_causal_lms_stream_block_by_block_and_load_back(tmp_path, model_type):
    result = _job(tmp_path, model_type, "causal-lm", RTN)
    metrics = result.stages[0].metrics  # perplexity of the written folder, loaded back with transformers
    assert metrics["perplexity"] == pytest.approx(result.baseline["perplexity"], rel=0.02)


def test_an_int8_embedding_table_is_targeted_by_name_not_every_embedding_class(tmp_path):
    # The scheme targeted the class "Embedding", which also took OPT's learned position table (an Embedding
    # subclass with its own forward): the folder failed to load back ("unexpected keyword argument").
    result = _job(tmp_path, "opt", "causal-lm", RTN.model_copy(update={"embeddings": "int8"}))
    metrics = result.stages[0].metrics
    assert metrics["perplexity"] == pytest.approx(result.baseline["perplexity"], rel=0.02)
    config = json.loads((tmp_path / "work" / "0_llm_ptq" / "model" / "config.json").read_text())
    targets = [group["targets"] for group in config["quantization_config"]["config_groups"].values()]
    assert ["model.decoder.embed_tokens"] in targets and ["Linear"] in targets


@pytest.mark.parametrize("model_type, algorithm, reason", [
    # A mixture of experts is quantized per expert (`compression.llm.moe`), but GPT-OSS's checkpoints hold its
    # experts stacked, where compressed-tensors holds no quantized layer
    ("gpt_oss", "rtn", r"stored \[experts, in, out\] with biases"),
    # no load: FalconLinear computes `input @ self.weight.T` itself, and Falcon's weight initialisation reads every
    # linear layer's weight (either alone refuses it)
    ("falcon", "rtn", "its weight initialisation reads the float weight of linear layers holding 100%"),
    # RWKV's weight initialisation reads every linear layer's weight: its folder could not load with any quantized
    ("rwkv", "rtn", "its weight initialisation reads the float weight of linear layers holding 100%"),
    # the same for ModernBERT-decoder, whose blocks are found although its `get_decoder()` is its output layer
    # (before: "no list of 2 decoder blocks found")
    ("modernbert-decoder", "rtn", "its weight initialisation reads the float weight of linear layers holding 100%"),
    # Reformer's blocks take the previous attention output first, which the model passes by name: refused when the
    # calibration inputs are recorded (before: an internal TypeError while the first block was quantized)
    ("reformer", "rtn", "this model's ReformerLayer takes `prev_attn_output` first"),
])
def test_what_llm_ptq_cannot_do_is_refused_at_once_with_the_reason(tmp_path, model_type, algorithm, reason):
    with pytest.raises(ValueError, match=reason):
        _job(tmp_path, model_type, "causal-lm", RTN.model_copy(update={"algorithm": algorithm, "bits": 4,
                                                                          "group_size": 32}))


def _groups(stage) -> list[dict]:
    [written] = [a for a in stage.artifacts if a.name == hf_folder.ARTIFACT_NAME]
    with zipfile.ZipFile(written.path) as archive:
        return list(json.loads(archive.read("config.json"))["quantization_config"]["config_groups"].values())


GPT_BIGCODE_INIT_READS = [f"transformer.h.{block}.{layer}.c_proj" for block in (0, 1) for layer in ("attn", "mlp")]


def test_a_4_bit_folder_stores_the_layers_the_weight_initialisation_reads_one_code_per_int8(tmp_path):
    # GPT-BigCode's `_init_weights` reads `c_proj.weight`, which a packed compressed-tensors layer does not have:
    # the folder did not load back ("'Linear' object has no attribute 'weight'"); then those layers were written
    # float. Now they hold their 4-bit codes in int8 (`int-quantized`), as their `weight`.
    spec = PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32}, activations=None,
                   export_onnx=False, selection_samples=16)
    [stage] = _job(tmp_path, "gpt_bigcode", "causal-lm", spec).stages
    folder = stage.metrics["hf_folder"]
    assert folder["written"] and folder["relative_difference_to_stage_model"] < 1e-3, folder
    assert folder["unpacked_for_weight_initialisation"] == GPT_BIGCODE_INIT_READS
    groups = _groups(stage)
    [unpacked] = [group for group in groups if GPT_BIGCODE_INIT_READS[0] in group["targets"]]
    assert unpacked["format"] == "int-quantized" and unpacked["weights"]["num_bits"] == 4
    assert set(GPT_BIGCODE_INIT_READS) <= set(unpacked["targets"])
    [packed] = [group for group in groups if group["format"] == "pack-quantized"]
    assert "transformer.h.0.attn.c_attn" in packed["targets"]  # the layers the initialisation does not read


def test_a_qat_folder_keeps_the_input_quantizers_of_the_layers_the_weight_initialisation_reads(tmp_path):
    # QAT quantizes the inputs of GPT-BigCode's c_proj too: such layers were left packed, and the folder did not
    # load ("'Linear' object has no attribute 'weight'").
    spec = QATSpec(calibration_samples=16, training={"steps": 2, "batch_size": 8, "warmup_steps": 0})
    [stage] = _job(tmp_path, "gpt_bigcode", "causal-lm", spec).stages
    folder = stage.metrics["hf_folder"]
    assert folder["written"] and folder["relative_difference_to_stage_model"] < 1e-3, folder
    assert folder["unpacked_for_weight_initialisation"] == GPT_BIGCODE_INIT_READS
    [unpacked] = [group for group in _groups(stage) if GPT_BIGCODE_INIT_READS[0] in group["targets"]]
    assert unpacked["format"] == "int-quantized" and unpacked["input_activations"]["num_bits"] == 8
    assert set(GPT_BIGCODE_INIT_READS) <= set(unpacked["targets"])


def test_only_packed_layers_the_initialisation_reads_are_unpacked():
    # RWKV's reads every block linear's weight
    from compression.hf_folder_export import _unpack_init_reads
    from compression.hf_folder_graph import FolderLayout
    from compression.llm.quantize import WeightFormat, rtn

    model = tiny_model("rwkv", "causal-lm")

    def quantized(bits: int) -> dict:
        return {name: rtn(layer.weight.detach(), WeightFormat(bits=bits, group_size=None), torch.float32)
                for name, layer in model.named_modules() if isinstance(layer, torch.nn.Linear)}

    # int8 layers keep their `weight` (int8 codes), which the initialisation reads without harm
    layout = FolderLayout(weights=quantized(8))
    assert _unpack_init_reads(layout, model) == [] and not layout.unpacked
    layout = FolderLayout(weights=quantized(4))
    blocks = {name for name in layout.weights if name.startswith("rwkv.blocks.")}
    unpacked = _unpack_init_reads(layout, model)
    assert blocks <= set(unpacked) and not any(layout.packed(name) for name in unpacked) and not layout.floats


def test_a_tokenizer_that_reads_no_tokens_is_refused(tmp_path):
    # transformers loads a qwen2 folder's tokenizer.json with Qwen2Tokenizer (byte-level BPE), which reads no word
    # of a word-level tokenizer: the job ran on padding alone.
    folder = tmp_path / "qwen2"
    tiny_model("qwen2", "sequence-classification").save_pretrained(folder)
    save_tokenizer(folder)
    splits = read_jsonl(text_dataset(tmp_path, labels=True), keep_text=True)
    with pytest.raises(ValueError, match="loaded by transformers as Qwen2Tokenizer, turns the text into no tokens"):
        folder_to_program(folder, "sequence-classification", splits, tmp_path / "m.pt2", tmp_path / "d.npz")


def test_windows_longer_than_the_model_positions_are_refused_before_any_work(tmp_path):
    # OPT's learned position table has max_position_embeddings rows: longer windows failed with an IndexError.
    spec = RTN.model_copy(update={"evaluation": RTN.evaluation.model_copy(update={"context_length": 1024})})
    with pytest.raises(ValueError, match="1024 tokens per window .* exceed the 512 positions this opt model has"):
        _job(tmp_path, "opt", "causal-lm", spec)


def test_a_decoder_classifier_distilled_into_its_last_layer_is_written_as_its_folder(tmp_path):
    # The student's program holds Llama's rotary `inv_freq`, a buffer no checkpoint stores: the folder was refused
    # as "a tensor that is no tensor of the folder's model".
    result = _job(tmp_path, "llama", "sequence-classification", KDSpec(student={"kind": "layers", "keep": 1},
                                                                       training={"steps": 1, "batch_size": 8}))
    folder = result.stages[0].metrics["hf_folder"]
    assert folder["written"] and folder["relative_difference_to_stage_model"] < 1e-3, folder


def test_a_first_layer_built_unlike_the_others_is_kept_by_a_count_and_refused_when_left_out(tmp_path):
    # ModernBERT's layer 0 has no attention norm; its last layer cannot become the student's layer 0. A `keep`
    # count keeps layer 0 (that student was refused before); a list without it is refused in the dry run.
    result = _job(tmp_path / "keep", "modernbert", "feature-extraction",
                  KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 1, "batch_size": 8}))
    assert result.stages[0].metrics["method_metrics"]["student_spec"]["layers"] == [0]
    assert result.stages[0].metrics["hf_folder"]["written"]
    with pytest.raises(DryRunFailed, match=r"tensors \['layers.0.attn_norm.weight'\] differ\); keep the layers"):
        _job(tmp_path / "list", "modernbert", "feature-extraction", KDSpec(student={"kind": "layers", "layers": [1]}))


def test_albert_is_distilled_into_fewer_passes_of_its_shared_layer(tmp_path):
    # ALBERT applies one layer group num_hidden_layers times: a 'layers' student found no list of layers and was
    # refused. It is now the same weights applied fewer times; a list of layers names nothing to choose among.
    result = _job(tmp_path / "keep", "albert", "feature-extraction", KDSpec(student={"kind": "layers", "keep": 1},
                                                                             training={"steps": 1, "batch_size": 8}))
    student = result.stages[0].metrics["method_metrics"]["student_spec"]
    assert (student["shared_passes"], student["teacher_layers"]) == (1, 2)
    assert student["layer_list"] == "encoder.albert_layer_groups"
    [folder] = [a for a in result.stages[0].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    assert hf_folder.load(folder.path).config.num_hidden_layers == 1
    with pytest.raises(DryRunFailed, match="passes of the same weights, not layers to choose among: give 'keep'"):
        _job(tmp_path / "list", "albert", "feature-extraction", KDSpec(student={"kind": "layers", "layers": [1]}))


def test_a_dense_first_layer_before_experts_is_kept_by_a_layer_count(tmp_path):
    # DeepSeek-V3's first layer (`first_k_dense_replace`) has a dense MLP, the others experts: keeping the last
    # layer gave the student's layer 0 the experts its config builds as a dense MLP, and the student was refused.
    result = _job(tmp_path, "deepseek_v3", "causal-lm", KDSpec(student={"kind": "layers", "keep": 1},
                                                               training={"steps": 1, "batch_size": 8}))
    assert result.stages[0].metrics["method_metrics"]["student_spec"]["layers"] == [0]
    assert result.stages[0].metrics["hf_folder"]["written"]


def test_modernbert_structured_pruning_cuts_the_fused_gated_mlp_and_writes_its_folder(tmp_path):
    # ModernBERT's MLP is `input, gate = Wi(x).chunk(2, -1); Wo(act(input) * gate)`: the chunk froze every group
    # (the job was refused). Channel j is now row j and row 128 + j of Wi and column j of Wo, in both layers.
    # (Its attention heads, from one Wqkv of rows [q | k | v], are pruned too unless excluded; a head count other
    # than hidden_size / head size has no config field, so the folder needs them whole.)
    result = _job(tmp_path, "modernbert", "feature-extraction", PruneSpec(kind="structured", sparsity=0.25,
                                                                          exclude=["*attn*"]))
    metrics = result.stages[0].metrics
    pruned = metrics["method_metrics"]
    assert [(g["layers"], g["channels"], g["kept"]) for g in pruned["groups"]] == [
        ([f"model.layers.{i}.mlp.Wi.weight"], 128, 96) for i in range(2)]
    assert pruned["parameters_before"] - pruned["parameters"] == 2 * 32 * (2 * 64 + 64)
    folder = metrics["hf_folder"]
    assert folder["written"] and folder["config_changes"] == {"intermediate_size": 96}, folder
    assert folder["relative_difference_to_stage_model"] < 1e-5 and metrics["cosine"] > 0.99


def test_an_architecture_torch_export_cannot_trace_is_refused_with_what_to_do(tmp_path):
    # Longformer's sequence classifier gives its first token global attention, whose positions (`nonzero`) size
    # tensors by the data; such a failure was reported as an internal error with a traceback.
    with pytest.raises(ValueError, match=r"this longformer model \(LongformerForSequenceClassification\) could not "
                                         r"be run and exported with torch\.export .*upload the \.pt2"):
        _job(tmp_path, "longformer", "sequence-classification", PTQSpec(calibration_samples=8))


def test_an_xmod_folder_without_a_default_language_is_refused_at_upload(tmp_path):
    # X-MOD picks a language adapter per input from `lang_ids`, which no job input carries: without a default
    # language its forward raised in the job's export ("Input language unknown").
    archive = folder_zip("xmod", "feature-extraction", tmp_path)
    read_hf_folder(archive, task="feature-extraction")  # with one, accepted (and it runs: the sweep)
    with zipfile.ZipFile(archive) as source:
        files = {name: source.read(name) for name in source.namelist()}
    files["config.json"] = json.dumps(json.loads(files["config.json"]) | {"default_language": None}).encode()
    with zipfile.ZipFile(archive, "w") as out:
        for name, data in files.items():
            out.writestr(name, data)
    with pytest.raises(InvalidUpload, match=r"'default_language', which is None: set it to one of its languages "
                                            r"\['en_XX'\]"):
        read_hf_folder(archive, task="feature-extraction")


def test_longformer_exports_with_its_global_attention_switch_taken_and_asserted(tmp_path):
    """Longformer (and LED) turn global attention on with `.any().item()` over the mask, a data-dependent branch
    torch.export refused (GuardOnDataDependentSymNode): the job failed in its first seconds. Drafted, the program
    takes the branch the example takes (no global attention: no input here can ask for it) and asserts it."""
    result = _job(tmp_path, "longformer", "feature-extraction", PTQSpec(calibration_samples=8))
    stage = result.stages[0]
    assert stage.metrics["method_metrics"]["quantized_layers"] == 12
    assert stage.metrics["hf_folder"]["written"], stage.metrics["hf_folder"]
    assert stage.metrics["hf_folder"]["relative_difference_to_stage_model"] <= 1e-3
    program = load_program(tmp_path / "work" / "model.pt2")  # through the safe loader: its Piecewise expression
    assert any(node.target == torch.ops.aten._assert_scalar.default for node in program.graph.nodes)


def test_only_a_data_dependent_branch_is_drafted_and_its_other_side_fails_loudly():
    from compression.hf_program import check_branches_hold
    from compression.io import export_branching_model

    class Switch(torch.nn.Module):
        def forward(self, x):
            return x * 2 if (x > 0).any().item() else x * 3

    drafted = export_branching_model(Switch(), (-torch.ones(4, 3),))
    program = drafted.module()
    torch.testing.assert_close(program(-torch.ones(2, 3)), -3 * torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="Runtime assertion failed"):
        program(torch.ones(2, 3))
    # the job runs a drafted program on its splits' first rows before any work, and names the rows that differ
    arrays = {"train.x": -np.ones((40, 3), np.float32),
              "val.x": np.concatenate([-np.ones((33, 3)), np.ones((1, 3))]).astype(np.float32)}
    check_branches_hold(drafted, {"train.x": arrays["train.x"]}, ["train"], ["x"])
    with pytest.raises(ValueError, match="rows 32-33 of split 'val' take another"):
        check_branches_hold(drafted, arrays, ["train", "val"], ["x"])

    class Broken(torch.nn.Module):
        def forward(self, x):
            return x @ torch.ones(5, 5)  # a shape error is no branch to draft

    with pytest.raises(Exception, match="same reduction dim"):
        export_branching_model(Broken(), (torch.ones(4, 3),))


def test_an_embedding_with_its_own_forward_is_written_dequantized_in_the_folder(tmp_path):
    # RoFormer's sinusoidal position table is an nn.Embedding whose forward takes a shape: compressed-tensors'
    # quantized embedding replaced that forward, and the folder check failed with a bare TypeError. The table is
    # now written as its dequantized values, so the folder computes what the stage's model computes.
    result = _job(tmp_path, "roformer", "feature-extraction", PTQSpec(activations=None, export_onnx=False,
                                                                      selection_samples=16))
    folder = result.stages[0].metrics["hf_folder"]
    assert folder["written"] and folder["dequantized_tables"] == ["encoder.embed_positions"], folder
    assert folder["relative_difference_to_stage_model"] < 1e-4 and folder["quantized_modules"] > 10



def test_a_layers_student_of_a_model_with_layer_count_shaped_tensors_is_refused_with_the_reason(tmp_path):
    # ESM's contact head reads every layer's attention maps (width layers x heads): copying the teacher's into a
    # 1-layer student failed as a RuntimeError from load_state_dict.
    with pytest.raises(ValueError, match=r"contact_head\.regression\.weight \[1, 8\] would be \[1, 4\] with 1 "
                                         r"layers.*'low_rank' or uploaded student"):
        _job(tmp_path, "esm", "feature-extraction", KDSpec(student={"kind": "layers", "keep": 1},
                                                            training={"steps": 2, "batch_size": 8}))


def _gpt2_classifier_zip(tmp_path, padding_side: str):
    import zipfile

    folder = tmp_path / f"gpt2-{padding_side}"
    tiny_model("gpt2", "sequence-classification").save_pretrained(folder)
    save_tokenizer(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text()) | {"padding_side": padding_side}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    archive = tmp_path / f"gpt2-{padding_side}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.iterdir()):
            out.write(path, path.name)
    return archive


@pytest.mark.parametrize("padding_side, rewritten", [("right", True), ("left", False)])
def test_a_gpt2_classifier_runs_as_its_opt_rewrite_when_that_gives_the_upload_s_outputs(tmp_path, padding_side,
                                                                                       rewritten):
    # GPT-2's Conv1D layers cannot be held by a compressed-tensors folder; its OPT rewrite (nn.Linear) can. OPT
    # counts positions over the mask, so with left padding the rewrite differs and the upload runs as it is.
    archive = _gpt2_classifier_zip(tmp_path, padding_side)
    dataset = text_dataset(tmp_path, labels=True)
    spec = PTQSpec(activations=None, export_onnx=False, selection_samples=16)
    result = run_folder_pipeline(archive, dataset, "sequence-classification", [spec], EvaluationSpec(latency=False),
                                 RunContext(), tmp_path / "work")
    note, folder = result.baseline["rewritten_as"], result.stages[0].metrics["hf_folder"]
    if rewritten:
        assert note["to"] == "opt" and note["max_output_gap"] < 1e-5
        assert folder["written"] and folder["quantized_modules"] >= 9, folder  # 8 projections + the score
        config = json.loads((tmp_path / "work" / "hf" / "0_ptq_hf" / "config.json").read_text())
        assert config["architectures"] == ["OPTForSequenceClassification"] and len(config["id2label"]) == 3
    else:
        assert note["to"] is None and note["max_output_gap"] > 1e-3
        assert not folder["written"] and "Conv1D" in folder["reason"]


def test_a_gpt2_classifier_opt_cannot_express_runs_as_uploaded(tmp_path):
    import zipfile

    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path / "gpt2-eps"
    config = GPT2Config(vocab_size=320, n_embd=32, n_layer=1, n_head=2, n_positions=64, num_labels=3,
                        pad_token_id=1, layer_norm_epsilon=1e-6)  # OPT's layer norms use 1e-5
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    save_tokenizer(folder)
    archive = tmp_path / "gpt2-eps.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.iterdir()):
            out.write(path, path.name)
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=True), "sequence-classification",
                                 [PruneSpec(recalibrate_batches=0)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["rewritten_as"]["to"] is None and "layer_norm_epsilon" in result.baseline[
        "rewritten_as"]["why"]
    assert result.stages[0].metrics["method_metrics"]["sparsity"] > 0.4  # the upload itself was pruned


def test_a_layers_student_keeps_the_same_indices_of_sibling_layer_lists(tmp_path):
    # XLM keeps each layer's parts in four sibling lists (attentions, layer_norm1, ffns, layer_norm2): a 'layers'
    # student was refused for not finding one list of layers.
    result = _job(tmp_path, "xlm", "feature-extraction", KDSpec(student={"kind": "layers", "keep": 1},
                                                                training={"steps": 2, "batch_size": 8}))
    student = result.stages[0].metrics["method_metrics"]["student_spec"]
    assert student["layers"] == [1] and student["layer_list"] == "attentions, layer_norm1, ffns, layer_norm2"
    assert result.stages[0].metrics["hf_folder"]["written"], result.stages[0].metrics["hf_folder"]


def test_text_longer_than_a_roberta_position_table_is_cut_to_what_it_takes(tmp_path):
    # RoBERTa numbers positions from padding_idx + 1, so its 512-row table (this config's) takes 510 tokens:
    # texts cut at 512 failed the job with "index 512 is out of bounds for dimension 1 with size 512".
    assert usable_positions(tiny_model("roberta", "feature-extraction")) == 510
    assert usable_positions(tiny_model("bert", "feature-extraction")) == 512
    archive = folder_zip("roberta", "sequence-classification", tmp_path)
    long_words = " ".join(WORDS * 40)  # 800 words, one token each
    lines = [json.dumps({"split": split, "text": long_words if row % 2 else "the cat sees the ball", "label": row % 3})
             for split, rows in (("train", 8), ("val", 6)) for row in range(rows)]
    dataset = tmp_path / "long.jsonl"
    dataset.write_text("\n".join(lines) + "\n")
    result = run_folder_pipeline(archive, dataset, "sequence-classification", [PTQSpec(calibration_samples=4)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.stages[0].metrics["accuracy"] is not None
    tokens = np.load(tmp_path / "work" / "dataset.npz")["train.input_ids"]
    assert tokens.shape == (8, 510)  # the long rows cut where the table ends


def _encoder_decoder_folder(tmp_path, architecture: str):
    import zipfile

    import transformers

    folder = tmp_path / architecture
    if architecture.startswith("T5"):
        config = transformers.T5Config(vocab_size=320, d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16,
                                       pad_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    elif architecture.startswith("Marian"):
        config = transformers.MarianConfig(vocab_size=320, d_model=32, encoder_layers=1, decoder_layers=1,
                                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                           decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1,
                                           eos_token_id=2, decoder_start_token_id=1, decoder_vocab_size=320)
    else:
        config = transformers.BartConfig(vocab_size=320, d_model=32, encoder_layers=1, decoder_layers=1,
                                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                         decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1,
                                         bos_token_id=3, eos_token_id=2, decoder_start_token_id=2, num_labels=3)
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    model.save_pretrained(folder)
    save_tokenizer(folder)
    archive = tmp_path / f"{architecture}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.iterdir()):
            out.write(path, path.name)
    return model, archive


def test_a_t5_checkpoint_gives_its_encoder_features(tmp_path):
    # T5ForConditionalGeneration's task is seq2seq-lm (`test_seq2seq_lm`); its features, asked for, are those of
    # the encoder (the whole model wants decoder inputs too: its export failed), as sentence-T5's are.
    model, archive = _encoder_decoder_folder(tmp_path, "T5ForConditionalGeneration")
    assert read_hf_folder(archive).task == "seq2seq-lm"
    assert read_hf_folder(archive, task="feature-extraction").task == "feature-extraction"
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=False), "feature-extraction",
                                 [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.stages[0].metrics["metric_points"] > 90
    ids = torch.randint(6, 300, (2, 7))
    folder_model = load_folder_model(tmp_path / "T5ForConditionalGeneration", "feature-extraction")
    torch.testing.assert_close(folder_model(ids, torch.ones_like(ids)), model.encoder(input_ids=ids)[0])
    # Loaded as T5EncoderModel, the stage's folder is one transformers loads (the encoder alone, as sentence-T5's).
    assert result.stages[0].metrics["hf_folder"]["written"], result.stages[0].metrics["hf_folder"]
    [written] = [a for a in result.stages[0].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    assert type(hf_folder.load(written.path)).__name__ == "T5EncoderModel"


W4_PER_GROUP = PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 16}, activations=None,
                       export_onnx=False, selection_samples=16)


@pytest.mark.parametrize(("architecture", "spec"), [("BartForConditionalGeneration", PTQSpec(calibration_samples=8)),
                                                    ("BartForConditionalGeneration", W4_PER_GROUP),
                                                    ("MarianMTModel", PTQSpec(calibration_samples=8))],
                         ids=["bart-w8a8", "bart-w4-packed", "marian-w8a8-int8-table"])
def test_an_encoder_decoders_features_are_written_as_the_whole_model_with_its_encoder_compressed(tmp_path,
                                                                                              architecture, spec):
    # transformers has no BartEncoderModel: the folder of the encoder's tensors alone did not load (AutoModel built
    # BartModel, found none of its names and started them random), so no stage of a BART, mBART, Pegasus, Marian,
    # ... feature extractor had a folder. It is the whole model now, the decoder as uploaded.
    model, archive = _encoder_decoder_folder(tmp_path, architecture)
    [stage] = run_folder_pipeline(archive, text_dataset(tmp_path, labels=False), "feature-extraction", [spec],
                                  EvaluationSpec(latency=False), RunContext(), tmp_path / "work").stages
    assert stage.metrics["hf_folder"]["written"], stage.metrics["hf_folder"]
    [written] = [a for a in stage.artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(written.path)
    assert type(loaded).__name__ == type(model.model).__name__  # BartModel, MarianModel
    # compressed-tensors finds the encoder's layers by the whole model's names; the decoder is the upload's
    folder = written.path.with_name(written.path.name.removesuffix(".zip"))  # where the loader unzipped it
    assert "encoder.layers.0.fc1" in json.dumps(json.loads((folder / "config.json").read_text())["quantization_config"])
    torch.testing.assert_close(loaded.get_decoder().layers[0].fc1.weight, model.model.decoder.layers[0].fc1.weight)
    # The int8 token table, which the decoder reads too (`shared`), is held dequantized: Marian's is a plain
    # Embedding (BART's has its own forward, dequantized for that), and int8 codes there broke the decoder.
    assert "embed_tokens" in stage.metrics["hf_folder"]["dequantized_tables"] or spec.activations is None
    assert loaded.get_decoder().embed_tokens.weight.is_floating_point()
    assert stage.metrics["hf_folder"]["encoder_features"].startswith("model.get_encoder()")
    assert not hasattr(loaded, "ct_decompress_hook")  # the recipe loads them dequantized (encoder_features)
    rows = np.load(tmp_path / "work" / "dataset.npz")
    ids, mask = (torch.from_numpy(rows[f"val.{name}"][:4]) for name in ("input_ids", "attention_mask"))
    features = loaded.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    # what the writer measured of the folder against the upload's encoder (its check against the stage's model
    # passed), so running the encoder alone computes what the folder was checked to compute
    float_features = model.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    measured = stage.metrics["hf_folder"]["folder_relative_difference_to_float"]
    assert 0 < relative_max_gap(features, float_features) <= 2 * measured
    # and the whole model, decoder included, runs (its token table float, as it reads it)
    whole = loaded(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3])
    torch.testing.assert_close(whole.encoder_last_hidden_state, features)


def test_a_bart_classifier_reads_its_last_eos_token_without_a_boolean_mask(tmp_path):
    # BartForSequenceClassification selects the <eos> states with a boolean mask: torch.export traces that with a
    # data-dependent size and cannot load the program back ("expected no unbacked symbols").
    model, archive = _encoder_decoder_folder(tmp_path, "BartForSequenceClassification")
    ids = torch.randint(6, 300, (3, 9))
    ids[:, 6] = 2
    ids[0, 4] = 2  # two <eos> in every row: the last one counts
    ids[1:, 4] = 2
    folder_model = load_folder_model(tmp_path / "BartForSequenceClassification", "sequence-classification")
    torch.testing.assert_close(folder_model(ids, torch.ones_like(ids)),
                               model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=True), "sequence-classification",
                                 [PruneSpec(), PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False),
                                 RunContext(), tmp_path / "work")
    assert result.stages[1].metrics["accuracy"] is not None
    # Both stages are written back as folders transformers loads and that compute the stage's logits. The int8 one
    # was not: the check ran the base model and the head apart, so compressed-tensors' decompression (a hook on the
    # whole model's first call) never ran ("self and mat2 must have the same dtype").
    for stage in result.stages:
        assert stage.metrics["hf_folder"]["written"], stage.metrics["hf_folder"]
    [written] = [a for a in result.stages[1].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(written.path)  # the recipe: its own call decompresses
    assert type(loaded).__name__ == "BartForSequenceClassification"
    rows = np.load(tmp_path / "work" / "dataset.npz")
    ids, mask = (torch.from_numpy(rows[f"val.{name}"][:4]) for name in ("input_ids", "attention_mask"))
    ids[:, -1], mask[:, -1] = 2, 1  # transformers' head wants an <eos> in every row
    [program] = [a for a in result.stages[1].artifacts if a.name.endswith(".pt2")]
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits,
                               load_program(program.path).module()(ids, mask), atol=0.05, rtol=0)


def test_a_weight_quantized_inside_the_graph_is_written_as_its_codes(tmp_path):
    """DeepSeek-V2's classifier came out of convert with `kv_b_proj`'s weight quantize left in the graph (the codes
    computed from the float weight at run time, not stored): the folder writer read no codes there and its int8
    folder was refused ("weight quantizer ... is not int8 per output channel"). The codes are now folded with the
    graph's own quantize op, and the folder is checked against them, not against the float weight they come from."""
    [stage] = _job(tmp_path, "deepseek_v2", "sequence-classification", PTQSpec(calibration_samples=8)).stages
    folder = stage.metrics["hf_folder"]
    assert folder["written"], folder
    int8 = {target for group in _groups(stage) if group["weights"]["num_bits"] == 8 for target in group["targets"]}
    assert "model.layers.0.self_attn.kv_b_proj" in int8, sorted(int8)
