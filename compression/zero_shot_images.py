"""A zero-shot image classifier (CLIP, SigLIP, ALIGN, ... uploaded as a Hugging Face folder with task
`zero-shot-image-classification`): each image scored against the job's candidate labels, as transformers'
pipeline scores them.

The pipeline runs the whole dual encoder on each image and the candidate texts (`logits_per_image`). The texts
are the same for every image, so the program computes their embeddings once, when it is built, from the upload's
text tower, and holds them as a constant: the program is the image side (`get_image_features`), its embedding
normalized and compared with each text's, times the model's logit scale (plus SigLIP's bias). That is what a
deployment with fixed labels runs, and what the stages compress and time; the text tower stays as uploaded, and
each stage's folder is the whole model (`hf_folder_export` copies what the program lacks from the upload).

Whether the program computes what the model's own forward does is checked on the job's first images when it is
built: an architecture whose scores are some other function of the two embeddings is refused there, with the
way in (its own `.pt2`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from compression.fidelity import relative_max_gap
from compression.hf_program import LOCAL_ONLY, ImageEmbedding

# SigLIP was trained on texts padded to 64 tokens, and transformers' pipeline pads them so for it (a shorter
# padding changes its text embeddings).
SIGLIP_TEXT_TOKENS = 64
# Largest gap allowed between the program's scores and the model's own logits_per_image, relative to their scale:
# the same float computation in another order.
MAX_SCORE_GAP = 1e-3


class ZeroShotImageClassifier(ImageEmbedding):
    """`logits_per_image` [batch, labels] of a dual encoder from its image side alone: the candidate texts'
    normalized embeddings, the logit scale and bias are buffers computed once from the text tower."""

    def __init__(self, model: torch.nn.Module, text_inputs: dict[str, torch.Tensor]):
        super().__init__(model)
        self.output = "logits_per_image"
        self.text_inputs = text_inputs  # (a plain attribute: the program reads the embeddings, not the tokens)
        try:
            with torch.no_grad():
                texts = model.get_text_features(**text_inputs, return_dict=True)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's architecture raises on the texts
            raise self.cannot_compute("the candidate labels' text embeddings", exc) from exc
        texts = texts if isinstance(texts, torch.Tensor) else texts.pooler_output
        with torch.no_grad():
            self.register_buffer("label_embeddings", _normalized(texts.float()))
            self.register_buffer("logit_scale", _logit_scale(model).reshape(()))
            bias = getattr(model, "logit_bias", None)
            self.register_buffer("logit_bias", (bias.detach().float() if isinstance(bias, torch.Tensor)
                                                else torch.zeros(())).reshape(()))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        images = _normalized(self.run("pixel_values", pixel_values).float())
        # a matmul, not F.linear: the label embeddings are no layer of the model for a stage to quantize
        return images @ self.label_embeddings.T * self.logit_scale + self.logit_bias

    def check_scores(self, example: tuple[torch.Tensor, ...]) -> None:
        """Refuse an architecture whose own forward scores `example` otherwise (before the text tower is
        removed)."""
        try:
            with torch.no_grad():
                own = self.model(pixel_values=example[0].to(self.model.dtype), **self.text_inputs,
                                 return_dict=True).logits_per_image.float()
                ours = self(*example)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's architecture raises on images
            raise self.cannot_compute("its scores of pixel_values [batch, channels, height, width] against the "
                                      "candidate labels' texts (logits_per_image)", exc) from exc
        if not torch.isfinite(own).all():
            raise ValueError(f"this {self.model.config.model_type} model's own scores (logits_per_image) of the "
                             "job's first images are not finite (an image embedding of zeros, or an overflow); check "
                             "the upload's weights, or export it yourself and upload the .pt2")
        gap = relative_max_gap(ours, own)
        if not gap <= MAX_SCORE_GAP:
            raise ValueError(f"this {self.model.config.model_type} model ({type(self.model).__name__}) scores images "
                             "against texts in a way the service does not reproduce from its image and text "
                             f"embeddings (a gap of {gap:.2g} of the scores' scale); export it yourself "
                             "(torch.export.export of a module returning logits_per_image) and upload the .pt2")


def _normalized(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True)


def _logit_scale(model: torch.nn.Module) -> torch.Tensor:
    """What the cosine similarities are multiplied by: exp(logit_scale) (CLIP, SigLIP, ...), or 1 / temperature
    (ALIGN)."""
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        return scale.detach().float().exp()
    temperature = getattr(model, "temperature", None)
    if isinstance(temperature, torch.Tensor):
        return 1 / temperature.detach().float()
    return torch.ones(())


def tokenized_prompts(folder: Path, model_type: str, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The candidate texts as the folder's tokenizer gives them to the text tower, padded as transformers'
    zero-shot-image-classification pipeline pads them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)
    options = {"padding": True, "truncation": True}
    if "siglip" in model_type:
        options = {"padding": "max_length", "max_length": SIGLIP_TEXT_TOKENS, "truncation": True}
    encoded = tokenizer(prompts, return_tensors="pt", **options)
    return {name: encoded[name] for name in ("input_ids", "attention_mask") if name in encoded}
