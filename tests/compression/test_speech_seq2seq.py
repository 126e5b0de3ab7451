"""An encoder-decoder that writes text for audio (Whisper, Speech2Text, Moonshine: task speech-seq2seq) uploaded
as a Hugging Face folder: the program is the forward generation repeats (the audio's features, the output so far ->
the next token's logits at every output position), labelled by the `.npz`'s reference transcripts or, where a
split has none, by what the upload itself writes (Whisper's language detection and forced tokens applied); every
method runs on it and the stage's folder is one `from_pretrained` loads and transcribes with."""

import io
import json

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_architectures import task_of_architecture
from compression.archive.hf_folder import read_hf_folder
from compression.archive.npz import IGNORED_LABEL
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import CORPUS, WHISPER_BINS, WHISPER_FRAMES, whisper_folder, zip_bytes

TRAIN, VAL = 12, 6


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    directory = tmp_path_factory.mktemp("whisper")
    archive = directory / "whisper.zip"
    archive.write_bytes(zip_bytes(whisper_folder(directory / "whisper")))
    return archive


def _features(path, transcripts: bool = False, labels: bool = False, rows: tuple[int, int] = (TRAIN, VAL)):
    """Log-mel-like features [examples, mel bins, frames] per split, as WhisperFeatureExtractor gives them."""
    values = np.random.default_rng(0).normal(0.0, 1.0, size=(sum(rows), WHISPER_BINS, WHISPER_FRAMES))
    arrays = {"train.input_features": values[:rows[0]].astype(np.float32),
              "val.input_features": values[rows[0]:].astype(np.float32)}
    if transcripts:
        arrays["val.transcript"] = np.array(CORPUS[:rows[1]])
    if labels:
        arrays["val.y"] = np.arange(rows[1]) % 2
    np.savez(path, **arrays)
    return path


def test_the_task_is_read_from_the_architecture_and_the_program_reads_the_decoders_input(whisper):
    assert task_of_architecture("WhisperForConditionalGeneration") == "speech-seq2seq"
    assert task_of_architecture("Speech2TextForConditionalGeneration") == "speech-seq2seq"
    folder = read_hf_folder(whisper)
    assert folder.task == "speech-seq2seq"
    signature = folder.signature()
    assert signature["inputs"] == [
        {"name": "input_features", "shape": [None, WHISPER_BINS, WHISPER_FRAMES], "dtype": "float32"},
        {"name": "decoder_input_ids", "shape": [None, None], "dtype": "int64"}]
    assert signature["outputs"] == [{"name": "logits", "shape": [None, None, folder.config["vocab_size"]],
                                     "dtype": "float32"}]
    assert signature["hf"]["num_hidden_layers"] == 2  # a 'layers' student keeps some of the decoder's layers


def test_a_base_checkpoint_has_no_trained_output_layer_for_speech_seq2seq(tmp_path):
    folder = whisper_folder(tmp_path / "whisper")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["WhisperModel"]}))
    with pytest.raises(InvalidUpload, match="no trained speech-seq2seq head"):
        read_hf_folder(io.BytesIO(zip_bytes(folder)), task="speech-seq2seq")


def test_without_transcripts_the_compressed_model_is_measured_against_what_the_upload_writes(whisper, tmp_path):
    result = run_folder_pipeline(whisper, _features(tmp_path / "audio.npz"), None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    baseline = result.baseline
    assert baseline["metric"] == "accuracy" and baseline["output_kind"] == "logits"
    assert baseline["accuracy"] == 1.0  # the upload predicts every token it wrote itself
    with np.load(tmp_path / "work" / "seq2seq.npz") as arrays:
        labels, decoder = arrays["val.y"], arrays["val.decoder_input_ids"]
        assert arrays["val.input_features"].shape == (VAL, WHISPER_BINS, WHISPER_FRAMES)
    source = tmp_path / "work" / "source"
    generation = json.loads((source / "generation_config.json").read_text())
    assert (decoder[:, 0] == generation["decoder_start_token_id"]).all()
    # The language token generation chose among the languages alone (and the no-timestamps token it forced) are
    # not the model's own first choice over the vocabulary: those positions are not scored.
    languages = set(generation["lang_to_id"].values())
    assert set(decoder[:, 1].tolist()) <= languages
    assert (labels[:, 0] == IGNORED_LABEL).all() and (labels[:, 1] == IGNORED_LABEL).all()
    scored = labels != IGNORED_LABEL
    assert scored.sum() >= VAL * 5  # the text the model wrote after them
    assert np.array_equal(decoder[:, 1:][scored[:, :-1]], labels[:, :-1][scored[:, :-1]])
    [stage] = result.stages
    assert 0 <= stage.metrics["accuracy"] <= 1 and stage.metrics["compression_ratio"] > 1.5
    details = stage.metrics["hf_folder"]
    assert details["written"], details
    [artifact] = [a for a in stage.artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    assert type(loaded).__name__ == "WhisperForConditionalGeneration"
    with torch.no_grad():  # the folder transcribes, as users run it
        features = torch.randn(1, WHISPER_BINS, WHISPER_FRAMES)
        written = loaded.generate(input_features=features, max_new_tokens=5, do_sample=False)
    assert written.shape[0] == 1


def test_transcripts_follow_the_prompt_generation_feeds_the_decoder(whisper, tmp_path):
    # The tokenizer was saved for English transcription (<|startoftranscript|><|en|><|transcribe|><|notimestamps|>),
    # but generate() detects the language (the random model picks <|fr|>) and feeds what its settings say: a
    # reference read after another prefix would put every model where it never is when it transcribes.
    from transformers import AutoTokenizer, WhisperForConditionalGeneration

    result = run_folder_pipeline(whisper, _features(tmp_path / "audio.npz", transcripts=True), "speech-seq2seq",
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    source = tmp_path / "work" / "source"
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = WhisperForConditionalGeneration.from_pretrained(source).eval()
    with np.load(tmp_path / "work" / "seq2seq.npz") as arrays:
        labels, decoder = arrays["val.y"][0], arrays["val.decoder_input_ids"][0]
        features = torch.from_numpy(arrays["val.input_features"][:1])
        train_written = arrays["train.y"]  # a split without transcripts: what the upload writes
    with torch.no_grad():
        prompt = model.generate(input_features=features, max_new_tokens=1,
                                return_dict_in_generate=True).sequences[0, :-1].tolist()
    assert prompt[0] == tokenizer.convert_tokens_to_ids("<|startoftranscript|>") and len(prompt) > 1
    assert prompt != tokenizer(text_target=CORPUS[0])["input_ids"][:len(prompt)]
    text = tokenizer(CORPUS[0], add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert decoder[:len(prompt) + len(text)].tolist() == prompt + text
    # the prompt is given, not scored; the text and the end token are
    expected = [IGNORED_LABEL] * (len(prompt) - 1) + text + [end]
    assert labels[:len(expected)].tolist() == expected and (labels[len(expected):] == IGNORED_LABEL).all()
    assert (train_written != IGNORED_LABEL).any()
    # A random model does not write the reference: its accuracy is the share of the transcripts' tokens it predicts.
    assert 0 <= result.baseline["accuracy"] < 0.5


def test_transcripts_of_a_model_fed_its_start_token_alone_drop_the_start_token_the_tokenizer_puts_first(tmp_path):
    # A Whisper whose generation settings name no languages is fed <|startoftranscript|> alone: its transcripts are
    # read as its tokenizer makes labels, without that start token (fed, never predicted), as transformers'
    # fine-tuning recipe reads them.
    from transformers import AutoTokenizer

    folder = whisper_folder(tmp_path / "whisper")
    generation = json.loads((folder / "generation_config.json").read_text())
    for name in ("is_multilingual", "lang_to_id", "task_to_id", "no_timestamps_token_id"):
        generation.pop(name)
    (folder / "generation_config.json").write_text(json.dumps(generation))
    (tmp_path / "whisper.zip").write_bytes(zip_bytes(folder))
    run_folder_pipeline(tmp_path / "whisper.zip", _features(tmp_path / "audio.npz", transcripts=True), None,
                        [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                        tmp_path / "work")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = tokenizer(text_target=CORPUS[0])["input_ids"]
    assert expected[0] == tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    with np.load(tmp_path / "work" / "seq2seq.npz") as arrays:
        labels, decoder = arrays["val.y"][0], arrays["val.decoder_input_ids"][0]
    assert labels[:len(expected) - 1].tolist() == expected[1:] and (labels[len(expected) - 1:] == IGNORED_LABEL).all()
    assert decoder[:len(expected) - 1].tolist() == expected[:-1]


def test_class_labels_are_refused_with_where_transcripts_go(whisper, tmp_path):
    with pytest.raises(InvalidUpload, match="transcript"):
        run_folder_pipeline(whisper, _features(tmp_path / "audio.npz", labels=True), None, [PTQSpec()],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_a_layers_student_keeps_the_encoder_and_some_of_the_decoders_layers(whisper, tmp_path):
    # Distil-Whisper's recipe: the whole encoder, fewer decoder layers (generation runs the decoder per token).
    distil = KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2, "batch_size": 4})
    result = run_folder_pipeline(whisper, _features(tmp_path / "audio.npz"), None, [distil],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    student = result.stages[0].metrics["method_metrics"]["student_spec"]
    assert student["layers"] == [1] and student["teacher_layers"] == 2
    assert student["layer_list"] == "model.decoder.layers"
    assert result.stages[0].metrics["method_metrics"]["loss"] == "kl"
    [artifact] = [a for a in result.stages[0].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    assert (loaded.config.encoder_layers, loaded.config.decoder_layers) == (1, 1)


def test_speech2text_canary_and_moonshine_folders_read_their_features_or_waveform(tmp_path):
    # Speech2Text's filter banks and Canary's log-mel frames (its Parakeet encoder's bins) are [N, frames, bins];
    # Moonshine reads the waveform. Each folder's signature says so, and a job runs on that audio.
    import transformers

    from compression.specs import PruneSpec

    small = {"encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}
    speech2text = transformers.Speech2TextForConditionalGeneration(transformers.Speech2TextConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, conv_channels=32, input_feat_per_channel=16,
        max_source_positions=128, max_target_positions=128, **small))
    moonshine = transformers.MoonshineForConditionalGeneration(transformers.MoonshineConfig(
        hidden_size=32, intermediate_size=64, encoder_num_hidden_layers=2, decoder_num_hidden_layers=2,
        encoder_num_attention_heads=2, decoder_num_attention_heads=2, encoder_num_key_value_heads=2,
        decoder_num_key_value_heads=2))
    heads = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 2}
    canary = transformers.CanaryForConditionalGeneration(transformers.CanaryConfig(
        encoder_config={**heads, "num_mel_bins": 16, "subsampling_conv_channels": 8, "conv_kernel_size": 7},
        decoder_config={**heads, "head_dim": 16}))
    rng = np.random.default_rng(0)
    for model, audio, signature_input, decoder_layers in [
            (speech2text, rng.normal(size=(12, 64, 16)), {"name": "input_features", "shape": [None, None, 16]}, 2),
            (moonshine, rng.normal(size=(12, 16000)), {"name": "input_values", "shape": [None, None]}, 2),
            # (Canary's decoder counts its layers in its own sub-config: no 'layers' student)
            (canary, rng.normal(size=(12, 64, 16)), {"name": "input_features", "shape": [None, None, 16]}, None)]:
        name = model.config.model_type
        model.save_pretrained(tmp_path / name)
        archive = tmp_path / f"{name}.zip"
        archive.write_bytes(zip_bytes(tmp_path / name))
        folder = read_hf_folder(archive)
        assert folder.task == "speech-seq2seq"
        assert folder.signature()["inputs"][0] == signature_input | {"dtype": "float32"}, name
        assert folder.signature()["hf"]["num_hidden_layers"] == decoder_layers, name
        np.savez(tmp_path / f"{name}.npz", **{"train.x": audio[:8].astype(np.float32),
                                              "val.x": audio[8:].astype(np.float32)})
        result = run_folder_pipeline(archive, tmp_path / f"{name}.npz", None, [PruneSpec(sparsity=0.3)],
                                     EvaluationSpec(latency=False), RunContext(), tmp_path / f"{name}-work")
        assert result.baseline["accuracy"] == 1.0 and 0 <= result.stages[0].metrics["accuracy"] <= 1, name
        assert result.stages[0].metrics["hf_folder"]["written"], name


def test_a_model_that_is_not_an_encoder_decoder_is_refused(tmp_path):
    folder = whisper_folder(tmp_path / "whisper")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"is_encoder_decoder": False}))
    with pytest.raises(InvalidUpload, match="is not an encoder-decoder"):
        read_hf_folder(io.BytesIO(zip_bytes(folder)))
