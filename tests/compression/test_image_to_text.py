"""An encoder-decoder that writes text for an image (a VisionEncoderDecoderModel: TrOCR, ViT-GPT2, Donut; task
image-to-text) uploaded as a Hugging Face folder: the program is the forward generation repeats (the image's
pixel values, the output so far -> the next token's logits at every output position), labelled by the `.npz`'s
reference texts or, where a split has none, by what the upload itself writes; the stage's folder is one
`from_pretrained` loads and generates with."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_architectures import model_types_by_task, task_of_architecture
from compression.archive.hf_folder import read_hf_folder
from compression.archive.npz import IGNORED_LABEL
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import CORPUS, vision_encoder_decoder_folder, zip_bytes

TRAIN, VAL = 12, 6


@pytest.fixture(scope="module")
def trocr(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trocr")
    folder = vision_encoder_decoder_folder(directory / "trocr")
    archive = directory / "trocr.zip"
    archive.write_bytes(zip_bytes(folder))
    return folder, archive


def _images(path, texts: bool = False, labels: bool = False):
    """uint8 images [N, 32, 32, 3] per split (channels-last, as image libraries give them)."""
    pixels = np.random.default_rng(0).integers(0, 256, (TRAIN + VAL, 32, 32, 3), dtype=np.uint8)
    arrays = {"train.x": pixels[:TRAIN], "val.x": pixels[TRAIN:]}
    if texts:
        arrays["val.transcript"] = np.array(CORPUS[:VAL])
    if labels:
        arrays["val.y"] = np.arange(VAL) % 2
    np.savez(path, **arrays)
    return path


def test_the_task_is_read_from_the_architecture_and_the_program_reads_the_image_and_the_decoders_input(trocr):
    """A VisionEncoderDecoderModel is image-to-text (it was taken for a causal LM and failed in its export); the
    other image-text-to-text classes (BLIP's captioner, VLMs) take a text prompt too and stay text models."""
    assert task_of_architecture("VisionEncoderDecoderModel") == "image-to-text"
    tables = model_types_by_task()
    assert tables["image-to-text"] == {"vision-encoder-decoder": "VisionEncoderDecoderModel"}
    assert "vision-encoder-decoder" not in tables["causal-lm"] and "blip" in tables["causal-lm"]
    folder = read_hf_folder(trocr[1])
    assert folder.task == "image-to-text"
    signature = folder.signature()
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 32, 32], "dtype": "float32"},
                                   {"name": "decoder_input_ids", "shape": [None, None], "dtype": "int64"}]
    assert signature["outputs"] == [{"name": "logits", "shape": [None, None, folder.config["decoder"]["vocab_size"]],
                                     "dtype": "float32"}]


def test_reference_texts_are_the_labels_and_the_int8_folder_generates(trocr, tmp_path):
    """With a split's reference texts, its labels are their tokens (the decoder fed them shifted behind its start
    token); int8 PTQ's folder is a VisionEncoderDecoderModel that loads and writes text."""
    folder, archive = trocr
    result = run_folder_pipeline(archive, _images(tmp_path / "images.npz", texts=True), None, [PTQSpec()],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "accuracy"
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(folder)(text_target=CORPUS[:VAL])["input_ids"]
    with np.load(tmp_path / "work" / "seq2seq.npz") as arrays:
        labels, fed = arrays["val.y"], arrays["val.decoder_input_ids"]
    for row, tokens in enumerate(expected):
        assert labels[row, :len(tokens)].tolist() == tokens
        assert (labels[row, len(tokens):] == IGNORED_LABEL).all()
        assert fed[row, :len(tokens)].tolist() == [2, *tokens[:-1]]  # behind the decoder's start token
    stage = result.stages[0]
    assert stage.metrics["compression_ratio"] > 1.5 and stage.metrics["hf_folder"]["written"], stage.metrics
    [artifact] = [a for a in stage.artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    assert type(loaded).__name__ == "VisionEncoderDecoderModel"
    with torch.no_grad():
        written = loaded.generate(pixel_values=torch.randn(2, 3, 32, 32), max_new_tokens=4, do_sample=False)
    assert written.shape[0] == 2


def test_without_references_the_upload_writes_the_labels_and_predicts_all_of_them(trocr, tmp_path):
    _, archive = trocr
    result = run_folder_pipeline(archive, _images(tmp_path / "images.npz"), None, [PTQSpec()],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    with np.load(tmp_path / "work" / "seq2seq.npz") as arrays:
        written = (arrays["val.y"] != IGNORED_LABEL).sum(1)
    assert written.max() > 3  # it writes text, not its end token alone
    assert result.baseline["accuracy"] == 1.0
    assert 0.5 < result.stages[0].metrics["accuracy"] <= 1.0


def test_class_labels_are_refused_with_where_reference_texts_go(trocr, tmp_path):
    with pytest.raises(InvalidUpload, match="an image-to-text model writes text: its job is measured against each "
                                            "split's reference texts"):
        run_folder_pipeline(trocr[1], _images(tmp_path / "images.npz", labels=True), None, [PTQSpec()],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_a_4_bit_folder_unties_the_decoders_output_layer_from_its_token_table(trocr, tmp_path):
    """TrOCR's output layer shares its token table (`tie_word_embeddings` in the nested decoder config): packed to 4
    bits, the layer has no `weight` for transformers to tie, and the folder did not load until the nested config
    said untied too."""
    _, archive = trocr
    result = run_folder_pipeline(archive, _images(tmp_path / "images.npz"), None,
                                 [PTQSpec(weights={"bits": 4}, activations=None, export_onnx=False)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    written = result.stages[0].metrics["hf_folder"]
    assert written["written"] and written["format"] == "pack-quantized", written
    [artifact] = [a for a in result.stages[0].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    assert hf_folder.load(artifact.path).config.decoder.tie_word_embeddings is False


@pytest.mark.parametrize("decoder", ["trocr", "gpt2"])
def test_a_layers_student_keeps_some_of_the_nested_decoders_layers(decoder, tmp_path):
    """The decoder's layer count sits in the nested `decoder` config (TrOCR's decoder_layers, GPT-2's n_layer): a
    'layers' student keeps one of its two layers, the encoder whole, and its folder says so."""
    folder = vision_encoder_decoder_folder(tmp_path / decoder, decoder=decoder)
    archive = tmp_path / f"{decoder}.zip"
    archive.write_bytes(zip_bytes(folder))
    assert read_hf_folder(archive).signature()["hf"]["num_hidden_layers"] == 2
    result = run_folder_pipeline(archive, _images(tmp_path / "images.npz"), None,
                                 [KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2})],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage = result.stages[0]
    assert stage.metrics["compression_ratio"] > 1.1 and stage.metrics["hf_folder"]["written"], stage.metrics
    [artifact] = [a for a in stage.artifacts if a.name == hf_folder.ARTIFACT_NAME]
    assert hf_folder.load(artifact.path).config.decoder.num_hidden_layers == 1


def test_donut_images_are_fitted_within_its_size_and_padded_centered_as_its_processor_does(tmp_path):
    # Donut's processor (its module needs torchvision here): the shortest edge to the smaller side of `size`,
    # shrunk to fit within `size`, padded with black, centered; `size` saved as a list is [width, height]. The
    # service stretched every document image to `size`.
    from compression.archive.pixel_scaling import PixelScaling, letterboxed_size
    from compression.hf_arrays import image_dataset

    processor = {"image_processor_type": "DonutImageProcessor", "do_resize": True, "size": [24, 32],
                 "do_thumbnail": True, "do_pad": True, "do_align_long_axis": False, "resample": 2,
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    scaling = PixelScaling.from_processor(processor)
    assert scaling.letterbox and scaling.output_size(50, 20) == (32, 24)  # [width, height] read as 32 high
    assert letterboxed_size(50, 20, 32, 24) == (32, 12)  # 24 wide makes it 60 high: fitted to 32 high
    assert letterboxed_size(20, 50, 32, 24) == (9, 24)  # 24 high makes it 60 wide: fitted to 24 wide
    assert PixelScaling.from_json(scaling.to_json()) == scaling
    images = np.random.default_rng(8).integers(0, 256, (2, 50, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "pages.npz", **{"val.x": images})
    with np.load(image_dataset(tmp_path / "pages.npz", scaling, [None, 3, 32, 24], tmp_path)) as converted:
        values = converted["val.x"]
    chw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    inner = torch.nn.functional.interpolate(chw, size=(32, 12), mode="bilinear", antialias=True)
    expected = torch.zeros(2, 3, 32, 24, dtype=torch.uint8)
    expected[:, :, :, 6:18] = inner  # (24 - 12) // 2 columns of black on each side
    np.testing.assert_allclose(values, (expected.numpy() / 255 - 0.5) / 0.5, atol=1e-5)
    # Turned a quarter clockwise first where asked and a wide page meets a tall size.
    turned = PixelScaling.from_processor({**processor, "do_align_long_axis": True})
    wide = images.transpose(0, 2, 1, 3).copy()  # 20 x 50
    np.savez(tmp_path / "wide.npz", **{"val.x": wide})
    with np.load(image_dataset(tmp_path / "wide.npz", turned, [None, 3, 32, 24], tmp_path)) as converted:
        rotated = torch.rot90(torch.from_numpy(wide).permute(0, 3, 1, 2), 3, dims=(2, 3)).contiguous()
        expected[:, :, :, 6:18] = torch.nn.functional.interpolate(rotated, size=(32, 12), mode="bilinear",
                                                                  antialias=True)
        np.testing.assert_allclose(converted["val.x"], (expected.numpy() / 255 - 0.5) / 0.5, atol=1e-5)
