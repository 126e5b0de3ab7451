"""The transformers class that builds a causal LM from a folder: `AutoModelForCausalLM`, or for an image-text
model that transformers builds only as image-text-to-text (Mistral 3, Qwen2.5-VL, LLaVA, Idefics3, ...),
`AutoModelForImageTextToText`, whose forward on token ids alone is its language model's: the service compresses
such a model as the causal LM it is for text, its vision tower kept as it is.
"""

from __future__ import annotations

from compression.auto_by_config import AutoByConfig


class AutoCausalLM(AutoByConfig):
    """`from_config` / `from_pretrained` as transformers' Auto classes, choosing one by the config."""

    @staticmethod
    def auto_class(config):
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        if type(config) in AutoModelForCausalLM._model_mapping:
            return AutoModelForCausalLM
        return AutoModelForImageTextToText
