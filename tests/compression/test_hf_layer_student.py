"""A 'layers' distillation student: the upload's own encoder with fewer layers, initialised from its weights
(DistilBERT's recipe), for Hugging Face folder jobs (issue 10)."""

import copy
import json
import zipfile

import pytest
import torch
from pydantic import ValidationError

from compression.context import RunContext
from compression.dry_run import DryRunFailed
from compression.hf_program import example_rows, load_folder_model
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from compression.specs.distill import LayersStudent, kept_layers
from tests.hf_folders import CORPUS, add_sentence_transformers_files, bert_folder, jsonl_bytes, zip_bytes


@pytest.mark.parametrize("teacher, keep, expected", [(4, 2, [1, 3]), (6, 3, [1, 3, 5]), (6, 1, [5]),
                                                     (12, 6, [1, 3, 5, 7, 9, 11]), (6, 4, [1, 2, 4, 5])])
def test_kept_layers_are_evenly_spaced_and_end_at_the_last(teacher, keep, expected):
    assert kept_layers(LayersStudent(keep=keep), teacher) == expected


@pytest.mark.parametrize("teacher, keep, expected", [(4, 1, [0]), (4, 2, [0, 3]), (6, 3, [0, 3, 5]),
                                                     (10, 9, [0, 1, 2, 3, 5, 6, 7, 8, 9])])
def test_a_first_layer_unlike_the_others_is_kept_and_the_rest_spaced_over_the_later_ones(teacher, keep, expected):
    assert kept_layers(LayersStudent(keep=keep), teacher, keep_first=True) == expected


@pytest.mark.parametrize("spec, message", [({"keep": 0}, "greater than or equal to 1"),
                                           ({"keep": 2, "layers": [0]}, "exactly one of"), ({}, "exactly one of"),
                                           ({"layers": [2, 0]}, "increasing"), ({"layers": [1, 1]}, "increasing")])
def test_a_malformed_spec_is_refused(spec, message):
    with pytest.raises(ValidationError, match=message):
        LayersStudent(**spec)


@pytest.mark.parametrize("spec", [LayersStudent(keep=4), LayersStudent(layers=[0, 4]),
                                  LayersStudent(layers=[0, 1, 2, 3])])
def test_as_many_layers_as_the_teacher_or_a_missing_one_is_refused(spec):
    with pytest.raises(ValueError, match="fewer layers than the model"):
        kept_layers(spec, 4)


def _truncated_by_hand(folder, kept):
    """The folder's BertModel with its layer list cut to `kept`, pooled as the sentence-transformers folder says."""
    model = load_folder_model(folder, "feature-extraction")
    model.model.encoder.layer = torch.nn.ModuleList(copy.deepcopy(model.model.encoder.layer[i]) for i in kept)
    return model


def _job(tmp_path, folder, stages):
    (tmp_path / "m.zip").write_bytes(zip_bytes(folder))
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:48], "val": CORPUS[48:]}))
    return run_folder_pipeline(tmp_path / "m.zip", tmp_path / "d.jsonl", "feature-extraction", stages,
                               EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_kd_into_half_the_layers_of_a_sentence_encoder_then_int8(tmp_path):
    from transformers import AutoModel

    folder = add_sentence_transformers_files(bert_folder(tmp_path / "bert", layers=4), "mean", False)
    kd = KDSpec(student={"kind": "layers", "keep": 2}, training={"steps": 3, "batch_size": 8, "lr": 1e-2})
    result = _job(tmp_path, folder, [kd, PTQSpec()])
    stage = result.stages[0]
    method = stage.metrics["method_metrics"]
    assert method["student_spec"] | {"parameters": None, "teacher_parameters": None} == {
        "kind": "layers", "layers": [1, 3], "teacher_layers": 4, "layer_list": "encoder.layer", "parameters": None,
        "teacher_parameters": None}
    assert method["student_parameters"] < method["teacher_parameters"]
    assert "before" in method["student_fidelity"] and method["loss"] == "cosine"

    # Before training the student computes what the upload truncated by hand computes, sentence pooling included.
    ids, mask = example_rows(tmp_path / "work" / "dataset.npz", "val")
    untrained = load_program(tmp_path / "work" / "students" / "0" / "student.pt2").module()
    by_hand = _truncated_by_hand(tmp_path / "work" / "source", [1, 3])
    with torch.no_grad():
        hidden = by_hand.model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(untrained(ids, mask), expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(stage.model(ids, mask), expected, atol=1e-4)  # then it trained

    # The trained student comes back as a 2-layer folder that from_pretrained loads.
    written = stage.metrics["hf_folder"]
    assert written["written"], written
    with zipfile.ZipFile(next(a for a in stage.artifacts if a.kind == "model.hf_folder").path) as archive:
        archive.extractall(tmp_path / "unzipped")
    loaded = AutoModel.from_pretrained(tmp_path / "unzipped", local_files_only=True).eval()
    assert loaded.config.num_hidden_layers == 2 and len(loaded.encoder.layer) == 2
    with torch.no_grad():
        hidden = loaded(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(pooled, stage.model(ids, mask), atol=1e-5, rtol=1e-4)
    assert (tmp_path / "unzipped" / "modules.json").exists()

    # The int8 stage after it is a 2-layer folder too, checked against the trained student (its own error only).
    quantized = result.stages[1].metrics["hf_folder"]
    assert quantized["written"] and quantized["format"] == "int-quantized", quantized
    with torch.no_grad():
        int8 = result.stages[1].model(ids, mask)
        from_trained, from_untrained = (float((int8 - float_output).abs().max() / float_output.abs().max())
                                        for float_output in (stage.model(ids, mask), untrained(ids, mask)))
    assert quantized["stage_model_relative_difference_to_float"] == pytest.approx(from_trained, rel=1e-3)
    assert from_untrained > 2 * from_trained
    with zipfile.ZipFile(next(a for a in result.stages[1].artifacts if a.kind == "model.hf_folder").path) as archive:
        assert json.loads(archive.read("config.json"))["num_hidden_layers"] == 2


def test_keeping_every_layer_fails_the_job_in_its_dry_run(tmp_path):
    kd = KDSpec(student={"kind": "layers", "layers": [0, 1]}, training={"steps": 1})
    with pytest.raises(DryRunFailed, match=r"stage 0 \(kd\) cannot run on this model: a 'layers' student keeps "
                                           "fewer layers than the model"):
        _job(tmp_path, bert_folder(tmp_path / "bert"), [kd])


def test_a_student_transformers_cannot_build_is_refused_with_the_reason(tmp_path):
    # RWKV's weight initialisation divides by (layers - 1): a one-layer student raised a bare ZeroDivisionError
    from bench.hf_architecture_sweep import save_tokenizer, tiny_model
    from compression.hf_layer_student import write_layers_student

    tiny_model("rwkv", "causal-lm").save_pretrained(tmp_path / "rwkv")
    save_tokenizer(tmp_path / "rwkv")
    with pytest.raises(ValueError, match=r"cannot build this rwkv model with 1 layer\(s\) \(ZeroDivisionError"):
        write_layers_student(tmp_path / "rwkv", "causal-lm", LayersStudent(keep=1), tmp_path / "student")


def test_a_config_that_refuses_a_layer_count_is_refused_with_the_other_students(tmp_path):
    # Funnel's num_hidden_layers is the sum of its block_sizes: setting it raised a bare NotImplementedError
    from bench.hf_architecture_sweep import save_tokenizer, tiny_model
    from compression.hf_layer_student import write_layers_student

    tiny_model("funnel", "feature-extraction").save_pretrained(tmp_path / "funnel")
    save_tokenizer(tmp_path / "funnel")
    with pytest.raises(ValueError, match="num_hidden_layers, which this funnel config derives from other fields "
                                         r"and refuses .*; distill into a 'low_rank' or 'zoo' student, or prune"):
        write_layers_student(tmp_path / "funnel", "feature-extraction", LayersStudent(keep=1), tmp_path / "student")


def test_lists_inside_a_layer_as_long_as_the_layer_list_are_not_taken_for_layers():
    # T5's blocks each hold a list of their attention and MLP: in a 2-layer T5 it looked like a second layer list
    from compression.hf_layer_student import layer_stacks

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"num_hidden_layers": 2, "model_type": "t5"})()
            self.block = torch.nn.ModuleList([Block(), Block()])

    assert [name for name, _ in layer_stacks(Model())] == ["block"]


def test_a_pt2_job_refuses_a_layers_student_in_its_dry_run(tmp_path, example_files):
    model_path, dataset_path = example_files
    kd = KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 1})
    with pytest.raises(DryRunFailed, match="made from the layers of a Hugging Face folder upload"):
        run_pipeline(model_path, dataset_path, [kd], EvaluationSpec(latency=False), RunContext(), tmp_path)


def test_a_classifier_keeps_its_head_and_the_named_layers(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from compression.hf_layer_student import write_layers_student

    teacher_folder = bert_folder(tmp_path / "bert", classes=3, layers=4)
    details = write_layers_student(teacher_folder, "sequence-classification", LayersStudent(layers=[0, 2]),
                                   tmp_path / "student")
    assert (details["layers"], details["teacher_layers"], details["layer_list"]) == ([0, 2], 4, "bert.encoder.layer")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_folder, local_files_only=True)
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student", local_files_only=True)
    assert student.config.num_hidden_layers == 2 and (tmp_path / "student" / "tokenizer.json").exists()
    ours, theirs = student.state_dict(), teacher.state_dict()
    for name in ("classifier.weight", "bert.pooler.dense.weight", "bert.embeddings.word_embeddings.weight"):
        assert torch.equal(ours[name], theirs[name])
    assert torch.equal(ours["bert.encoder.layer.1.output.dense.weight"],
                       theirs["bert.encoder.layer.2.output.dense.weight"])


def test_a_decoder_student_keeps_the_attention_kind_of_each_kept_layer(tmp_path):
    """GPT-Neo alternates global and local attention, said per layer in its config (and in a run-length form it
    rebuilds the list from): a student of layers 1 and 2 of [global, local, global, local] is [local, global]."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from compression.hf_layer_student import write_layers_student
    from tests.hf_folders import save_tokenizer

    vocab = save_tokenizer(tmp_path / "neo")
    config = GPTNeoConfig(vocab_size=vocab, hidden_size=32, num_layers=4, num_heads=2, max_position_embeddings=64,
                          attention_types=[[["global", "local"], 2]], window_size=4)
    torch.manual_seed(0)
    GPTNeoForCausalLM(config).save_pretrained(tmp_path / "neo")
    details = write_layers_student(tmp_path / "neo", "causal-lm", LayersStudent(layers=[1, 2]), tmp_path / "student")
    student = load_folder_model(tmp_path / "student", "causal-lm").model
    assert details["layers"] == [1, 2] and student.config.attention_layers == ["local", "global"]
    teacher = load_folder_model(tmp_path / "neo", "causal-lm").model
    torch.testing.assert_close(student.transformer.h[0].attn.attention.k_proj.weight,
                               teacher.transformer.h[1].attn.attention.k_proj.weight)


def test_a_longformer_student_keeps_the_window_of_each_kept_layer(tmp_path):
    """Longformer lists one attention window per layer and refuses a config whose list is longer than its layers:
    the student of layers 0 and 2 of windows [4, 8, 12] has [4, 12]."""
    from transformers import LongformerConfig, LongformerModel

    from compression.hf_layer_student import write_layers_student
    from tests.hf_folders import save_tokenizer

    vocab = save_tokenizer(tmp_path / "longformer")
    config = LongformerConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=80, attention_window=[4, 8, 12])
    torch.manual_seed(0)
    LongformerModel(config).save_pretrained(tmp_path / "longformer")
    write_layers_student(tmp_path / "longformer", "feature-extraction", LayersStudent(layers=[0, 2]),
                         tmp_path / "student")
    student = load_folder_model(tmp_path / "student", "feature-extraction").model
    assert student.config.attention_window == [4, 12]


def test_a_student_keeps_every_per_layer_kind_list_of_its_kept_layers(tmp_path):
    """Cohere2-MoE lists each layer's attention (`layer_types`) and MLP (`mlp_layer_types`, dense or sparse); the
    second list was not cut, and transformers refused the student's config (StrictDataclassClassValidationError)."""
    from bench.hf_architecture_sweep import tiny_model
    from compression.hf_layer_student import write_layers_student
    from tests.hf_folders import save_tokenizer

    teacher = tiny_model("cohere2_moe", "causal-lm")
    teacher.config.mlp_layer_types = ["dense", "sparse"]  # distinguishable kinds: the student keeps layer 1's
    save_tokenizer(tmp_path / "teacher")
    type(teacher)(teacher.config).save_pretrained(tmp_path / "teacher")
    write_layers_student(tmp_path / "teacher", "causal-lm", LayersStudent(layers=[1]), tmp_path / "student")
    student = load_folder_model(tmp_path / "student", "causal-lm").model
    assert student.config.layer_types == ["full_attention"] and student.config.mlp_layer_types == ["sparse"]


def test_a_speech_recognizer_whose_encoder_config_counts_the_layers_keeps_some_of_them(tmp_path):
    """Parakeet's config holds `num_hidden_layers` in its `encoder_config` (Omnilingual ASR's in `audio_config`):
    the student sets it there, and the folder check reads it there (refused for lack of a count before
    2026-12-06)."""
    from transformers import AutoModelForCTC

    from bench.hf_architecture_sweep import folder_zip
    from compression.archive.hf_folder import read_hf_folder
    from compression.hf_layer_student import write_layers_student

    archive = folder_zip("parakeet_ctc", "speech-recognition", tmp_path)
    assert read_hf_folder(archive).signature()["hf"]["num_hidden_layers"] == 2
    with zipfile.ZipFile(archive) as files:
        files.extractall(tmp_path / "parakeet")
    details = write_layers_student(tmp_path / "parakeet", "speech-recognition", LayersStudent(layers=[1]),
                                   tmp_path / "student")
    assert (details["layers"], details["teacher_layers"]) == ([1], 2)
    teacher = AutoModelForCTC.from_pretrained(tmp_path / "parakeet", local_files_only=True)
    student = AutoModelForCTC.from_pretrained(tmp_path / "student", local_files_only=True)
    assert student.config.encoder_config.num_hidden_layers == 1 and (tmp_path / "student" / "vocab.json").exists()
    ours, theirs = student.state_dict(), teacher.state_dict()
    first, second = "encoder.layers.0.", "encoder.layers.1."  # the teacher's second layer is the student's first
    assert set(ours) == {name for name in theirs if not name.startswith(first)} - {
        name for name in theirs if name.startswith(second)} | {
        name.replace(second, first) for name in theirs if name.startswith(second)}
    assert all(torch.equal(tensor, theirs[name.replace(first, second) if name.startswith(first) else name])
               for name, tensor in ours.items())


def test_a_segmentation_heads_feature_layers_follow_the_kept_layers(tmp_path):
    """BEiT's segmentation decoder reads the outputs of four chosen layers (`out_indices`, 1-based): the student's
    point at the last kept layer at or before each, and a student that would leave the decoder fewer distinct
    layers than it reads is refused with why."""
    from transformers import BeitConfig, BeitForSemanticSegmentation

    from compression.hf_layer_student import write_layers_student

    torch.manual_seed(0)
    config = BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                        intermediate_size=64, out_indices=[2, 3, 5, 6], pool_scales=[1, 2], auxiliary_channels=16,
                        num_labels=3)
    BeitForSemanticSegmentation(config).save_pretrained(tmp_path / "beit")
    details = write_layers_student(tmp_path / "beit", "semantic-segmentation", LayersStudent(keep=4),
                                   tmp_path / "student")
    assert details["layers"] == [1, 2, 4, 5]
    student = BeitForSemanticSegmentation.from_pretrained(tmp_path / "student")
    assert student.config.out_indices == [1, 2, 3, 4]
    with torch.no_grad():
        assert student(pixel_values=torch.randn(1, 3, 32, 32)).logits.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"reads the outputs of layers \[2, 3, 5, 6\] \(out_indices\), and the kept "
                                         r"layers \[2, 5\] leave it 2 distinct ones"):
        write_layers_student(tmp_path / "beit", "semantic-segmentation", LayersStudent(keep=2), tmp_path / "two")
