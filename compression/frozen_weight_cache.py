"""Let Inductor's FX graph cache keep compiled graphs whose frozen weights were prepacked for oneDNN.

Why: every job compiles its models with freezing (the int8 kernels need it), and freezing prepacks conv/linear
weights into oneDNN ("mkldnn") tensors. torch 2.13's FX graph cache refuses any graph holding such a tensor
("mkldnn tensors unpickleable"), so a tenant's second job on the same model lowered and generated its four graphs
again: on a 22M-parameter encoder that was 10 of a 58 s repeat job.

The refusal is about pickling the tensor's values into the cache key, which torch already skips for every other
frozen parameter it does not inline into the code: those are keyed by metadata (shape, dtype, device) and their
values are read from the graph being compiled when a cached entry is used (`CompiledFxGraphConstantsWithGm`). A
prepacked weight is such a parameter: the generated code passes it to oneDNN, which reads its layout from the
tensor itself. So this keys it the same way: by metadata, its values taken from the current graph, never from the
cache (`tests/compression/test_frozen_weight_cache.py` compiles two models of one architecture with different
weights and checks the second, a cache hit, computes its own outputs).

Applied once per process (`allow_cached_frozen_onednn_weights`), only where torch has the internals this relies on;
anywhere else Inductor keeps refusing, which costs time, never correctness. The cache lives in the tenant's own
directory (worker.compile_cache), as the rest of Inductor's cache does.
"""

from __future__ import annotations

import dataclasses

_applied = False


@dataclasses.dataclass(frozen=True)
class PrepackedWeightKey:
    """What the cache key holds for a prepacked frozen weight: its metadata, never its values."""

    shape: tuple[int, ...]
    dtype: str
    device: str


def allow_cached_frozen_onednn_weights() -> bool:
    """Install the metadata key for prepacked frozen weights (idempotent). False when torch lacks the internals
    it relies on, and then nothing is changed."""
    global _applied
    if _applied:
        return True
    try:
        from torch._inductor import codecache
        from torch._inductor.freezing_utils import is_frozen_param
        from torch._inductor.graph import GraphLowering
        pickler, validator, ident = codecache.FxGraphCachePickler, codecache.CacheabilityValidator, codecache._ident
        reduce_tensor, check_tensor = pickler._reduce_tensor, validator.check_tensor
    except (ImportError, AttributeError):
        return False

    def keyed_by_metadata(t) -> bool:
        # The same rule torch applies to other frozen parameters: small 1-D ones are inlined into the generated
        # code, so their values belong in the key (for those the refusal stays).
        return t.is_mkldnn and is_frozen_param(t) and not GraphLowering.can_inline_constant(t)

    def _reduce_tensor(self, t):
        if keyed_by_metadata(t):
            return ident, (PrepackedWeightKey(tuple(t.shape), str(t.dtype), t.device.type),)
        return reduce_tensor(self, t)

    def _check_tensor(t) -> None:
        if not keyed_by_metadata(t):
            check_tensor(t)

    pickler._reduce_tensor = _reduce_tensor
    validator.check_tensor = staticmethod(_check_tensor)
    _applied = True
    return True
