"""Every artifact kind loads in a fresh interpreter from its recipe text alone (compression.formats)."""

import subprocess
import sys

import numpy as np
import torch

from compression import formats
from compression.distill.codebook_format import write_codebook_model
from compression.io import export_model
from compression.pq.packing import save_ipq
from compression.prune.sparse_format import save_sparse
from compression.ptq.int8_kernels import full_range_activations_saturate
from compression.ptq.quantize import quantize_int8
from compression.quant.packed import write_packed
from compression.quant.weights import WeightFormat, quantize_weight


def _run_fresh(code: str, cwd) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


def test_every_kind_has_a_format_module_with_a_recipe():
    for kind in formats.KINDS:
        fmt = formats.format_of(kind)
        assert fmt.KIND == kind and fmt.PACKAGES and callable(fmt.load) and callable(fmt.write)
        assert "{path}" in fmt.RECIPE


def _recipe_function(name: str, kind: str, path, result: str) -> str:
    """The recipe of `kind` for `path`, wrapped as a function returning the object it loads."""
    recipe = formats.artifact(kind, path.name, path).metadata["recipe"]
    return f"def {name}():\n" + "".join(f"    {line}\n" for line in recipe.splitlines()) + f"    return {result}\n"


def test_every_kind_loads_in_a_fresh_process_from_its_recipe_alone(tmp_path):
    from compression.quant.affine import QParams

    model, x = _model(), torch.randn(32, 16)
    gm = export_model(model, (x[:8],)).module()
    # Exact int8 kernels on any CPU (without VNNI full-range products saturate: compression/ptq/int8_kernels.py).
    int8 = quantize_int8(model, (x[:4],), [(x,)], reduce_range=full_range_activations_saturate())
    eight_bits, four_bits = (WeightFormat("int", bits, True, "per_channel") for bits in (8, 4))
    files = {
        "model.pt2": formats.format_of("model.pt2").write(int8, (x[:4],), tmp_path / "model_int8.pt2"),
        "model.aoti.pt2": formats.format_of("model.aoti.pt2").write(int8, (x[:4],), tmp_path / "model_int8.aoti.pt2",
                                                                    batch_sizes=(32,)),
        "model.onnx": formats.format_of("model.onnx").write(
            gm, (x[:8],), tmp_path / "model_qdq.onnx", {"0.weight": quantize_weight(model[0].weight, eight_bits)},
            {"0.weight": QParams(torch.tensor(0.05), torch.tensor(0.0), -128, 127)}),
        "packed.safetensors": write_packed(tmp_path / "model_packed.safetensors", gm, (x[:8],),
                                           {"0.weight": quantize_weight(model[0].weight, four_bits)}),
        "packed.codebook.safetensors": write_codebook_model(
            tmp_path / "codebook.safetensors", gm, (x[:8],),
            {"0.weight": (torch.randint(0, 4, (32, 16)), torch.linspace(-0.2, 0.2, 4), 2)}),
        "packed.ipq.safetensors": tmp_path / "model.ipq.safetensors",
        "sparse.safetensors": save_sparse({"w": torch.tensor([[0.0, 1.0], [2.0, 0.0]])}, {"w"},
                                          tmp_path / "sparse.safetensors"),
    }
    save_ipq(model, (x[:8],), files["packed.ipq.safetensors"], dense_dtype="float32")
    # A Hugging Face folder needs a transformers model: tests/compression/test_hf_folder_export.py loads it with
    # from_pretrained in a fresh process, and with its recipe's loader.
    assert set(files) == set(formats.KINDS) - {"model.hf_folder"}
    for kind, path in files.items():  # the library's own loader of each kind reads what its writer wrote
        assert formats.load(kind, path) is not None
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", int8(x).numpy())

    # torch and onnxruntime only: no recipe may need this library or torchao.
    _run_fresh(_recipe_function("load_pt2", "model.pt2", files["model.pt2"], "model")
               + _recipe_function("load_aoti", "model.aoti.pt2", files["model.aoti.pt2"], "models")
               + _recipe_function("load_onnx", "model.onnx", files["model.onnx"], "session") + """
import sys, numpy, torch
x = numpy.load("x.npy")
numpy.testing.assert_allclose(load_pt2()(torch.from_numpy(x)).detach().numpy(), numpy.load("expected.npy"),
                              atol=1e-5)
models = load_aoti()
assert list(models) == [32]
# int8 kernels requantize where the Q/DQ graph computes in float: close, not equal
numpy.testing.assert_allclose(models[32](torch.from_numpy(x)).numpy(), numpy.load("expected.npy"), atol=0.02)
session = load_onnx()
assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (32, 4)
assert not any(name.split(".")[0] in ("compression", "torchao") for name in sys.modules), "recipe needs more"
""", tmp_path)

    library_kinds = ["packed.safetensors", "packed.codebook.safetensors", "packed.ipq.safetensors"]
    code = "".join(_recipe_function(f"load_{i}", kind, files[kind], "model") for i, kind in enumerate(library_kinds))
    code += _recipe_function("load_sparse", "sparse.safetensors", files["sparse.safetensors"], "state_dict") + """
import numpy, torch
x = torch.from_numpy(numpy.load("x.npy"))
print([tuple(load()(x).shape) for load in (load_0, load_1, load_2)], load_sparse()["w"].tolist())
"""
    assert _run_fresh(code, tmp_path).strip().split("\n")[-1] == "[(32, 4), (32, 4), (32, 4)] [[0.0, 1.0], [2.0, 0.0]]"
