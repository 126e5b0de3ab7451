"""The module names a GPT-2 (or GPT-1) folder's jobs see: those of its OPT rewrite (`compression.llm.gpt2_linear`),
which is what runs whenever OPT can express the model. Torch-free, for the API's check of a job's layer patterns.

Before, the API checked patterns against the GPT-2 checkpoint's names (`transformer.h.0.attn.c_attn`) while the
worker's program named the OPT rewrite's (`model.decoder.layers.0.self_attn.q_proj`): every pattern the API
accepted failed the job's dry run, and every name the dry run listed was refused by the API.
"""

from __future__ import annotations

import re

OPT_LAYER_NORM_EPS = 1e-5  # OPT's LayerNorms use torch's default, not a config value; other epsilons stay GPT-2
# the OPT class each task's rewrite is, and where its decoder sits in it
DECODER_PATH = {"causal-lm": "model.decoder", "sequence-classification": "model.decoder",
                "question-answering": "model.decoder", "feature-extraction": "decoder"}
BLOCK_PARTS = {"attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               "attn.c_proj": ("self_attn.out_proj",), "mlp.c_fc": ("fc1",), "mlp.c_proj": ("fc2",),
               "ln_1": ("self_attn_layer_norm",), "ln_2": ("final_layer_norm",)}
# GPT-2 and GPT-1 (`openai-gpt`: post-norm blocks of the same Conv1D layers, no final norm) name their blocks
# alike and their embeddings (and GPT-2's final norm) each their own way
TOP_PARTS = {"wte": "embed_tokens", "wpe": "embed_positions", "ln_f": "final_layer_norm",
             "tokens_embed": "embed_tokens", "positions_embed": "embed_positions"}
CONV1D_DECODERS = ("gpt2", "openai-gpt")
_BLOCK = re.compile(r"^(?:transformer\.)?h\.(\d+)\.(.+)$")
_TOP = re.compile(r"^(?:transformer\.)?(wte|wpe|ln_f|tokens_embed|positions_embed)$")


def rewritten_as_opt(config: dict, task: str | None) -> bool:
    """Whether a GPT-2 or GPT-1 folder's jobs run its OPT rewrite: the task has an OPT class and OPT can express
    the config (no cross-attention, OPT's layer-norm epsilon)."""
    return (config.get("model_type") in CONV1D_DECODERS and task in DECODER_PATH
            and not config.get("add_cross_attention")
            and abs(config.get("layer_norm_epsilon", OPT_LAYER_NORM_EPS) - OPT_LAYER_NORM_EPS) <= 1e-12)


def opt_module_names(gpt2_modules: list[str], task: str) -> list[str]:
    """The OPT rewrite's module names for a GPT-2 or GPT-1 checkpoint's (its head, `score` or `lm_head`, keeps
    its name)."""
    decoder = DECODER_PATH[task]
    names = []
    for module in gpt2_modules:
        if block := _BLOCK.match(module):
            index, part = block.groups()
            names += [f"{decoder}.layers.{index}.{opt}" for opt in BLOCK_PARTS.get(part, (part,))]
        elif top := _TOP.match(module):
            names.append(f"{decoder}.{TOP_PARTS[top.group(1)]}")
        else:
            names.append(module)
    return sorted(set(names))
