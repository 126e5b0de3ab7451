"""The transformers classes that build a time-series head from a folder (PatchTSTForClassification,
PatchTSMixerForRegression, PatchTSTForPrediction, ...), which no Auto class of transformers builds: picked by the
task and the config's model_type from the tables `compression.archive.hf_architectures` reads."""

from __future__ import annotations

from compression.archive.hf_architectures import model_types_by_task
from compression.archive.time_series import TIME_SERIES_TASKS
from compression.auto_by_config import AutoByConfig


class AutoSeriesHead(AutoByConfig):
    """`from_config` / `from_pretrained` as transformers' Auto classes, for the head of `task`."""

    task = ""

    @classmethod
    def auto_class(cls, config):
        import transformers

        return getattr(transformers, model_types_by_task()[cls.task][config.model_type])

    @classmethod
    def from_config(cls, config, **kwargs):
        # (a model class itself builds from a config with `_from_config`, which an Auto class's `from_config` calls)
        return cls.auto_class(config)._from_config(config, **kwargs)


SERIES_HEADS = {task: type(f"AutoSeriesHead_{task.replace('-', '_')}", (AutoSeriesHead,), {"task": task})
                for task in TIME_SERIES_TASKS}
