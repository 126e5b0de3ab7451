"""Hugging Face folders as uploads: what is accepted, what each hostile or broken folder is refused with."""

import io
import json
import re
import struct

import pytest

from compression.archive import ArchiveLimits, InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.inspect import inspect_model
from tests.hf_folders import bert_dir, llama_dir, tar_bytes, zip_bytes  # noqa: F401 (fixtures)


def _read(data: bytes, **kwargs):
    return read_hf_folder(io.BytesIO(data), **kwargs)


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_a_zipped_or_tarred_folder_is_read_with_its_task(llama_dir, tmp_path):
    for data in (zip_bytes(llama_dir), zip_bytes(llama_dir, top="my-model"), tar_bytes(llama_dir)):
        folder = _read(data)
        assert (folder.model_type, folder.task, folder.has_tokenizer) == ("llama", "causal-lm", True)
        assert folder.parameter_count == sum(
            p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(llama_dir).parameters())
    signature = folder.signature()
    assert [t["name"] for t in signature["inputs"]] == ["input_ids", "attention_mask"]
    assert signature["outputs"][0]["shape"] == [None, None, folder.config["vocab_size"]]
    extracted = _read(zip_bytes(llama_dir, top="m"), extract_to=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(extracted.files)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (llama_dir / "model.safetensors").read_bytes()


def test_content_not_the_name_tells_a_folder_from_a_program(llama_dir):
    assert inspect_model(io.BytesIO(zip_bytes(llama_dir))).kind == "hf_folder"
    with pytest.raises(InvalidUpload, match="has no config.json; zip or tar the folder"):
        inspect_model(io.BytesIO(zip_bytes(llama_dir, top="a/b")))


def test_the_task_is_checked_against_the_weights(llama_dir, bert_dir):
    assert _read(zip_bytes(bert_dir)).task == "feature-extraction"
    assert _read(zip_bytes(llama_dir), task="feature-extraction").task == "feature-extraction"
    with pytest.raises(InvalidUpload, match="no trained sequence-classification head"):
        _read(zip_bytes(llama_dir), task="sequence-classification")
    with pytest.raises(InvalidUpload, match="no trained causal-lm head"):
        _read(zip_bytes(bert_dir), task="causal-lm")


@pytest.mark.parametrize("extra, expected", [
    ({"pytorch_model.bin": b"\x80\x04pickle"}, "convert the weights to safetensors"),
    ({"training_args.pkl": b"x"}, "convert the weights to safetensors"),
    ({"modeling_evil.py": b"import os"}, "remote code is never run"),
    ({"onnx/model.onnx": b"x"}, "subfolder"),
    ({"notes.exe": b"MZ"}, "not part of a Hugging Face model folder"),
    ({"../escape.json": b"{}"}, "'..' path component"),
])
def test_hostile_entries_are_refused(llama_dir, extra, expected):
    with pytest.raises(InvalidUpload, match=expected):
        _read(zip_bytes(llama_dir, extra=extra))


def test_a_sentence_transformers_folder_zipped_with_zip_r_is_read_without_its_pooling_files(bert_dir, tmp_path):
    # all-MiniLM-L6-v2 and most sentence encoders ship like this: the transformer's files plus sentence-transformers'
    # settings and a weight-free pooling module in a numbered subfolder; `zip -r` adds an entry per directory
    # (issue 10: both were refused).
    extra = {"m/": b"", "m/1_Pooling/": b"", "m/modules.json": b"[]", "m/config_sentence_transformers.json": b"{}",
             "m/sentence_bert_config.json": b"{}", "m/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}
    folder = _read(zip_bytes(bert_dir, top="m", extra=extra), extract_to=tmp_path / "out")
    assert folder.task == "feature-extraction"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in bert_dir.iterdir())
    with pytest.raises(InvalidUpload, match="subfolder"):  # a Dense module has weights: the vectors would differ
        _read(zip_bytes(bert_dir, top="m", extra=extra | {"m/2_Dense/model.safetensors": b"x"}))


def test_tar_links_traversal_and_metadata_bombs_are_refused(llama_dir):
    with pytest.raises(InvalidUpload, match="link or special file"):
        _read(tar_bytes(llama_dir, symlink="tokenizer.model"))
    with pytest.raises(InvalidUpload, match="'..' path component"):
        _read(tar_bytes(llama_dir, extra={"../../etc/cron.d/x": b"x"}))
    with pytest.raises(InvalidUpload, match="metadata header claims"):
        _read(tar_bytes(llama_dir, extra={"a" * 200: b"x"}), limits=ArchiveLimits(max_metadata_bytes=100))
    with pytest.raises(InvalidUpload, match="more than 3 entries"):
        _read(tar_bytes(llama_dir), limits=ArchiveLimits(max_entries=3))


def test_remote_code_in_the_config_is_refused(llama_dir):
    config = json.loads((llama_dir / "config.json").read_text())
    for document, expected in ((config | {"auto_map": {"AutoModel": "x.Y"}}, "asks for the model's own Python"),
                               (config | {"model_type": "my_own_llama"}, "not an architecture the installed")):
        with pytest.raises(InvalidUpload, match=expected):
            _read(_replace(llama_dir, "config.json", json.dumps(document).encode()))


@pytest.mark.parametrize("change, expected", [
    ({"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized"}},
     "quant_method 'compressed-tensors'"),
    ({"quantization_config": {"quant_method": "mxfp4"}}, "Mxfp4Config"),
    ({"text_config": {"quantization_config": {"quant_method": "gptq", "bits": 4}}}, "text_config has a quant")])
def test_an_already_quantized_checkpoint_is_refused_at_upload(llama_dir, change, expected):
    config = json.loads((llama_dir / "config.json").read_text())
    with pytest.raises(InvalidUpload, match=expected) as refused:
        _read(_replace(llama_dir, "config.json", json.dumps(config | change).encode()))
    assert "upload the model's float checkpoint" in str(refused.value)
    # a null or empty entry (some float checkpoints save one) is no quantization
    _read(_replace(llama_dir, "config.json", json.dumps(config | {"quantization_config": None}).encode()))


def _replace(folder, name: str, content: bytes) -> bytes:
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.writestr(path.name, content if path.name == name else path.read_bytes())
    return buffer.getvalue()


@pytest.mark.parametrize("header, data, expected", [
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\x00" * 12, "holds 12 bytes"),
    ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\x00" * 12, "needs 16"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\x00" * 8, "has gaps or overlaps"),
    ({"w": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 4]}}, b"\x00" * 4, "unknown dtype"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\x00" * 4, "not a list of sizes"),
])
def test_safetensors_headers_must_describe_the_file(llama_dir, header, data, expected):
    with pytest.raises(InvalidUpload, match=expected):
        _read(_replace(llama_dir, "model.safetensors", _safetensors(header, data)))


def test_a_huge_header_length_is_refused_before_reading(llama_dir):
    with pytest.raises(InvalidUpload, match="header; the limit"):
        _read(_replace(llama_dir, "model.safetensors", struct.pack("<Q", 10**12) + b"{}"))


def test_shards_need_an_index_naming_each(tmp_path, llama_dir):
    from transformers import AutoModelForCausalLM
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(llama_dir).save_pretrained(sharded, max_shard_size="100KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (sharded / name).write_bytes((llama_dir / name).read_bytes())
    assert len(list(sharded.glob("*.safetensors"))) > 1
    folder = _read(zip_bytes(sharded))
    assert folder.parameter_count == _read(zip_bytes(llama_dir)).parameter_count
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "model-99999-of-99999.safetensors"
    with pytest.raises(InvalidUpload, match="not in the folder"):
        _read(_replace(sharded, "model.safetensors.index.json", json.dumps(index).encode()))
    (sharded / "model.safetensors.index.json").unlink()
    with pytest.raises(InvalidUpload, match="but no model.safetensors.index.json"):
        _read(zip_bytes(sharded))


def test_every_file_is_read_under_the_caps(llama_dir):
    bomb = zip_bytes(llama_dir, extra={"merges.txt": b"\x00" * 200_000})
    with pytest.raises(InvalidUpload, match="'merges.txt' is larger than 100000 bytes"):
        _read(bomb, limits=ArchiveLimits(max_member_bytes=100_000))


def test_a_program_with_a_config_among_its_extra_files_is_still_a_program(example_files):
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(example_files[0]) as source, zipfile.ZipFile(buffer, "w") as copy:
        top = source.namelist()[0].split("/")[0]
        for name in source.namelist():
            copy.writestr(name, source.read(name))
        copy.writestr(f"{top}/extra/config.json", b"{}")
    assert inspect_model(io.BytesIO(buffer.getvalue())).kind == "pt2"


def test_every_file_that_is_not_read_is_named_in_one_refusal(llama_dir):
    # A snapshot of a Hub repository (all-MiniLM-L6-v2's): one refusal per file would take five uploads.
    snapshot = {"pytorch_model.bin": b"\x80\x04", "tf_model.h5": b"x", "rust_model.ot": b"x",
                "train_script.py": b"import os", "onnx/model.onnx": b"x", "onnx/model_O4.onnx": b"x"}
    with pytest.raises(InvalidUpload) as refused:
        _read(zip_bytes(llama_dir, extra=snapshot))
    message = str(refused.value)
    for name in snapshot:
        assert f"'{name}'" in message
    for advice in ("convert the weights to safetensors", "remote code is never run", "subfolder",
                   "upload the safetensors weights only", "not part of a Hugging Face model folder"):
        assert advice in message


def test_a_masked_lm_checkpoint_is_read_for_its_features_and_has_no_classifier(bert_dir, tmp_path):
    # bert-base-uncased is saved as BertForMaskedLM: a head modelpress does not compress; its base model's
    # features are what it offers. A classifier built on it would start from a random head.
    import json
    import shutil

    folder = tmp_path / "mlm"
    shutil.copytree(bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["BertForMaskedLM"]}))
    assert _read(zip_bytes(folder)).task == "feature-extraction"
    with pytest.raises(InvalidUpload, match="no trained sequence-classification head"):
        _read(zip_bytes(folder), task="sequence-classification")


@pytest.mark.parametrize("model_type, architecture, reads", [
    # a base image or audio model (ViTModel, Wav2Vec2Model) is read for its features (test_array_features), an
    # image classifier (test_image_classification) and a speech recognizer (test_speech_recognition) too
    ("videomae", "VideoMAEModel", "images (pixel_values)"),  # clips of images
    ("sam", "SamModel", "images (pixel_values)"),  # SAM wants its prompts too
    ("patchtst", "PatchTSTModel", "time series"),  # a base model: its heads are the time-series tasks
])
def test_a_folder_of_a_model_that_does_not_read_text_is_refused_at_upload(bert_dir, tmp_path, model_type,
                                                                          architecture, reads):
    # Before, a ViT folder was accepted as feature-extraction and refused at submission for lacking a tokenizer.
    import json
    import shutil

    folder = tmp_path / model_type
    shutil.copytree(bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": model_type,
                                                             "architectures": [architecture]}))
    for task in (None, "feature-extraction"):
        with pytest.raises(InvalidUpload, match=rf"model_type '{model_type}' reads {re.escape(reads)}.*, not text: .*"
                                                r"upload the \.pt2, with an \.npz"):
            _read(zip_bytes(folder), task=task)
    # Multimodal models read text too: their folder is checked as a text model's.
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "qwen2_vl", "architectures": []}))
    assert _read(zip_bytes(folder), task="feature-extraction").model_type == "qwen2_vl"
