"""An Auto class of our own that picks one of transformers' Auto classes by the folder's config, where a task's
models are built by more than one of them (`compression.causal_lm_class`, `compression.segmenter_class`)."""

from __future__ import annotations


class AutoByConfig:
    """`from_config` / `from_pretrained` as transformers' Auto classes, through the one `auto_class` picks."""

    @staticmethod
    def auto_class(config):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls.auto_class(config).from_config(config, **kwargs)

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        from transformers import AutoConfig

        local = {key: kwargs[key] for key in ("local_files_only", "trust_remote_code") if key in kwargs}
        return cls.auto_class(AutoConfig.from_pretrained(folder, **local)).from_pretrained(folder, **kwargs)
