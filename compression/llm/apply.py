"""`apply_llm_ptq`: weight-only PTQ of a causal LM, one decoder block at a time, into a compressed-tensors folder.

For each block in turn: load its weights (from disk when the source is a folder), quantize its linears on the
outputs of the blocks already quantized, write its shard, checkpoint the shard's bytes through the RunContext,
report progress, and drop it. A run that was killed resumes from the last checkpointed block: earlier blocks are
rebuilt from their checkpoints (no new calibration) and only replayed to recompute the next block's inputs.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from compression.context import RunContext
from compression.llm import export, moe
from compression.llm.blockwise import Recipe, linear_layers, quantize_block, quantize_weight
from compression.llm.gptq import HessianAccumulator
from compression.llm.init_reads import causal_lm_init_reads
from compression.llm.model import LayerwiseModel, run_block
from compression.llm.quantize import WeightFormat, output_error, rtn, weight_sqnr_db
from compression.llm.text import batches as split_batches
from compression.llm.text import calibration_windows
from compression.llm.zero_points import one_group_size
from compression.specs.llm import ASYMMETRIC_EXPERTS, LLMPTQSpec

EMBEDDING_FORMAT = WeightFormat(bits=8, group_size=None, symmetric=True)
# AWQ warns when the groups it could not scale hold this share of the quantized weights. From the shapes: o_proj
# under grouped-query attention, which AWQ never scales, is 7.7 % of a Llama-3-8B block's linear weights; GPT-NeoX's
# dense and dense_4h_to_h (after GELU) 5/12 of a block with a 4x MLP (38 % in the sweep's tiny one).
MOSTLY_UNSCALED = 0.25


@dataclass
class LLMPTQResult:
    folder: Path
    metrics: dict = field(default_factory=dict)


def weight_format(spec: LLMPTQSpec) -> WeightFormat:
    if spec.weights == "fp8":
        return WeightFormat(bits=8, group_size=None, symmetric=True, kind="fp8")
    return WeightFormat(bits=spec.bits, group_size=spec.group_size, symmetric=spec.is_symmetric)


def _output_dtype(spec: LLMPTQSpec, model: LayerwiseModel) -> torch.dtype:
    return model.source_dtype if spec.dtype == "auto" else getattr(torch, spec.dtype)


def _fingerprint(spec: LLMPTQSpec, calibration: torch.Tensor | None) -> str:
    digest = hashlib.sha256(spec.model_dump_json().encode())
    if calibration is not None:
        digest.update(calibration.numpy().tobytes())
    return digest.hexdigest()[:16]


def _checked_calibration(tokens: torch.Tensor, spec: LLMPTQSpec, vocab_size: int, seed: int) -> torch.Tensor:
    if tokens.is_floating_point() or tokens.dim() not in (1, 2) or tokens.numel() == 0:
        raise ValueError("calibration must be integer token ids: a 1-D stream or [samples, tokens] windows")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise ValueError(f"calibration token ids must lie in [0, {vocab_size}): was it tokenized with this "
                         f"model's tokenizer?")
    if tokens.dim() == 1:
        tokens = calibration_windows(tokens, spec.calibration.samples, spec.calibration.sequence_length, seed)
    return tokens.long()


def _block_tensors(prefix: str, block: torch.nn.Module, quantized: dict, dtype: torch.dtype) -> dict:
    tensors = {}
    for name, value in block.state_dict().items():
        owner = name.rsplit(".", 1)[0]
        if owner in quantized and name.endswith(".weight"):
            continue
        tensors[prefix + name] = value.to(dtype) if value.is_floating_point() else value
    for name, weight in quantized.items():
        tensors.update(export.compressed_tensors(prefix + name, weight))
    return tensors


def _restore_block(block: torch.nn.Module, prefix: str, tensors: dict, fmt: WeightFormat,
                   kept_float: frozenset[str]) -> None:
    """Put a checkpointed block's (dequantized) weights back into `block` to replay it."""
    state = {}
    linears = {name: layer for name, layer in linear_layers(block).items() if name not in kept_float}
    for name in block.state_dict():
        owner = name.rsplit(".", 1)[0]
        if owner in linears and name.endswith(".weight"):
            state[name] = export.decompressed_weight(tensors, prefix + owner, fmt)
        else:
            state[name] = tensors[prefix + name].float()
    block.load_state_dict(state, strict=True)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def apply_llm_ptq(spec: LLMPTQSpec, model: str | Path | torch.nn.Module, output_dir: str | Path,
                  calibration: torch.Tensor | None = None, ctx: RunContext | None = None) -> LLMPTQResult:
    """Quantize `model` (a Hugging Face folder, streamed block by block, or a transformers causal LM in memory)
    and write a compressed-tensors folder to `output_dir`.

    `calibration` holds token ids: a [samples, tokens] tensor of windows, or a 1-D stream from which
    `spec.calibration.samples` windows of `spec.calibration.sequence_length` tokens are drawn. gptq and awq need
    it; rtn and hqq use it only to report each layer's output error.
    """
    ctx = ctx or RunContext()
    started = time.monotonic()
    output_dir = Path(output_dir)
    if spec.needs_calibration and calibration is None:
        raise ValueError(f"{spec.algorithm} needs calibration token windows")
    source = LayerwiseModel.load(model)
    if source.origin is not None and output_dir.resolve() == source.origin.resolve():
        raise ValueError("output_dir must not be the source folder: the source is read while the output is written")
    if calibration is not None:
        calibration = _checked_calibration(calibration, spec, source.text_config.vocab_size, ctx.seed)
    fmt, dtype = weight_format(spec), _output_dtype(spec, source)
    # float: a mixture's routers and gates, and the layers transformers' weight initialisation reads on loading
    read_by_init = [name for name in causal_lm_init_reads(source.config) if source.in_blocks(name)]
    float_layers = moe.kept_float(source.model) + read_by_init
    experts = moe.split_experts(source.model)
    if experts and not fmt.symmetric:
        raise ValueError(ASYMMETRIC_EXPERTS)
    moe.check_expert_widths(source.model, fmt)
    fmt, one_format = one_group_size(fmt, _quantized_widths(source, spec, float_layers))
    recipe = Recipe(spec.algorithm, fmt, dtype, gptq=spec.gptq.model_dump(), awq=spec.awq.model_dump(),
                    hqq=spec.hqq.model_dump())
    fingerprint = _fingerprint(spec, calibration)
    hidden = (source.first_block_inputs(split_batches(calibration, spec.calibration.batch_size))[0]
              if calibration is not None else None)

    count = len(source.blocks)
    writer = export.ShardWriter(output_dir, count + 1)
    layers, resumed = {}, 0
    # AWQ's groups, named by their linears, and the weights in each kind
    awq: dict = {"scaled_groups": {}, "unscaled_groups": [], "weights": {"scaled": 0, "unscaled": 0}}
    ctx.progress("quantize", 0, count)
    for index in range(count):
        prefix = f"{source.prefix}.{index}."
        block = source.load_block(index)
        kept_float = frozenset(name.removeprefix(prefix) for name in float_layers if name.startswith(prefix))
        kwargs = source.block_kwargs(index) if hidden is not None else None
        checkpoint = _read_checkpoint(ctx.load_checkpoint(f"block_{index}"), fingerprint)
        if checkpoint is not None:
            tensors, block_metrics = checkpoint
            _restore_block(block, prefix, tensors, fmt, kept_float)
            resumed += 1
        else:
            quantized, block_metrics = quantize_block(block, hidden, kwargs, recipe, kept_float)
            tensors = _block_tensors(prefix, block, quantized, dtype)
            metadata = {"modelpress": json.dumps({"fingerprint": fingerprint, "metrics": block_metrics})}
            ctx.save_checkpoint(f"block_{index}", save_safetensors(tensors, metadata=metadata))
        if hidden is not None:
            hidden = run_block(block, hidden, kwargs)
        writer.write(moe.in_checkpoint_layout(tensors, experts, source.model, fmt) if experts else tensors)
        layers.update({prefix + name: value for name, value in block_metrics["layers"].items()})
        if "awq" in block_metrics:
            _add_awq_block(awq, prefix, block_metrics["awq"])
        source.release_block(index)
        ctx.progress("quantize", index + 1, count, block=index, peak_rss_mib=round(_peak_rss_mib(), 1))

    rest, ignore, embedding_table = _outside_blocks(spec, source, hidden, recipe, dtype, layers)
    writer.write(rest)
    writer.finish()
    config = source.config.to_dict()
    fitted = {name: layer["group_size"] for name, layer in layers.items() if "group_size" in layer}
    config["quantization_config"] = export.quantization_config(fmt, ignore + float_layers, spec.algorithm == "gptq"
                                                               and spec.gptq.act_order, embedding_table, fitted)
    config["dtype"] = str(dtype).removeprefix("torch.")
    if spec.lm_head == "quantize" or spec.embeddings == "int8":
        config["tie_word_embeddings"] = False
        if "text_config" in config:  # an image-text model's language settings say it too
            config["text_config"]["tie_word_embeddings"] = False
    export.write_config(output_dir, config, source.origin)

    errors = [layer["output_error"] for layer in layers.values() if "output_error" in layer]
    metrics = {"algorithm": spec.algorithm, "format": config["quantization_config"]["format"],
               "bits": fmt.bits, "group_size": fmt.group_size, "symmetric": fmt.symmetric,
               "blocks": count, "resumed_blocks": resumed, "bytes": export.folder_bytes(output_dir),
               "calibration_tokens": int(calibration.numel()) if calibration is not None else 0,
               "mean_output_error": sum(errors) / len(errors) if errors else None,
               "layers": layers, "kept_float": {name: "router or gate of a mixture of experts"
                                                if name not in read_by_init else _READ_BY_INIT
                                                for name in float_layers},
               "time_s": round(time.monotonic() - started, 3),
               "peak_rss_mib": round(_peak_rss_mib(), 1)}
    warnings = [_fitted_groups_warning(fmt, fitted)] if fitted else []
    if one_format:
        warnings.append(one_format)
    if spec.algorithm == "awq":
        metrics["awq"] = awq
        if 0 < awq["weights"]["unscaled"] >= MOSTLY_UNSCALED * sum(awq["weights"].values()):
            warnings.append(_unscaled_groups_warning(awq))
    if warnings:
        metrics["warnings"] = warnings
    return LLMPTQResult(output_dir, metrics)


def _add_awq_block(awq: dict, prefix: str, block: dict) -> None:
    # .get: a block checkpointed before 2026-12-06 (a job resumed across that deploy) has its search losses only
    awq["scaled_groups"] |= {_prefixed(prefix, group): value for group, value in block.get("groups", {}).items()}
    awq["unscaled_groups"] += [_prefixed(prefix, group) for group in block.get("unscaled_groups", [])]
    for kind, count in block.get("weights", {}).items():
        awq["weights"][kind] += count


def _prefixed(prefix: str, group: str) -> str:
    return ",".join(prefix + name for name in group.split(","))


def _unscaled_groups_warning(awq: dict) -> str:
    unscaled, total = len(awq["unscaled_groups"]), len(awq["unscaled_groups"]) + len(awq["scaled_groups"])
    share = awq["weights"]["unscaled"] / sum(awq["weights"].values())
    return (f"awq scaled {total - unscaled} of {total} groups of linear layers; the other {unscaled}, "
            f"{share:.0%} of the quantized weights (metrics.awq.unscaled_groups), follow no layer that could take "
            "the scales without changing what the model computes, so they were only clipped and rounded")


def _fitted_groups_warning(fmt: WeightFormat, fitted: dict[str, int | None]) -> str:
    by_size: dict[int | None, int] = {}
    for size in fitted.values():
        by_size[size] = by_size.get(size, 0) + 1
    taken = ", ".join(f"{count} use {f'group_size {size}' if size else 'one scale per output channel'}"
                      for size, count in by_size.items())
    return (f"group_size {fmt.group_size} does not divide the input width of {len(fitted)} layer(s): {taken} "
            "(metrics.layers gives each one's group_size)")


_READ_BY_INIT = ("its weight is read by the architecture's weight initialisation, which transformers runs when it "
                 "loads the folder (a quantized layer has no float weight)")


def _read_checkpoint(data: bytes | None, fingerprint: str) -> tuple[dict, dict] | None:
    """(tensors, metrics) of a block checkpoint written by this same spec and calibration data, else None."""
    if not data:
        return None
    header_length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header_length]).get("__metadata__", {})
    saved = json.loads(metadata.get("modelpress", "{}"))
    if saved.get("fingerprint") != fingerprint:
        return None
    return load_safetensors(data), saved["metrics"]


def _outside_blocks(spec: LLMPTQSpec, source: LayerwiseModel, hidden: list[torch.Tensor] | None,
                    recipe: Recipe, dtype: torch.dtype, layers: dict
                    ) -> tuple[dict, list[str], tuple[WeightFormat, str] | None]:
    """Tensors outside the blocks, with lm_head and the embedding table quantized when the spec asks; returns
    them, the compressed-tensors `ignore` list and the embedding table's format and module name."""
    state = source.outside_block_state()
    head = source.model.get_output_embeddings()
    head_name = next(name for name, module in source.model.named_modules() if module is head)
    embedding = source.model.get_input_embeddings()
    embedding_name = next(name for name, module in source.model.named_modules() if module is embedding)
    tensors = {name: value.to(dtype) if value.is_floating_point() else value for name, value in state.items()}
    # Every linear layer outside the blocks stays float (lm_head unless asked; Gemma 3n/4's per-layer input
    # projection): the config's "Linear" target would otherwise have transformers expect it quantized.
    ignore = [head_name] + [name for name, module in source.model.named_modules() if name != head_name
                            and isinstance(module, torch.nn.Linear) and not source.in_blocks(name)]
    if source.ties_embeddings and (spec.lm_head == "quantize" or spec.embeddings == "int8"):
        tensors[f"{head_name}.weight"] = head.weight.detach().to(dtype)  # the two now differ: store both
    if spec.lm_head == "quantize":
        weight = head.weight.detach().float()
        hessian = _head_hessian(source, hidden) if hidden is not None else None
        head_recipe = recipe if recipe.algorithm != "awq" else Recipe("rtn", recipe.format, recipe.scale_dtype)
        quantized = quantize_weight(weight, head_recipe, hessian)
        tensors.pop(f"{head_name}.weight", None)
        tensors.update(export.compressed_tensors(head_name, quantized))
        _keep_in_memory(source, head, quantized.dequantize())
        layers[head_name] = {"sqnr_db": round(weight_sqnr_db(weight, quantized.dequantize()), 3)}
        if quantized.format != recipe.format:
            layers[head_name]["group_size"] = quantized.format.group_size
        if hessian is not None:
            layers[head_name]["output_error"] = output_error(weight, quantized.dequantize(), hessian)
        ignore = ignore[1:]
    embedding_table = None
    if spec.embeddings == "int8":
        embedding_table = (EMBEDDING_FORMAT, embedding_name)
        weight = embedding.weight.detach().float()
        quantized = rtn(weight, EMBEDDING_FORMAT, dtype)
        tensors.pop(f"{embedding_name}.weight")
        tensors.update(export.compressed_tensors(embedding_name, quantized, packed=False))
        _keep_in_memory(source, embedding, quantized.dequantize())
        layers[embedding_name] = {"sqnr_db": round(weight_sqnr_db(weight, quantized.dequantize()), 3)}
    return tensors, ignore, embedding_table


def _quantized_widths(source: LayerwiseModel, spec: LLMPTQSpec, float_layers: list[str]) -> set[int]:
    """The input widths of the linear layers the spec quantizes: the blocks' but the kept-float ones, and lm_head
    when asked."""
    kept = set(float_layers)
    widths = {module.in_features for name, module in source.model.named_modules()
              if isinstance(module, torch.nn.Linear) and source.in_blocks(name) and name not in kept}
    if spec.lm_head == "quantize":
        widths.add(source.model.get_output_embeddings().weight.shape[1])
    return widths


def _keep_in_memory(source: LayerwiseModel, module: torch.nn.Module, weight: torch.Tensor) -> None:
    """An in-memory model ends up computing what the written folder computes (a fresh parameter unties a tied
    table)."""
    if source.folder is None:
        module.weight = torch.nn.Parameter(weight.to(module.weight.dtype), requires_grad=False)


def _head_hessian(source: LayerwiseModel, hidden: list[torch.Tensor]) -> torch.Tensor:
    """Input statistics of lm_head: the final norm of the last block's outputs."""
    norm = next((module for name, module in source.model.named_modules()
                 if name.endswith(".norm") and not name.startswith(source.prefix + ".")), None)
    head = source.model.get_output_embeddings()
    accumulator = HessianAccumulator(head.in_features)
    for states in hidden:
        accumulator.add(norm.float()(states) if norm is not None else states)
    if norm is not None:
        norm.to(source.source_dtype)
    return accumulator.result()
