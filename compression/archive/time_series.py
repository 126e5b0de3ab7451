"""Time-series models uploaded as Hugging Face folders (PatchTST, PatchTSMixer: ibm-granite's
granite-timeseries-patchtst and -ttm family), known torch-free from their config.json.

Each reads `past_values` [batch, context_length, num_input_channels], the series' last `context_length` steps of
every channel as floats (its own scaler standardizes each window inside the model), and its head gives:
- `time-series-classification`: class logits [batch, num_targets], judged as a classifier's (class labels
  `<split>.y` where known);
- `time-series-regression`: `num_targets` values [batch, num_targets] (output kind 'regression'; value labels
  `<split>.y` [N] or [N, num_targets] where known);
- `time-series-forecasting`: the next `prediction_length` steps of each channel, [batch, prediction_length,
  channels], judged against the upload's own forecasts (output kind 'regression': the rank agreement of each
  step's and channel's forecasts across the windows, `score_spearman`, with MSE and SQNR beside it).
"""

from __future__ import annotations

TS_CLASSIFICATION = "time-series-classification"
TS_REGRESSION = "time-series-regression"
TS_FORECASTING = "time-series-forecasting"
TIME_SERIES_TASKS = (TS_CLASSIFICATION, TS_REGRESSION, TS_FORECASTING)
SERIES_INPUT = "past_values"
# The forecasting heads transformers ships for the model types its classification and regression mappings list
# (its own time-series-prediction mapping names TimesFM alone, refused below).
FORECASTERS = {"patchtst": "PatchTSTForPrediction", "patchtsmixer": "PatchTSMixerForPrediction"}
# TimesFM's forward takes a list of series and loops over it in Python, padding and normalizing each: an export
# fixes the batch it was traced with, and the program would take no other.
UNBATCHED_FORECASTERS = ("timesfm", "timesfm2_5")
UNBATCHED_FORECASTER = ("model_type '{model_type}' (TimesFM) reads a list of series and loops over it one series at "
                        "a time, which cannot be exported with a dynamic batch; the time-series folders modelpress "
                        "compresses are PatchTST's and PatchTSMixer's (classification, regression, forecasting)")
DISTRIBUTION_HEAD = ("config.json loss is '{loss}': this {task} head gives the parameters of a distribution "
                     "({distribution}), not values, and modelpress compresses heads trained with loss 'mse' (their "
                     "outputs are the forecast or the targets themselves)")
FORECAST_LABELS = ("a time-series-forecasting job compares the compressed model's forecasts with the original's "
                   "(rank agreement of each step's forecasts across the windows, MSE, SQNR); future values are not "
                   "read: remove {labels} from the .npz")
SERIES_DATASET = "windows of the series as floats, [N, context_length, channels]"


def series_input_shape(config: dict) -> list[int | None]:
    """[batch, context_length, num_input_channels] of `past_values` (a size the config leaves out is None)."""
    return [None, _positive(config.get("context_length")), _positive(config.get("num_input_channels"))]


def series_output(task: str, config: dict) -> dict:
    """The output (a TensorSpec's JSON) a time-series head gives."""
    if task == TS_FORECASTING:
        # PatchTSMixer may forecast some channels only (prediction_channel_indices)
        picked = config.get("prediction_channel_indices")
        channels = len(picked) if isinstance(picked, list) and picked else config.get("num_input_channels")
        return {"name": "prediction_outputs", "shape": [None, _positive(config.get("prediction_length")),
                                                        _positive(channels)], "dtype": "float32"}
    name = "logits" if task == TS_CLASSIFICATION else "regression_outputs"
    return {"name": name, "shape": [None, _positive(config.get("num_targets"))], "dtype": "float32"}


def series_head_classes(task: str) -> dict:
    """The folder's "classes" facts: a classifier's targets are unnamed classes; a regression or forecasting head
    predicts values (output kind 'regression')."""
    return {"names": None, "multi_label": False, "regression": task != TS_CLASSIFICATION}


def series_config_problem(task: str, model_type: str, config: dict) -> str | None:
    """Why a time-series folder's model cannot be exported and judged, or None."""
    if model_type in UNBATCHED_FORECASTERS:
        return UNBATCHED_FORECASTER.format(model_type=model_type)
    loss = config.get("loss", "mse")
    if task != TS_CLASSIFICATION and loss != "mse":
        return DISTRIBUTION_HEAD.format(loss=loss, task=task,
                                        distribution=config.get("distribution_output", "student_t"))
    return None


def _positive(value) -> int | None:
    return value if type(value) is int and value > 0 else None
