"""A stage's folder that computes the stage's model with some activation quantizers in float.

int8 PTQ quantizes activations compressed-tensors cannot hold: both factors of a gated MLP's product (Llama, Qwen,
Mistral, Gemma: torchao's x86 recipe quantizes a `mul` of two same-shape tensors), or a shared layer's input on a
grid per call. The folder runs those in float. Where its output differs from the stage's model for that reason
alone (with those quantizers left out the stage's model computes what the folder does), the folder is another
model than the one the job measured, so it is measured itself: the job's metric on the job's evaluation split,
against the upload's outputs, as the stage was. It is offered when it scores no worse than the stage's model, up
to `MAX_METRIC_LOSS_POINTS` of evaluation noise, and its metrics say which model it is and how it scored.

A deep model's folder is measured the same way where rounding ties alone, flipped in one layer and carried
through the next, put it further from the stage's model than the folder check allows, but no further from the
float model than the stage's model is (wav2vec2-base's int8: 12 layers of width 768).
"""

from __future__ import annotations

from typing import Callable

import torch

from compression.hf_folder_graph import NotExpressible

# Rounding ties flip a few examples' outputs either way between two programs of the same function (the folder
# check's 8 rows: 1 to 5 moved), so a metric over a few dozen examples moves by a fraction of a point.
MAX_METRIC_LOSS_POINTS = 0.1

Measure = Callable[[torch.nn.Module], dict]


def measured_variant(loaded: torch.nn.Module, measure: Measure | None, stage_metrics: dict | None,
                     float_activations: int) -> dict | None:
    """The folder's own measurement (to merge into the stage's `hf_folder` metrics) when it scores no worse than
    the stage's model; None when there is nothing to measure it with (the caller refuses the folder as before).
    Raises NotExpressible, with both figures, when it scores worse."""
    if measure is None or not stage_metrics or "metric_points" not in stage_metrics:
        return None
    measured = measure(loaded)
    points, stage_points = measured["metric_points"], stage_metrics["metric_points"]
    differs = (f"with {float_activations} activation quantizers compressed-tensors cannot hold in float"
               if float_activations else "with values at int8 rounding ties landing on other codes in transformers' "
               "kernels, layer after layer")
    if points < stage_points - MAX_METRIC_LOSS_POINTS:
        raise NotExpressible(f"{differs}, the folder scores {points:.4g} {measured['metric']} points against the "
                             f"stage model's {stage_points:.4g}: a weight-only stage (\"activations\": null) gets a "
                             "folder that computes what its .pt2 does")
    return {"computes": (f"the stage's model with {float_activations} activation quantizers in float"
                         if float_activations else "the stage's model, its rounding ties broken by transformers' "
                         "kernels"),
            "metric": measured["metric"], "metric_points": points, "stage_metric_points": stage_points,
            "samples": measured.get("samples")}
