"""The folder of an encoder-decoder's features where transformers has no encoder-only class (BART, mBART, Pegasus,
Marian, M2M100, ...; T5 has T5EncoderModel): a stage compresses the encoder alone (`hf_program.load_folder_model`), and
a folder of the encoder's tensors under the encoder's own names did not load (`AutoModel` builds the whole model,
found none of them and started them random). The folder is the whole base model instead: the stage's encoder
under the whole model's names for it, the decoder as uploaded (but for a token table it shares with the encoder,
which holds the stage's values), so `AutoModel.from_pretrained(folder).get_encoder()` computes what the stage's
program does."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from compression.hf_folder_graph import NotExpressible
from compression.tied_copies import shared_groups

# What the folder's metrics tell a user: the features are the encoder's, and compressed-tensors decompresses the
# weights in a hook on the whole model's first call, which running the encoder alone skips.
ENCODER_FEATURES = ("model.get_encoder()(input_ids=..., attention_mask=...).last_hidden_state, after "
                    "model.hf_quantizer.compressor.decompress_model(model) where the folder is quantized (its "
                    "weights are decompressed on the whole model's first call, which the encoder alone never makes)")


@dataclass(frozen=True)
class EncoderOf:
    """Where the encoder a stage compresses sits: transformers' class of the whole model, and the encoder's name
    in it (`encoder`)."""

    whole_class: type
    name: str


def encoder_of(whole: torch.nn.Module, encoder: torch.nn.Module) -> EncoderOf:
    name = next(name for name, module in whole.named_modules() if module is encoder)
    return EncoderOf(type(whole), name)


def decompress(whole: torch.nn.Module) -> None:
    """Decompress a compressed-tensors folder's weights now: compressed-tensors does it in a hook on the whole
    model's first call, which running a part of it (its encoder alone) never makes (its linears then ran on their
    int8 codes and failed: "self and mat2 must have the same dtype"). A no-op on any other model."""
    quantizer = getattr(whole, "hf_quantizer", None)
    if hasattr(whole, "ct_decompress_hook") and hasattr(quantizer, "compressor"):
        quantizer.compressor.decompress_model(whole)


def shared_with_the_rest(where: EncoderOf, state: dict[str, torch.Tensor]) -> list[str]:
    """The encoder's tensors (named inside it) that the whole model shares with its other parts: BART's token
    table, which the decoder reads as `shared`. The folder holds them float, as the decoder reads them."""
    prefix = f"{where.name}."
    shared = []
    for names in shared_groups(state.items()):
        ours = [name.removeprefix(prefix) for name in names if name.startswith(prefix)]
        if ours and len(ours) < len(names):
            shared += ours
    return shared


def whole_model_tensors(where: EncoderOf, state: dict[str, torch.Tensor],
                        encoder_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The folder's tensors: the whole uploaded model's (`state`), with the encoder's replaced by `encoder_tensors`
    (the stage's, named inside the encoder). A table the encoder shares with the rest of the model (BART's `shared`
    token embedding, which the decoder reads too) takes the encoder's values, under the one name the whole model
    keeps it by (transformers ties the others to it when it loads the folder)."""
    prefix = f"{where.name}."
    tensors = {name: tensor for name, tensor in state.items() if not name.startswith(prefix)}
    tensors |= {prefix + name: tensor for name, tensor in encoder_tensors.items()}
    for names in shared_groups(state.items()):
        ours = [name for name in names if name.startswith(prefix)]
        if not ours:
            continue
        if ours[0] not in tensors or not tensors[ours[0]].is_floating_point():  # `shared_with_the_rest` was not
            raise NotExpressible(f"the folder holds '{ours[0]}' quantized, which the whole model shares with "
                                 f"{[name for name in names if name not in ours]}")
        values = tensors[ours[0]]
        for name in names[1:]:
            tensors.pop(name, None)
        tensors[names[0]] = values
    return tensors


def prefixed_targets(schemes: list[dict], ignore: list[str], where: EncoderOf) -> tuple[list[dict], list[str]]:
    """compressed-tensors schemes and ignores naming the encoder's modules by the whole model's names."""
    def prefixed(target: str) -> str:  # a module name, or a regex over names (`re:^...`: experts)
        return f"re:^{re.escape(where.name)}\\.{target[4:]}" if target.startswith("re:^") else f"{where.name}.{target}"

    return ([{**scheme, "targets": [prefixed(target) for target in scheme["targets"]]} for scheme in schemes],
            [prefixed(name) for name in ignore])
