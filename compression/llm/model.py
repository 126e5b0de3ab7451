"""A causal LM held one decoder block at a time.

From a Hugging Face folder, the model is built with its parameters on the `meta` device (no memory) and its
buffers as the architecture computes them (rotary tables, causal masks, embedding scales: not all are stored in
checkpoints), then only what lies outside the decoder blocks (embeddings, final norm, lm_head) is read from the
safetensors files; each block's
weights are read when `load_block` asks for it and dropped by `release_block`, as the big-model paths of GPTQModel
and llm-compressor stream layers. Memory is then the non-block weights, one block, and one block's activations.
An `nn.Module` already in memory goes through the same interface without any loading.

The blocks' inputs are caught by running the model with every block replaced by a recorder that notes its
arguments and passes the hidden states through; so every architecture's own code builds the attention masks and
the position embeddings, and each block is later called exactly as the model calls it: Gemma 2/3 give their
sliding-window and global layers different masks and rotary tables, and Gemma 3n/4 each layer its own inputs. A
model whose code cannot run on passed-through hidden states (it unpacks a block's output as a tuple) has its first
block's arguments caught by a catcher that stops the model there, and every block replays those.
"""

from __future__ import annotations

import ctypes
import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from compression.moe_folder import stacked_projections


class _Caught(Exception):
    def __init__(self, hidden: torch.Tensor, kwargs: dict):
        super().__init__("first block reached")
        self.hidden, self.kwargs = hidden, kwargs


class _AllRecorded(Exception):
    """Raised by the last block's stand-in: the final norm and output layer need not run (the output layer's
    logits over a large vocabulary would be the largest tensor of the pass)."""


class _StandIn(nn.Module):
    """Stands in for a block while its inputs are caught; the model reads attributes of its blocks (e.g.
    `attention_type`) before calling them."""

    def __init__(self, block: nn.Module, index: int, calls: list | None, last: bool = False):
        super().__init__()
        self.block, self.index, self.calls, self.last = block, index, calls, last

    def forward(self, hidden_states, *args, **kwargs):
        _check_hidden_states_come_first(self._modules["block"], kwargs)
        arguments = _named_arguments(self._modules["block"], hidden_states, args, kwargs)
        if self.calls is None:  # the catcher: stop the model at the first block
            raise _Caught(hidden_states, arguments)
        self.calls.append((self.index, hidden_states, arguments))
        if self.last:
            raise _AllRecorded
        return hidden_states

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)


def _check_hidden_states_come_first(block: nn.Module, kwargs: dict) -> None:
    """Calibration replays each block as `block(hidden_states, **arguments)`. A block whose first parameter the
    model passed by name, the hidden states under another name (Reformer's layer takes the previous attention
    output first), cannot be replayed so: refused here, before any block is quantized."""
    import inspect

    parameters = list(inspect.signature(block.forward).parameters.values())
    if parameters and parameters[0].kind is not inspect.Parameter.VAR_POSITIONAL and parameters[0].name in kwargs:
        raise ValueError(f"llm_ptq calibrates each decoder block by calling it with the hidden states first, but "
                         f"this model's {type(block).__name__} takes `{parameters[0].name}` first; llm_ptq does not "
                         f"support this architecture")


def _named_arguments(block: nn.Module, hidden_states, args: tuple, kwargs: dict) -> dict:
    """A block call's arguments but the hidden states, by name (Gemma 4 passes its per-layer input
    positionally), so that replaying is `block(hidden, **arguments)`."""
    if not args:
        return kwargs
    import inspect

    bound = inspect.signature(block.forward).bind(hidden_states, *args, **kwargs)
    first = next(iter(bound.arguments))
    return {name: value for name, value in bound.arguments.items() if name != first} | bound.kwargs


def _to_float32(value, converted: dict):
    """Float tensors as float32, each converted once (blocks of one kind share their mask and rotary tables)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or value.dtype == torch.float32:
            return value
        if id(value) not in converted:
            converted[id(value)] = value.float()
        return converted[id(value)]
    if isinstance(value, tuple):
        return tuple(_to_float32(item, converted) for item in value)
    if isinstance(value, dict):
        return {key: _to_float32(item, converted) for key, item in value.items()}
    return value


CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value")


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name)
    if attribute in module._parameters:
        module._parameters[attribute] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[attribute] = tensor


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def _allocate_large_tensors_with_mmap() -> None:
    """Keep memory at one block when streaming. glibc raises its mmap threshold (up to 32 MiB) each time a large
    allocation is freed, so block-sized tensors and their temporaries then come from the heap, which fragments
    and is not given back: measured on 16 blocks of 24 MiB, RSS grew by about a block per block (+600 MiB).
    A fixed 1 MiB threshold maps every large tensor on its own and unmaps it when freed (flat RSS)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


@contextmanager
def _parameters_on_meta():
    """Modules built inside hold every parameter on `meta` while their buffers are computed as usual (what
    accelerate's `init_empty_weights(include_buffers=False)` does): each parameter is allocated uninitialised
    (`torch.empty`), then moved before any initialisation runs."""
    register = nn.Module.register_parameter

    def on_meta(module, name, parameter):
        if parameter is not None and not parameter.is_meta:
            parameter = nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        register(module, name, parameter)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _stored_names(stored: list[str], model: nn.Module) -> dict[str, str]:
    """The checkpoint's tensor names keyed by the model's names for them: transformers renames some when it loads a
    checkpoint (GPT-NeoX's `embed_out` is `lm_head`; Qwen2.5-VL's `visual.` and `model.` move under new parents),
    and streaming reads tensors by the model's names, renamed by transformers' own function. Tensors that
    transformers converts (Mixtral's per-expert weights stacked into one) cannot be read one by one."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    # Every renaming fires in turn, and they chain (EXAONE's `.attn.attention.` becomes `.self_attn.`, whose
    # `.self_attn.out_proj.` then becomes `.self_attn.o_proj.`): none is skipped for not matching a stored name.
    renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
    own = model.state_dict()
    renamed = {rename_source_key(name, renamings, [], getattr(model, "base_model_prefix", None), own)[0]: name
               for name in stored}
    for transform in transforms:
        if isinstance(transform, WeightRenaming):  # renames, and PrefixChange (a renaming) too
            continue
        sources = getattr(transform, "compiled_sources", None)
        if sources is not None and not any(sources.search(name) for name in (*stored, *renamed)):
            continue  # converts tensors this checkpoint does not hold (Nemotron-H's experts, in a dense one)
        raise ValueError(f"transformers converts the stored tensors of {type(model).__name__} when it loads "
                         f"them ({transform.source_patterns} -> {transform.target_patterns}); streaming one "
                         "block at a time reads them as stored, so this architecture is not supported")
    return renamed


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder's list of blocks, searched in the text decoder (`get_decoder`): an image-text model (Gemma 3
    4B+, Mistral 3, Qwen2.5-VL) also holds its vision tower's layers, whose count may be the same."""
    layers = model.config.get_text_config().num_hidden_layers
    names = {module: name for name, module in model.named_modules()}
    # `get_decoder` can name something else: ModernBERT-decoder's output projection is its `decoder` attribute.
    for searched in (_text_decoder(model), model):
        for module in searched.modules():
            if isinstance(module, nn.ModuleList) and len(module) == layers:
                return names[module], module
    raise ValueError(f"no list of {layers} decoder blocks found in {type(model).__name__}")


def _text_decoder(model: nn.Module) -> nn.Module:
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError):
        return model
    return decoder if isinstance(decoder, nn.Module) else model


class LayerwiseModel:
    def __init__(self, model: nn.Module, folder: Path | None = None, origin: Path | None = None):
        """`folder`: the checkpoint streamed block by block (None: `model` holds its weights); `origin`: the folder
        `model` came from, whose tokenizer and settings a written folder takes over (`folder` when streamed)."""
        self.model, self.folder, self.origin = model.eval(), folder, origin or folder
        self.config = model.config
        self.text_config = model.config.get_text_config()  # an image-text model's language settings
        self.prefix, self.blocks = _find_blocks(model)
        files = self._weight_files(folder) if folder else {}
        self.stored_names = _stored_names(list(files), model) if folder else {}  # model's name -> checkpoint's
        self.files: dict[str, Path] = {name: files[stored] for name, stored in self.stored_names.items()}
        self.source_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        if folder:
            _allocate_large_tensors_with_mmap()
            stored = getattr(self.config, "dtype", None) or self.source_dtype
            self.source_dtype = getattr(torch, stored) if isinstance(stored, str) else stored
            self._load_outside_blocks()

    @classmethod
    def load(cls, source: str | Path | nn.Module) -> "LayerwiseModel":
        if isinstance(source, nn.Module):
            return cls(source)
        from transformers import AutoConfig

        from compression.causal_lm_class import AutoCausalLM

        folder = Path(source)
        if not (folder / "config.json").exists():
            raise ValueError(f"{folder} is not a Hugging Face model folder (no config.json)")
        config = AutoConfig.from_pretrained(folder)
        if getattr(config, "quantization_config", None):
            raise ValueError(f"{folder} holds an already quantized model: start from its float checkpoint")
        with _parameters_on_meta():
            model = AutoCausalLM.from_config(config)
        if stacked_projections(model):
            # transformers stacks a mixture of experts' per-expert checkpoint tensors when it loads them, a
            # conversion that reading one block's tensors cannot replay: such a model is loaded whole.
            model = AutoCausalLM.from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                 trust_remote_code=False)
            return cls(model, origin=folder)
        return cls(model, folder)

    @staticmethod
    def _weight_files(folder: Path) -> dict[str, Path]:
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.exists():
            return {key: folder / file for key, file in json.loads(index.read_text())["weight_map"].items()}
        single = folder / "model.safetensors"
        if not single.exists():
            raise ValueError(f"{folder} holds no safetensors weights (model.safetensors or an index)")
        with safe_open(single, "pt") as handle:
            return dict.fromkeys(handle.keys(), single)

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        missing = [name for name in names if name not in self.files]
        if missing:
            raise ValueError(f"weights missing from {self.folder}: {', '.join(missing[:5])}")
        tensors = {}
        for file in {self.files[name] for name in names}:
            with safe_open(file, "pt") as handle:
                tensors.update({name: handle.get_tensor(self.stored_names[name]) for name in names
                                if self.files[name] == file})
        return tensors

    def in_blocks(self, name: str) -> bool:
        return name.startswith(self.prefix + ".")

    def _load_outside_blocks(self) -> None:
        names = [name for name, _ in self.model.named_parameters(remove_duplicate=False) if not self.in_blocks(name)]
        stored = [name for name in names if name in self.files]
        for name, tensor in self.read(stored).items():
            _set_tensor(self.model, name, tensor)
        if len(stored) < len(names):
            if not self.ties_embeddings:
                raise ValueError(f"weights missing from {self.folder}: {sorted(set(names) - set(stored))[:5]}")
            self.model.get_output_embeddings().weight = self.model.get_input_embeddings().weight

    @property
    def ties_embeddings(self) -> bool:
        """Whether lm_head is the input embedding (an image-text model may say so in its own config or in its
        language model's: Mistral 3)."""
        return any(getattr(config, "tie_word_embeddings", False) for config in (self.config, self.text_config))

    def block_names(self, index: int) -> list[str]:
        prefix = f"{self.prefix}.{index}."
        return [prefix + name for name in self.blocks[index].state_dict()]

    def load_block(self, index: int) -> nn.Module:
        """The block with float32 weights (the calibration precision)."""
        block = self.blocks[index]
        if self.folder:
            prefix = f"{self.prefix}.{index}."
            tensors = self.read(self.block_names(index))
            block.load_state_dict({name[len(prefix):]: t for name, t in tensors.items()}, strict=True, assign=True)
            if any(buffer.is_meta for buffer in block.buffers()):
                raise ValueError(f"block {index} of {type(self.model).__name__} has buffers that are not stored in "
                                 "the checkpoint; streaming does not support this architecture: pass the model "
                                 "loaded in memory instead")
        return block.float()

    def release_block(self, index: int) -> None:
        """Streamed blocks' parameters go back to `meta` (their computed buffers stay: they are never read from
        the checkpoint); in-memory ones keep the (dequantized) weights in the source dtype."""
        block = self.blocks[index]
        if self.folder:
            for module in block.modules():
                for name, parameter in module._parameters.items():
                    if parameter is not None:
                        module._parameters[name] = nn.Parameter(parameter.to("meta"), requires_grad=False)
        else:
            block.to(self.source_dtype)

    def outside_block_state(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint stores outside the blocks (a tied lm_head only once, as `save_pretrained`)."""
        state = {name: tensor for name, tensor in self.model.state_dict().items() if not self.in_blocks(name)}
        output, embedding = self.model.get_output_embeddings(), self.model.get_input_embeddings()
        if output is not None and output.weight.data_ptr() == embedding.weight.data_ptr():
            # state_dict() detaches, so the tied pair are two tensor objects on one storage: compare storages.
            head = next(name for name, module in self.model.named_modules() if module is output)
            state.pop(f"{head}.weight", None)
        return state

    @torch.no_grad()
    def first_block_inputs(self, batches: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[dict]]:
        """For each batch of token ids, the hidden states entering block 0 and the keyword arguments the model
        passes it (attention mask, position embeddings), in float32; `block_kwargs(index)` then gives each
        block's own."""
        originals = list(self.blocks)
        calls: list = []
        self._kwargs: list[list[dict]] | None = [[] for _ in originals]
        try:
            for index, block in enumerate(originals):
                self.blocks[index] = _StandIn(block, index, calls, last=index == len(originals) - 1)
            hidden = [self._recorded(batch, calls) for batch in batches]
        except Exception:  # noqa: BLE001 - the model's code on passed-through states: fall back to the catcher
            self._kwargs, self._first_kwargs = None, []
            self.blocks[0] = _StandIn(originals[0], 0, None)
            hidden = [self._caught(batch) for batch in batches]
        finally:
            for index, block in enumerate(originals):
                self.blocks[index] = block
        return hidden, self.block_kwargs(0)

    def _recorded(self, batch: torch.Tensor, calls: list) -> torch.Tensor:
        calls.clear()
        try:
            self.model(input_ids=batch, use_cache=False)
        except _AllRecorded:
            pass
        if [index for index, _, _ in calls] != list(range(len(self.blocks))):
            raise RuntimeError("the model did not call each decoder block once, in order")
        if any(states.shape != calls[0][1].shape for _, states, _ in calls):
            # the model unpacked a block's output as a tuple (`outputs[0]`): later blocks saw other states
            raise RuntimeError("the passed-through hidden states changed shape")
        converted: dict = {}
        for index, _, arguments in calls:
            self._kwargs[index].append({key: _to_float32(value, converted) for key, value in arguments.items()
                                        if key not in CACHE_ARGUMENTS})
        return calls[0][1].float()

    def _caught(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            self.model(input_ids=batch, use_cache=False)
        except _Caught as caught:
            converted: dict = {}
            self._first_kwargs.append({key: _to_float32(value, converted) for key, value in caught.kwargs.items()
                                       if key not in CACHE_ARGUMENTS})
            return caught.hidden.float()
        raise RuntimeError("the model never called its first decoder block")

    def block_kwargs(self, index: int) -> list[dict]:
        """Per batch, the keyword arguments block `index` is called with (the first block's where they could only
        be caught for it)."""
        return self._kwargs[index] if self._kwargs is not None else self._first_kwargs


@torch.no_grad()
def run_block(block: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict]) -> list[torch.Tensor]:
    outputs = []
    for states, call_kwargs in zip(hidden, kwargs, strict=True):
        out = block(states, **call_kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs
