"""A zero-shot object detector (OWL-ViT, OWLv2, Grounding DINO uploaded as a Hugging Face folder with task
`zero-shot-object-detection`): every patch (OWL) or object query (Grounding DINO) of the image scored against the
job's candidate labels, as transformers' pipeline scores them, with its box.

The model embeds its text queries with its text tower and scores each patch's class embedding against them. The
queries are the same for every image, so the program embeds them once, when it is built, and holds them as a
constant: the program is the image side (`image_embedder`, then the class and box heads), [batch, patches,
labels + 4], a sigmoid probability per label, as the pipeline's post-processing reads the logits, then the box
(centre x, centre y, width, height) relative to the image, as `compression.detection` judges detections. That is
what a deployment with fixed queries runs, and what the stages compress and time; the text tower stays as
uploaded (the program leaves it out, and each stage's folder copies it from the upload).

Whether the program computes what the model's own forward does is checked on the job's first images when it is
built.

Grounding DINO (and MM Grounding DINO) reads its text inside the detector, where text and image attend to each
other: its queries cannot be embedded apart, so the program holds the tokenized text (the labels joined as the
processor joins them, "cat. remote control.") as a constant and runs the whole model (`GroundedDetector`). Its
logits score each object query against each token; a label's score is the best of its tokens' (what the
post-processing's best token and phrase read), so that the detections have the same layout as OWL's.
"""

from __future__ import annotations

import torch

from compression.archive.errors import InvalidUpload
from compression.fidelity import relative_max_gap

# Largest gap allowed between the program's detections and the model's own, relative to their scale: the same
# float computation in another order.
MAX_DETECTION_GAP = 1e-3
# The parts of OWL-ViT's and OWLv2's base model that embed the text queries, which the program does not run.
TEXT_PARTS = ("text_model", "text_projection")


class ZeroShotDetector(torch.nn.Module):
    """Detections [batch, patches, labels + 4] of an OWL-ViT or OWLv2 detector from its image side alone: the
    queries' embeddings and mask are buffers computed once from the text tower. Holds the model as `model`, so that
    the program's names are the folder's."""

    pooling = None
    output = "detections"

    def __init__(self, model: torch.nn.Module, text_inputs: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.text_inputs = text_inputs  # (a plain attribute: the program reads the embeddings, not the tokens)
        vision = model.config.vision_config
        blank = torch.zeros(1, vision.num_channels, vision.image_size, vision.image_size, dtype=model.dtype)
        with torch.no_grad():  # (the queries' embeddings do not depend on the image)
            own = model(pixel_values=blank, **text_inputs, return_dict=True)
        queries = text_inputs["input_ids"]
        self.register_buffer("query_embeds", own.text_embeds.detach().reshape(1, len(queries), -1))
        self.register_buffer("query_mask", (queries[:, 0] > 0).reshape(1, -1))  # transformers' padded-query test

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feature_map = self.model.image_embedder(pixel_values=pixel_values.to(self.model.dtype))[0]
        batch, height, width, hidden = feature_map.shape
        patches = feature_map.reshape(batch, height * width, hidden)
        logits = self.model.class_predictor(patches, self.query_embeds.expand(batch, -1, -1),
                                            self.query_mask.expand(batch, -1))[0]
        boxes = self.model.box_predictor(patches, feature_map)
        return torch.cat([logits.float().sigmoid(), boxes.float()], -1)

    def own_detections(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the model's own forward detects, in the program's layout."""
        batch = len(pixel_values)
        repeated = {name: value.repeat(batch, 1) for name, value in self.text_inputs.items()}
        output = self.model(pixel_values=pixel_values.to(self.model.dtype), **repeated, return_dict=True)
        return torch.cat([output.logits.float().sigmoid(), output.pred_boxes.float()], -1)

    def check_scores(self, example: tuple[torch.Tensor, ...]) -> None:
        """Refuse an architecture whose own forward detects otherwise on `example` (before the text tower is
        removed)."""
        with torch.no_grad():
            own, ours = self.own_detections(example[0]), self(*example)
        gap = relative_max_gap(ours, own)
        if not gap <= MAX_DETECTION_GAP:
            raise ValueError(f"this {self.model.config.model_type} model ({type(self.model).__name__}) detects in a "
                             "way the service does not reproduce from its image side and its queries' embeddings (a "
                             f"gap of {gap:.2g} of the detections' scale); export it yourself and upload the .pt2")

    def without_text_tower(self, example: tuple[torch.Tensor, ...]) -> list[str]:
        """Remove the text tower from the model, in place (torch.export would keep its weights in the program, read
        or not); returns the removed modules' names."""
        base_name = self.model.base_model_prefix
        base = getattr(self.model, base_name)
        removed = [name for name in TEXT_PARTS if isinstance(getattr(base, name, None), torch.nn.Module)]
        for name in removed:
            delattr(base, name)
        return [f"{base_name}.{name}" for name in removed]


class GroundedDetector(torch.nn.Module):
    """Detections [batch, queries, labels + 4] of a Grounding DINO model run whole on the labels' text, a
    constant of the program: each label's score is the best sigmoid of its tokens' logits."""

    pooling = None
    output = "detections"

    def __init__(self, model: torch.nn.Module, text_inputs: dict[str, torch.Tensor], label_tokens: torch.Tensor):
        super().__init__()
        self.model = model
        for name, value in text_inputs.items():
            self.register_buffer(f"text_{name}", value)
        self.text_names = list(text_inputs)
        # [max_text_len, labels]: which of the logits' token positions belong to each label
        self.register_buffer("label_tokens", label_tokens)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch = pixel_values.shape[0]
        text = {name: getattr(self, f"text_{name}").expand(batch, -1) for name in self.text_names}
        output = self.model(pixel_values=pixel_values.to(self.model.dtype), **text, return_dict=True)
        probabilities = output.logits.float().sigmoid()  # [batch, queries, max_text_len]
        scores = probabilities[..., None].masked_fill(~self.label_tokens, 0.0).amax(-2)
        return torch.cat([scores, output.pred_boxes.float()], -1)


def grounded_detector(model: torch.nn.Module, folder, labels: list[str]) -> GroundedDetector:
    """A Grounding DINO model looking for `labels`, their text tokenized with the folder's tokenizer as
    transformers' processor merges them (lower case, each followed by a full stop)."""
    from transformers import AutoTokenizer

    from compression.hf_program import LOCAL_ONLY

    tokenizer = AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)
    labels = [label.strip().lower() for label in labels]
    text, spans = "", []
    for label in labels:
        text += (" " if text else "")
        spans.append((len(text), len(text) + len(label)))
        text += label + "."
    if not tokenizer.is_fast:
        raise InvalidUpload("a Grounding DINO folder's tokenizer must be a fast one (tokenizer.json), which says "
                            "where each label's tokens are")
    encoded = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    limit = model.config.max_text_len
    if encoded["input_ids"].shape[1] > limit:
        raise InvalidUpload(f"the candidate labels make {encoded['input_ids'].shape[1]} tokens, and this model reads "
                            f"at most {limit} (its config's max_text_len): name fewer or shorter labels")
    offsets = encoded.pop("offset_mapping")[0]
    label_tokens = torch.zeros(limit, len(labels), dtype=torch.bool)
    for index, (start, end) in enumerate(spans):
        inside = (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0])
        if not inside.any():
            raise InvalidUpload(f"candidate label {labels[index]!r} makes no token with this folder's tokenizer")
        label_tokens[torch.nonzero(inside).squeeze(1), index] = True
    text_inputs = {name: encoded[name] for name in ("input_ids", "token_type_ids", "attention_mask")
                   if name in encoded}
    return GroundedDetector(model, text_inputs, label_tokens)
