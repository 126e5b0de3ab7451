"""A CTC speech recognizer uploaded as a Hugging Face folder (task `speech-recognition`: Wav2Vec2ForCTC,
HubertForCTC, ...) takes the waveforms of an unlabelled `.npz`, runs the methods as an audio classifier does, is
judged by the agreement of its logits frame by frame, and reports how far its greedy transcripts moved from the
original's (`compression.ctc_transcripts`)."""

import random
import zipfile

import numpy as np
import pytest
import torch

from bench.hf_architecture_sweep import CTC_VOCAB
from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.ctc_transcripts import TranscriptComparison, edit_distance, folder_decoder, greedy_tokens
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec
from tests.hf_folders import ctc_folder, zip_bytes

EXAMPLES = 8


def _zipped(directory):
    archive = directory / "ctc.zip"
    archive.write_bytes(zip_bytes(ctc_folder(directory / "ctc")))
    return archive


def _waveforms(path, labels: bool = False):
    values = np.random.default_rng(0).normal(0.0, 1.0, size=(16 + EXAMPLES, 1600)).astype(np.float32)
    arrays = {"train.x": values[:16], "val.x": values[16:]}
    if labels:
        arrays["val.y"] = np.arange(EXAMPLES) % 3
    np.savez(path, **arrays)
    return path


def test_the_task_input_and_frame_logits_are_read_from_the_folder(tmp_path):
    folder = read_hf_folder(_zipped(tmp_path))
    assert folder.task == "speech-recognition"
    assert folder.signature()["inputs"] == [{"name": "input_values", "shape": [None, None], "dtype": "float32"}]
    assert folder.signature()["outputs"] == [{"name": "logits", "shape": [None, None, len(CTC_VOCAB)],
                                              "dtype": "float32"}]


def test_a_job_is_judged_per_frame_and_reports_how_its_transcripts_moved(tmp_path):
    result = run_folder_pipeline(_zipped(tmp_path), _waveforms(tmp_path / "speech.npz"), None,
                                 [PruneSpec(), PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False),
                                 RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "top1_agreement" and result.baseline["output_kind"] == "logits"
    assert result.baseline["transcripts"] == {"samples": EXAMPLES, "decoding": "greedy CTC", "blank_token": 0,
                                              "text_decoded_with": "the folder's tokenizer"}
    for stage in result.stages:
        moved = stage.metrics["transcripts"]
        assert moved["samples"] == EXAMPLES and 0 <= moved["examples_changed"] <= EXAMPLES
        assert {"token_error_rate", "word_error_rate", "character_error_rate"} <= set(moved)
    # Half the weights of a random model gone: its transcripts are not the original's.
    assert result.stages[0].metrics["transcripts"]["token_error_rate"] > 0
    # The int8 stage's folder keeps what transcribes: the tokenizer and the feature extractor's settings.
    folder = result.stages[1].metrics["hf_folder"]
    assert folder["written"], folder
    archive = next(a.path for a in result.stages[1].artifacts if a.kind == "model.hf_folder")
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"vocab.json", "tokenizer_config.json", "preprocessor_config.json", "config.json"} <= names, names


def _transformers_transcripts(folder, waveforms: np.ndarray) -> list[str]:
    """What transformers' own CTC model and tokenizer write for the waveforms, normalized as the extractor says."""
    from transformers import AutoModelForCTC, AutoTokenizer

    model = AutoModelForCTC.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    values = torch.from_numpy(waveforms)
    values = (values - values.mean(-1, keepdim=True)) / torch.sqrt(values.var(-1, keepdim=True, unbiased=False) + 1e-7)
    with torch.no_grad():
        frames = model(input_values=values).logits.argmax(-1)
    texts = []
    for row in frames:
        text = tokenizer.decode(row.tolist())  # as the speech-recognition pipeline decodes CTC frames
        for token in tokenizer.all_special_tokens:
            text = text.replace(token, "")
        texts.append(" ".join(text.split()))
    return texts


def test_reference_transcripts_give_each_model_its_error_rates_against_them(tmp_path):
    """With the original's own transcripts (lower-cased) as the references, the original scores 0 against them,
    and each stage's error rates against them are its change from the original."""
    archive = _zipped(tmp_path)
    speech = _waveforms(tmp_path / "plain.npz")
    with np.load(speech) as arrays:
        values = {name: arrays[name] for name in arrays.files}
    references = [text.lower() for text in _transformers_transcripts(tmp_path / "ctc", values["val.x"])]
    assert any(len(text.split()) > 1 for text in references), references
    np.savez(tmp_path / "transcribed.npz", **values, **{"val.transcript": np.array(references)})
    result = run_folder_pipeline(archive, tmp_path / "transcribed.npz", None, [PruneSpec()],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["transcripts"]["against_references"] == {
        "samples": EXAMPLES, "word_error_rate": 0.0, "character_error_rate": 0.0}
    moved = result.stages[0].metrics["transcripts"]
    assert moved["word_error_rate"] > 0
    assert moved["against_references"] == {"samples": EXAMPLES, "word_error_rate": moved["word_error_rate"],
                                           "character_error_rate": moved["character_error_rate"]}


def test_greedy_decoding_merges_repeats_and_drops_blanks_as_transformers_does(tmp_path):
    index = {token: position for position, token in enumerate(CTC_VOCAB)}
    frames = [index[token] for token in ["H", "H", "<pad>", "E", "L", "<pad>", "L", "O", "|", "|", "W", "O", "R",
                                         "L", "L", "D", "<pad>"]]
    logits = torch.nn.functional.one_hot(torch.tensor([frames]), len(CTC_VOCAB)).float()
    assert greedy_tokens(logits, blank=0) == [[index[token] for token in "HELLO|WORLD"]]
    decode = folder_decoder(ctc_folder(tmp_path / "ctc"))
    assert decode(frames) == "HELLO WORLD"
    assert folder_decoder(tmp_path) is None  # no tokenizer files: token error rates only


def _reference_distance(said: list, reference: list) -> int:
    """The textbook Levenshtein table, cell by cell."""
    table = [[row + column if not row or not column else 0 for column in range(len(reference) + 1)]
             for row in range(len(said) + 1)]
    for row in range(1, len(said) + 1):
        for column in range(1, len(reference) + 1):
            table[row][column] = min(table[row - 1][column] + 1, table[row][column - 1] + 1,
                                     table[row - 1][column - 1] + (said[row - 1] != reference[column - 1]))
    return table[-1][-1]


def test_edit_distance_is_levenshteins():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert edit_distance(list("flaw"), list("lawn")) == 2
    assert edit_distance([], list("abc")) == 3 and edit_distance(list("abc"), []) == 3
    assert edit_distance("THE CAT SAT".split(), "THE CAT SAT".split()) == 0
    generator = random.Random(0)
    for _ in range(200):
        said = [generator.randrange(4) for _ in range(generator.randrange(12))]
        reference = [generator.randrange(4) for _ in range(generator.randrange(12))]
        assert edit_distance(said, reference) == _reference_distance(said, reference), (said, reference)


class _Frames(torch.nn.Module):
    """Logits that emit `frames`' tokens for every example."""

    def __init__(self, frames: list[int]):
        super().__init__()
        self.logits = torch.nn.functional.one_hot(torch.tensor(frames), len(CTC_VOCAB)).float()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(inputs), -1, -1)


def test_transcripts_are_compared_with_the_originals():
    index = {token: position for position, token in enumerate(CTC_VOCAB)}
    original = _Frames([index[token] for token in "THE|CAT|SAT"])
    comparison = TranscriptComparison(original, torch.zeros(3, 10), blank=0,
                                      decode=lambda frames: "".join(CTC_VOCAB[i] for i in frames).replace("|", " "))
    assert comparison(original) == {"compared_with": "the original model's greedy transcripts", "samples": 3,
                                    "token_error_rate": 0.0, "word_error_rate": 0.0, "character_error_rate": 0.0,
                                    "examples_changed": 0}
    moved = comparison(_Frames([index[token] for token in "THE|CAT|SET"]))  # one word of three, one letter of 11
    assert moved["word_error_rate"] == pytest.approx(100 / 3) and moved["examples_changed"] == 3
    assert moved["token_error_rate"] == pytest.approx(100 / 11)
    assert moved["character_error_rate"] == pytest.approx(100 / 11)


def test_splits_of_different_lengths_are_refused_before_the_export(tmp_path):
    """The program is exported at the rows' length: a val split of longer waveforms failed the first stage on a
    shape guard ("Guard failed: input_values.size()[1] == 4000") before 2026-12-06."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "lengths.npz", **{"train.x": rng.normal(size=(16, 1600)).astype(np.float32),
                                          "val.x": rng.normal(size=(8, 4000)).astype(np.float32)})
    with pytest.raises(InvalidUpload, match=r"different shapes \(val \[4000\], train \[1600\], after the batch\)"):
        run_folder_pipeline(_zipped(tmp_path), tmp_path / "lengths.npz", None, [PTQSpec(calibration_samples=8)],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_class_labels_and_transcripts_without_a_tokenizer_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(InvalidUpload, match=r"class labels mean nothing for it; remove \['val.y'\]"):
        run_folder_pipeline(_zipped(tmp_path), _waveforms(tmp_path / "labelled.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
    bare = ctc_folder(tmp_path / "bare")
    for name in ("vocab.json", "tokenizer_config.json"):
        (bare / name).unlink()
    (tmp_path / "bare.zip").write_bytes(zip_bytes(bare))
    with np.load(_waveforms(tmp_path / "plain.npz")) as arrays:
        np.savez(tmp_path / "transcribed.npz", **{name: arrays[name] for name in arrays.files},
                 **{"val.transcript": np.array(["HELLO"] * EXAMPLES)})
    with pytest.raises(InvalidUpload, match=r"reference transcripts \(\['val.transcript'\]\), but the model folder "
                                            "has no tokenizer files"):
        run_folder_pipeline(tmp_path / "bare.zip", tmp_path / "transcribed.npz", None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")


@pytest.mark.parametrize("model_type, expected_input", [
    # Omnilingual ASR reads [N, 1, samples]: the .npz's [N, samples] waveforms get the channel in the worker.
    ("omniasr_ctc", {"name": "input_values", "shape": [None, 1, None], "dtype": "float32"}),
    # LASR reads log-mel frames, and its subsampling convolutions are each followed by a ReLU: their int8 PTQ was
    # refused ("Input partition has more than one output node") before 2026-12-06.
    ("lasr_ctc", {"name": "input_features", "shape": [None, None, 16], "dtype": "float32"}),
])
def test_other_inputs_and_convolutions_run_int8(model_type, expected_input, tmp_path):
    from bench.hf_architecture_sweep import audio_npz, folder_zip

    archive = folder_zip(model_type, "speech-recognition", tmp_path)
    assert read_hf_folder(archive).signature()["inputs"] == [expected_input]
    result = run_folder_pipeline(archive, audio_npz(tmp_path, model_type, labels=False), None,
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    stage = result.stages[0]
    assert stage.metrics["metric_points"] > 80 and stage.metrics["transcripts"]["samples"] == 16
    # Every layer's weight int8, the 1-D convolutions (run as 2-D ones) included: what stays float is at most a
    # batch norm's affine (LASR's convolution modules), read by a mul and an add.
    quantized = stage.metrics["method_metrics"]
    left_float = quantized["float_weights"]["largest_unquantizable"]
    assert quantized["conv1d_as_conv2d"] > 0 and all(name.startswith("batch_norm") for name in left_float), quantized


def test_a_head_tied_to_an_encoder_layer_bias_included_is_written_with_its_bias(tmp_path):
    """Granite Speech 5 ties its CTC head, weight and bias, to its encoder's intermediate output layer: the folder
    writer gave the bias the layer's weight ("'encoder.out.bias' has 2 dimensions") before 2026-12-06."""
    from bench.hf_architecture_sweep import audio_npz, folder_zip

    archive = folder_zip("granite_speech5_ctc", "speech-recognition", tmp_path)
    result = run_folder_pipeline(archive, audio_npz(tmp_path, "granite_speech5_ctc", labels=False), None,
                                 [PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    folder = result.stages[0].metrics["hf_folder"]
    assert folder["written"] and folder["relative_difference_to_stage_model"] == 0, folder
