"""Zero-shot image classifiers (CLIP, SigLIP) uploaded as Hugging Face folders: each image scored against the job's
candidate labels as transformers' pipeline scores it, from the image side alone, and written back whole."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.formats import hf_folder
from compression.hf_program import load_folder_model
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from compression.specs.prune import PruneSpec
from compression.zero_shot_images import SIGLIP_TEXT_TOKENS, tokenized_prompts
from tests.hf_folders import dual_encoder_folder, zip_bytes

TASK = "zero-shot-image-classification"
LABELS = ["cat", "dog", "bird"]
TEMPLATE = "the {} sees the ball"
PROMPTS = [TEMPLATE.replace("{}", label) for label in LABELS]


def _zipped(directory, model_type):
    folder = dual_encoder_folder(directory / model_type, model_type)
    archive = directory / f"{model_type}.zip"
    archive.write_bytes(zip_bytes(folder))
    return folder, archive


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _zipped(tmp_path_factory.mktemp("zero_shot"), "clip")


def _images(directory, labels: bool = True):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    arrays = {"train.x": pixels[:24], "val.x": pixels[24:]}
    if labels:
        arrays["val.y"] = rng.integers(0, len(LABELS), 16)
    path = directory / "images.npz"
    np.savez(path, **arrays)
    return path


def _evaluation(**fields):
    return EvaluationSpec(latency=False, candidate_labels=LABELS, hypothesis_template=TEMPLATE, **fields)


def test_the_task_is_asked_for_and_needs_the_tokenizer(clip, tmp_path):
    """A CLIPModel folder is still read for its image embedding unless the task says zero-shot; the signature's
    scores are one per candidate label, which the job names; a folder without its tokenizer is refused at
    upload."""
    folder, archive = clip
    assert read_hf_folder(archive).task == "image-feature-extraction"
    signature = read_hf_folder(archive, task=TASK).signature()
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 32, 32], "dtype": "float32"}]
    assert signature["outputs"] == [{"name": "logits_per_image", "shape": [None, None], "dtype": "float32"}]
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(bare, "w") as out:
        for path in folder.iterdir():
            if not path.name.startswith(("tokenizer", "special_tokens")):
                out.write(path, path.name)
    with pytest.raises(InvalidUpload, match="reads each candidate label's text with its tokenizer"):
        read_hf_folder(bare, task=TASK)


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_the_scores_are_the_models_own_logits_per_image(model_type, tmp_path):
    """The program's scores (image side, the label texts' embeddings held constant) equal the whole model's
    logits_per_image on the texts padded as transformers' pipeline pads them (SigLIP: to 64 tokens)."""
    folder = dual_encoder_folder(tmp_path / model_type, model_type)
    model = load_folder_model(folder, TASK, prompts=PROMPTS)
    texts = tokenized_prompts(folder, model_type, PROMPTS)
    assert texts["input_ids"].shape[1] == (SIGLIP_TEXT_TOKENS if model_type == "siglip" else 5)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        own = model.model(pixel_values=pixels, **texts).logits_per_image
        scores = model(pixels)
    assert scores.shape == (4, len(LABELS))
    torch.testing.assert_close(scores, own, rtol=1e-4, atol=1e-4)
    assert len({round(float(score), 4) for score in scores[0]}) == len(LABELS)  # the texts differ
    model.check_scores((pixels,))
    with torch.no_grad():
        model.logit_scale.mul_(2)  # what an architecture scoring otherwise looks like to the check
    with pytest.raises(ValueError, match="scores images against texts in a way the service does not reproduce"):
        model.check_scores((pixels,))


def test_a_zero_shot_job_is_judged_by_accuracy_and_written_back_whole(clip, tmp_path):
    """int8 PTQ of a CLIP choosing among three labels: labels are indices into them (accuracy, with top-1 agreement
    beside it); the program holds the image side and the three label embeddings, no text tower; the stage's folder
    is the whole CLIPModel, its text tower as uploaded, computing the stage's scores."""
    folder, archive = clip
    result = run_folder_pipeline(archive, _images(tmp_path), TASK, [PTQSpec()], _evaluation(), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["metric"] == "accuracy" and result.baseline["output_kind"] == "logits"
    assert "top1_agreement" in result.stages[0].metrics
    program = load_program(tmp_path / "work" / "model.pt2")
    assert program.state_dict["label_embeddings"].shape == (len(LABELS), 16)
    assert not any(name.startswith("model.text") for name in program.state_dict)
    assert result.stages[0].metrics["hf_folder"]["written"], result.stages[0].metrics["hf_folder"]
    [artifact] = [a for a in result.stages[0].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    original = load_folder_model(folder, TASK, prompts=PROMPTS).model
    ids = tokenized_prompts(folder, "clip", PROMPTS)["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded.get_text_features(input_ids=ids).pooler_output,
                           original.get_text_features(input_ids=ids).pooler_output)


def test_siglip_prunes_unlabelled_and_is_judged_by_top1_agreement(tmp_path):
    _, archive = _zipped(tmp_path, "siglip")
    result = run_folder_pipeline(archive, _images(tmp_path, labels=False), TASK, [PruneSpec(sparsity=0.3)],
                                 _evaluation(), RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "top1_agreement"
    assert result.stages[0].metrics["top1_agreement"] > 0


def test_a_zero_shot_job_without_candidate_labels_is_refused(clip, tmp_path):
    _, archive = clip
    with pytest.raises(InvalidUpload, match="set evaluation.candidate_labels"):
        run_folder_pipeline(archive, _images(tmp_path), TASK, [PTQSpec()], EvaluationSpec(latency=False),
                            RunContext(), tmp_path / "work")
