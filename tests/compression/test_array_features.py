"""A base image or audio model uploaded as a Hugging Face folder (Dinov2Model, ViTModel, ConvNextModel;
Wav2Vec2Model, HubertModel: tasks `image-feature-extraction` and `audio-feature-extraction`) gives its features
(`last_hidden_state`) for an `.npz` of images or waveforms, is judged on how close they stay to the original's
(cosine, and the rank agreement of the pooled vectors' similarities), and is handed back as a folder
`from_pretrained` loads. Such folders were refused before 2026-12-06 ("reads images, not text")."""

import json
import zipfile

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.fidelity import Fidelity, similarity_spearman
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec
from tests.hf_folders import (
    AUDIO_CONFIGS,
    VIT_PROCESSOR,
    WAV2VEC2_EXTRACTOR,
    bert_folder,
    image_folder,
    loaded_image_folder,
    scaled_val_images,
    zip_bytes,
)


def _zip(folder):
    archive = folder.parent / f"{folder.name}.zip"
    archive.write_bytes(zip_bytes(folder))
    return archive


@pytest.fixture(scope="module")
def vit_base(tmp_path_factory):
    """A ViTModel (no head), as google/vit-base-patch16-224-in21k is saved."""
    return _zip(image_folder(tmp_path_factory.mktemp("vit") / "vit", feature_extraction=True))


@pytest.fixture(scope="module")
def wav2vec2_base(tmp_path_factory):
    """A Wav2Vec2Model (no head) with its feature extractor's settings, as facebook/hubert-base-ls960's kin are."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("w2v") / "w2v"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**AUDIO_CONFIGS["wav2vec2"])).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(WAV2VEC2_EXTRACTOR))
    return _zip(folder)


def _images(directory, labels: bool = False):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    arrays = {"train.x": pixels[:24], "val.x": pixels[24:]}
    if labels:
        arrays["val.y"] = rng.integers(0, 3, 16)
    path = directory / ("labelled.npz" if labels else "images.npz")
    np.savez(path, **arrays)
    return path


def test_base_image_and_audio_models_are_read_as_feature_extractors(vit_base, wav2vec2_base, tmp_path):
    folder = read_hf_folder(vit_base)
    assert folder.task == "image-feature-extraction"
    assert read_hf_folder(vit_base, task="feature-extraction").task == "image-feature-extraction"  # same meaning
    signature = folder.signature()
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 32, 32], "dtype": "float32"}]
    assert signature["outputs"] == [{"name": "last_hidden_state", "shape": [None, None, 32], "dtype": "float32"}]
    assert signature["hf"]["classes"] is None and signature["hf"]["pixel_scaling"]["rescale"] == 1 / 255
    # A classifier's checkpoint serves as its base model when asked for features; a CNN's are a feature map.
    classifier = _zip(image_folder(tmp_path / "resnet", "resnet"))
    assert read_hf_folder(classifier).task == "image-classification"
    features = read_hf_folder(classifier, task="image-feature-extraction")
    assert features.signature()["outputs"][0]["shape"] == [None, 16, None, None]
    audio = read_hf_folder(wav2vec2_base)
    assert audio.task == "audio-feature-extraction"
    assert audio.signature()["inputs"] == [{"name": "input_values", "shape": [None, None], "dtype": "float32"}]
    # facebook/wav2vec2-base is saved with its pre-training heads: a class no task has, read for its features.
    with zipfile.ZipFile(wav2vec2_base) as archive:
        archive.extractall(tmp_path / "pretraining")
    config = json.loads((tmp_path / "pretraining" / "config.json").read_text())
    (tmp_path / "pretraining" / "config.json").write_text(json.dumps(config | {
        "architectures": ["Wav2Vec2ForPreTraining"]}))
    assert read_hf_folder(_zip(tmp_path / "pretraining")).task == "audio-feature-extraction"
    text = _zip(bert_folder(tmp_path / "bert"))
    with pytest.raises(InvalidUpload, match="transformers has no image-feature-extraction model for model_type "
                                            "'bert'"):
        read_hf_folder(text, task="image-feature-extraction")


def test_the_feature_tasks_take_the_base_models_of_single_images_and_audio_encoders():
    from compression.archive.hf_architectures import model_types_by_task

    tables = model_types_by_task()
    images, audio = tables["image-feature-extraction"], tables["audio-feature-extraction"]
    assert {"dinov2": "Dinov2Model", "vit": "ViTModel", "resnet": "ResNetModel", "clip": "CLIPModel"}.items() \
        <= images.items()
    # a dual encoder's vision tower saved alone reads images too (no mapping but the base one lists it)
    assert images["clip_vision_model"] == "CLIPVisionModel"
    # a video model's pixel_values are clips (VideoPrism's tower too); SAM wants prompts; a text model reads none
    assert not {"videomae", "vivit", "videoprism", "videoprism_vision_model", "sam", "bert"} & set(images)
    assert {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "audio-spectrogram-transformer": "ASTModel"}.items() \
        <= audio.items()
    # AutoModel builds Parakeet's CTC head itself (no base model); Whisper's base model needs decoder inputs
    assert not {"parakeet_ctc", "whisper", "bert"} & set(audio)


def test_an_image_feature_job_is_judged_on_its_features_and_written_back_as_a_folder(vit_base, tmp_path):
    images = _images(tmp_path)
    result = run_folder_pipeline(vit_base, images, None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "hidden_states" and result.baseline["metric"] == "cosine"
    stage = result.stages[0]
    assert stage.metrics["cosine"] > 0.95 and stage.metrics["similarity_spearman"] > 0.5
    assert stage.metrics["method_metrics"]["quantized_layers"] >= 12  # the blocks' linears, int8
    loaded = loaded_image_folder(stage)
    assert type(loaded).__name__ == "ViTModel"
    pixels = scaled_val_images(images)
    original = hf_folder.load(vit_base)
    with torch.no_grad():
        ours, theirs = loaded(pixel_values=pixels).last_hidden_state, original(pixel_values=pixels).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(ours.flatten(1), theirs.flatten(1)).mean().item()
    assert cosine == pytest.approx(stage.metrics["cosine"], abs=0.02)


def test_an_audio_feature_job_runs_on_waveforms(wav2vec2_base, tmp_path):
    rng = np.random.default_rng(0)
    waves = rng.normal(size=(24, 1600)).astype(np.float32)
    np.savez(tmp_path / "audio.npz", **{"train.x": waves[:16], "val.x": waves[16:]})
    result = run_folder_pipeline(wav2vec2_base, tmp_path / "audio.npz", None, [PruneSpec(sparsity=0.3)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "hidden_states"
    assert 0.5 < result.stages[0].metrics["cosine"] < 1.0  # pruned: near, not equal
    assert "similarity_spearman" in result.stages[0].metrics


def test_a_dual_encoder_gives_its_image_embedding_and_keeps_its_text_tower(tmp_path):
    """CLIP (and SigLIP, ALIGN, ...: transformers' zero-shot image classifiers) read for images: the program is
    `get_image_features`, [batch, projection], judged as embeddings; the text tower is not in the program (a
    stage pruned it too, 70 % of its token embeddings) and the stage's folder holds the upload's unchanged."""
    from transformers import CLIPConfig, CLIPModel

    from compression.io import load_program

    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config={**tower, "image_size": 32, "patch_size": 8},
                                text_config={**tower, "vocab_size": 100, "max_position_embeddings": 16},
                                projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    archive = _zip(tmp_path / "clip")
    signature = read_hf_folder(archive).signature()
    assert signature["hf"]["task"] == "image-feature-extraction"
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 32, 32], "dtype": "float32"}]
    assert signature["outputs"] == [{"name": "image_embeds", "shape": [None, 16], "dtype": "float32"}]

    result = run_folder_pipeline(archive, _images(tmp_path), None, [PruneSpec(sparsity=0.3)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "embeddings" and result.baseline["metric"] == "similarity_spearman"
    program = load_program(tmp_path / "work" / "model.pt2")
    assert not any("text" in name or "logit_scale" in name for name in program.state_dict)
    [artifact] = [artifact for artifact in result.stages[0].artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded.get_text_features(input_ids=ids).pooler_output,
                           clip.get_text_features(input_ids=ids).pooler_output)
        pixels = torch.randn(2, 3, 32, 32)
        pruned = loaded.get_image_features(pixel_values=pixels).pooler_output
        assert not torch.equal(pruned, clip.get_image_features(pixel_values=pixels).pooler_output)


def test_class_labels_for_features_are_refused_with_the_way_in(vit_base, tmp_path):
    with pytest.raises(InvalidUpload, match="class labels mean nothing for features; remove \\['val.y'\\] from the "
                                            ".npz, or upload a checkpoint saved with its classification head "
                                            "\\(task image-classification\\)"):
        run_folder_pipeline(vit_base, _images(tmp_path, labels=True), None, [PTQSpec()],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


@pytest.mark.parametrize("shape, dims", [((12, 5, 8), (1,)), ((12, 8, 3, 3), (2, 3))])
def test_hidden_states_without_a_mask_rank_their_mean_pooled_vectors(shape, dims):
    """An image transformer's tokens [N, L, H] or an audio encoder's frames are averaged, a feature map [N, C, H, W]
    pooled over its positions: the vectors whose similarities a search built on the features sees."""
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(shape, generator=generator)
    output = reference + 0.5 * torch.randn(shape, generator=generator)
    fidelity = Fidelity("hidden_states")
    fidelity.add(output, reference)
    expected = similarity_spearman(output.mean(dims), reference.mean(dims))
    assert fidelity.result()["similarity_spearman"] == pytest.approx(expected)
    assert expected < 0.99  # the noise moved some pairs
