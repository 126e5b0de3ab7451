import pytest
import torch
from safetensors.torch import load_file, save_file

from compression.prune.sparse_format import load_sparse, save_sparse


def sparse_tensor(shape, sparsity, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(shape, generator=generator).to(dtype)
    keep = torch.rand(shape, generator=generator) >= sparsity
    return dense * keep


def test_round_trip_is_exact_for_sparse_and_dense_entries(tmp_path):
    tensors = {"conv.weight": sparse_tensor((16, 8, 3, 3), 0.9), "fc.weight": sparse_tensor((10, 37), 0.5, 1),
               "half.weight": sparse_tensor((7, 5), 0.6, 2, torch.float16), "fc.bias": torch.randn(10),
               "bn.num_batches_tracked": torch.tensor(3)}
    path = save_sparse(tensors, {"conv.weight", "fc.weight", "half.weight"}, tmp_path / "w.safetensors")
    loaded = load_sparse(path)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(loaded[name], tensor)


def test_bit_layout_is_row_major_lsb_first(tmp_path):
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])  # bits 0 and 8 set
    save_sparse({"w": weight}, {"w"}, tmp_path / "w.safetensors")
    raw = load_file(tmp_path / "w.safetensors")
    assert raw["w.__mask__"].tolist() == [0b00000001, 0b00000001]
    assert raw["w.__values__"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("sparsity, min_ratio", [(0.9, 7.0), (0.5, 1.7)])
def test_compact_file_is_much_smaller_than_dense(tmp_path, sparsity, min_ratio):
    weight = sparse_tensor((256, 512), sparsity)
    save_file({"w": weight}, str(tmp_path / "dense.safetensors"))
    save_sparse({"w": weight}, {"w"}, tmp_path / "sparse.safetensors")
    dense_size = (tmp_path / "dense.safetensors").stat().st_size
    sparse_size = (tmp_path / "sparse.safetensors").stat().st_size
    # Expected 32 / (1 + 32 * (1 - sparsity)) bits: 7.6x at 90%, 1.9x at 50%.
    assert dense_size / sparse_size > min_ratio


def test_rejects_files_in_another_format(tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a modelpress"):
        load_sparse(tmp_path / "plain.safetensors")
