"""`sparse.safetensors`: an unstructured-sparse state dict as bitmask + nonzero values
(`compression.prune.sparse_format` documents the layout). It holds tensors, not a graph: load them into the
architecture (the `pruned.pt2` of the same job has it)."""

from compression.prune.sparse_format import load_sparse as load
from compression.prune.sparse_format import save_sparse as write

KIND = "sparse.safetensors"
DESCRIPTION = "modelpress.bitmask.v1 (safetensors: bitmask + values)"
PACKAGES = ("modelpress", "torch==2.13.*", "safetensors")
RECIPE = '''from compression.prune.sparse_format import load_sparse

state_dict = load_sparse("{path}")  # name -> dense torch.Tensor
'''

__all__ = ["load", "write"]
