"""What transformers 5 loads of a folder with zero points (asymmetric int weights, e.g. hqq's).

compressed-tensors packs such a layer's zero points into int32 along with its codes, which transformers 5's
compressed layout expects unpacked and refuses (vllm-project/llm-compressor#1618). It loads the folder only by
decompressing every layer to float as it reads it (`CompressedTensorsConfig(dequantize=True)`,
`compression.formats.hf_folder.loading_options`), and that path decompresses all of a model's layers with one
scheme: the folder may then hold one format only, so every layer takes one group size and the embedding tables
stay float (`compression.specs.llm.ZERO_POINTS_WITH_INT8_EMBEDDINGS`). vLLM serves the folder either way.
"""

from __future__ import annotations

from dataclasses import replace

from compression.llm.quantize import GROUP_SIZES, WeightFormat


def packs_zero_points(fmt: WeightFormat) -> bool:
    """llm_ptq's export packs asymmetric layers at every bit width, 8 included."""
    return fmt.kind == "int" and not fmt.symmetric


def one_group_size(fmt: WeightFormat, widths: set[int]) -> tuple[WeightFormat, str | None]:
    """`fmt`, or for a zero-point format whose group size does not divide every input width of the layers it
    quantizes (`widths`) the format with the largest smaller group size (of GROUP_SIZES) that does, else one scale
    per output channel, and a warning that says so. Symmetric formats fit each such layer alone
    (`WeightFormat.for_columns`)."""
    if not packs_zero_points(fmt) or fmt.group_size is None:
        return fmt, None
    uneven = sorted(width for width in widths if width % fmt.group_size)
    if not uneven:
        return fmt, None
    size = next((size for size in GROUP_SIZES if size < fmt.group_size and all(w % size == 0 for w in widths)), None)
    taken = f"group_size {size}" if size else "one scale per output channel (group_size null)"
    return replace(fmt, group_size=size), (
        f"group_size {fmt.group_size} does not divide the input width(s) {uneven}; with zero points (asymmetric "
        f"weights) transformers loads a folder in one format only, so every layer uses {taken}")
