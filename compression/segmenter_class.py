"""The transformers class that builds a semantic segmentation model from a folder: `AutoModelForSemanticSegmentation`
(SegFormer, DPT, BEiT, UperNet: class logits per pixel), or for a mask classifier (Mask2Former, MaskFormer, EoMT:
facebook/mask2former-swin-large-ade-semantic and their instance and panoptic checkpoints)
`AutoModelForUniversalSegmentation`, whose per-query classes and masks `compression.hf_program` turns into the
class map transformers' semantic post-processing computes.
"""

from __future__ import annotations

from compression.auto_by_config import AutoByConfig

# Mask classifiers read as semantic segmentation: their universal segmentation class scores object queries and
# their masks. (OneFormer also reads a task prompt's tokens; DETR's segmentation head is its detector's.)
MASK_SEGMENTERS = ("mask2former", "maskformer", "eomt", "eomt_dinov3")


class AutoSegmenter(AutoByConfig):
    """`from_config` / `from_pretrained` as transformers' Auto classes, choosing one by the config."""

    @staticmethod
    def auto_class(config):
        from transformers import AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation

        if config.model_type in MASK_SEGMENTERS:
            return AutoModelForUniversalSegmentation
        return AutoModelForSemanticSegmentation
