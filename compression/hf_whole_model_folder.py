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

from compression.hf_folder_graph import FolderLayout, NotExpressible
from compression.tied_copies import shared_groups

# What the folder's metrics tell a user: the features are the encoder's, and compressed-tensors decompresses the
# weights in a hook on the whole model's first call, which running the encoder alone skips.
ENCODER_FEATURES = ("model.get_encoder()(input_ids=..., attention_mask=...).last_hidden_state, with a quantized "
                    "folder's weights decompressed first: the artifact's recipe loads them dequantized "
                    "(CompressedTensorsConfig(dequantize=True)); from_pretrained alone leaves it to the whole "
                    "model's first call, which the encoder alone never makes: then call "
                    "model.hf_quantizer.compressor.decompress_model(model) once")


@dataclass(frozen=True)
class EncoderOf:
    """The whole model a stage's encoder was taken from, as loaded (the folder's other tensors come from it rather
    than from a second load), and the encoder's name in it (`encoder`)."""

    whole: torch.nn.Module
    name: str


def encoder_of(whole: torch.nn.Module, encoder: torch.nn.Module) -> EncoderOf:
    name = next(name for name, module in whole.named_modules() if module is encoder)
    return EncoderOf(whole, name)


def keep_shared_tables_float(where: EncoderOf, layout: FolderLayout) -> None:
    """A token table the encoder shares with the rest of the model (BART's `shared`, which the decoder reads too)
    and the stage quantized is written as its dequantized values: the decoder reads it as floats."""
    state = where.whole.state_dict()
    prefix = f"{where.name}."
    for names in shared_groups(state.items()):
        ours = [name for name in names if name.startswith(prefix)]
        for name in ours if len(ours) < len(names) else []:
            if (module := name.removeprefix(prefix).removesuffix(".weight")) in layout.weights:
                layout.write_float(module, state[name].dtype)
                layout.embeddings.discard(module)
                layout.dequantized_tables.append(module)


def whole_model_tensors(where: EncoderOf, encoder_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The folder's tensors: the whole uploaded model's, with the encoder's replaced by `encoder_tensors` (the
    stage's, named inside the encoder). A table the encoder shares with the rest of the model (BART's `shared`
    token embedding, which the decoder reads too) takes the encoder's values, under the one name the whole model
    keeps it by (transformers ties the others to it when it loads the folder)."""
    state = where.whole.state_dict()
    prefix = f"{where.name}."
    tensors = {name: tensor for name, tensor in state.items() if not name.startswith(prefix)}
    tensors |= {prefix + name: tensor for name, tensor in encoder_tensors.items()}
    for names in shared_groups(state.items()):
        ours = [name for name in names if name.startswith(prefix)]
        if not ours:
            continue
        if ours[0] not in tensors or not tensors[ours[0]].is_floating_point():  # `keep_shared_tables_float` was not
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
