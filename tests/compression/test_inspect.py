import io

import numpy as np
import pytest
import torch

from compression.inspect import InvalidUpload, bind_inputs, inspect_npz, inspect_pt2
from compression.io import export_model, save_program


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return self.head(hidden.mean(1))


def test_pt2_signature_names_dims_dtypes_and_parameters(tmp_path):
    model = TwoInputs().eval()
    inputs = (torch.randint(0, 50, (2, 7)), torch.ones(2, 7))
    path = save_program(export_model(model, inputs), tmp_path / "m.pt2")
    signature = inspect_pt2(path)
    assert [(t.name, t.shape, t.dtype) for t in signature.inputs] == [
        ("input_ids", [None, 7], "int64"), ("attention_mask", [None, 7], "float32")]
    assert signature.outputs[0].shape == [None, 3]
    assert signature.parameter_count == sum(p.numel() for p in model.parameters())


def test_int8_weights_count_as_parameters(example_files):
    from compression.examples import digits_dataset
    from compression.io import load_model
    from compression.ptq.quantize import quantize_int8
    model = load_model(example_files[0])
    x = torch.from_numpy(digits_dataset()["train.x"][:64])
    quantized = quantize_int8(model, (x[:2],), [(x,)], lambda i: None)
    path = save_program(export_model(quantized, (x[:2],)), example_files[0].parent / "int8.pt2")
    fp32, int8 = inspect_pt2(example_files[0]).parameter_count, inspect_pt2(path).parameter_count
    assert 0.99 * fp32 < int8 <= fp32  # batch norm is folded into the conv weights


def test_an_already_quantized_program_is_refused_at_upload_and_fake_quantization_is_not(example_files, tmp_path):
    """A stage's int8 `.pt2` uploaded again was accepted, and ptq on it wrote a larger program that read as done."""
    from compression.examples import digits_dataset
    from compression.inspect import inspect_model
    from compression.io import load_model
    from compression.ptq.quantize import quantize_int8
    model = load_model(example_files[0])
    x = torch.from_numpy(digits_dataset()["train.x"][:64])
    int8 = save_program(export_model(quantize_int8(model, (x[:2],), [(x,)]), (x[:2],)), tmp_path / "int8.pt2")
    with pytest.raises(InvalidUpload, match=r"already quantized \(it calls quantized_decomposed\.dequantize_per"):
        inspect_model(open(int8, "rb"))
    inspect_pt2(int8)  # the worker still reads its own stages' programs

    class FakeQuantized(torch.nn.Module):  # what QAT's .pt2 holds: fake quantization traced into plain aten ops
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(torch.clamp(torch.round(x / 0.1), -128, 127) * 0.1)

    fake = save_program(export_model(FakeQuantized().eval(), (torch.randn(2, 4),)), tmp_path / "fake.pt2")
    assert inspect_model(open(fake, "rb")).kind == "pt2"


def test_bind_inputs_by_position_or_name():
    assert bind_inputs(["x"], ["images", "y"], "train") == {"x": "images"}
    assert bind_inputs(["input_ids", "attention_mask"], ["attention_mask", "input_ids", "y"], "val") == {
        "input_ids": "input_ids", "attention_mask": "attention_mask"}
    with pytest.raises(InvalidUpload, match=r"no array for model input\(s\) \['attention_mask'\]"):
        bind_inputs(["input_ids", "attention_mask"], ["input_ids", "mask"], "val")


def test_npz_headers_are_read_without_loading_inputs():
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{"train.x": np.zeros((3, 4), np.float16), "train.y": np.array([2, 0, 1])})
    manifest = inspect_npz(io.BytesIO(buffer.getvalue()))
    assert manifest.splits == {"train": {"x": {"shape": [3, 4], "dtype": "float16"},
                                         "y": {"shape": [3], "dtype": "int64"}}}
    assert manifest.label_range == {"train": [0, 2]} and manifest.has_labels("train")


def test_an_aotinductor_package_is_told_apart_from_a_program():
    # aoti_compile_and_package also writes a ".pt2": compiled code for one machine, which is refused by name.
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in (("archive_format", b"pt2"), ("archive_version", b"0"), ("byteorder", b"little"),
                           ("data/aotinductor/model/model.wrapper.so", b"\x7fELF"),
                           ("data/aotinductor/model/model.wrapper.cpp", b"//")):
            archive.writestr(f"m/{name}", data)
    buffer.seek(0)
    with pytest.raises(InvalidUpload, match="AOTInductor package"):
        inspect_pt2(buffer)


def _wrong_model_files() -> dict[str, bytes]:
    from safetensors.torch import save as safetensors_bytes

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    files = {}
    for name, write in (("state dict", lambda f: torch.save(model.state_dict(), f)),
                        ("whole module", lambda f: torch.save(model, f)),
                        ("legacy pickle", lambda f: torch.save(model.state_dict(), f,
                                                               _use_new_zipfile_serialization=False)),
                        ("torchscript", lambda f: torch.jit.save(torch.jit.trace(model, torch.randn(1, 4)), f)),
                        ("onnx", lambda f: torch.onnx.export(model, (torch.randn(1, 4),), f, dynamo=False))):
        buffer = io.BytesIO()
        write(buffer)
        files[name] = buffer.getvalue()
    files["safetensors"] = safetensors_bytes(model.state_dict())
    files["gguf"] = b"GGUF\x03\x00\x00\x00" + bytes(64)
    return files


@pytest.mark.parametrize("kind, expected", [
    ("state dict", "torch.save checkpoint"), ("whole module", "torch.save checkpoint"),
    ("legacy pickle", "a pickle"), ("torchscript", "TorchScript archive"), ("onnx", "ONNX model"),
    ("safetensors", "safetensors weights file"), ("gguf", "GGUF file"),
])
def test_the_files_users_have_instead_of_a_program_are_named(kind, expected):
    # The TorchScript upload was refused without saying what it was or how to export instead.
    with pytest.raises(InvalidUpload, match=expected) as refused:
        inspect_pt2(io.BytesIO(_wrong_model_files()[kind]))
    assert "torch.export" in str(refused.value)


@pytest.mark.parametrize("content, expected", [
    (b'[{"split": "train", "text": "a"}]', "one JSON array, not JSON lines"),
    (b"text,label\nthe cat,1\n", "CSV/TSV table"),
    (b"PAR1" + bytes(32), "Parquet file"),
    (b"\x93NUMPY\x01\x00" + bytes(32), "single .npy array"),
])
def test_dataset_files_of_other_formats_are_named(content, expected):
    from compression.inspect import inspect_dataset

    with pytest.raises(InvalidUpload, match=expected) as refused:
        inspect_dataset(io.BytesIO(content))
    assert "numpy.savez" in str(refused.value) and ".jsonl" in str(refused.value)
