import io
from pathlib import Path

import numpy as np
import pytest

from compression.archive import ArchiveLimits
from tests.hostile.corpus import MiB

# Caps well below the bombs' 64 MiB, so every bomb trips them in a fraction of a second; the rules are the same
# at the default caps (bench/hostile_uploads.py sends real-size bombs to a service with its defaults).
SMALL_LIMITS = ArchiveLimits(max_member_bytes=16 * MiB, max_total_bytes=32 * MiB, max_metadata_bytes=8 * MiB)


@pytest.fixture(scope="session")
def clean_files(tmp_path_factory) -> dict[str, bytes]:
    """A small exported MLP with a dynamic batch dimension, and a dataset it accepts."""
    import torch

    from compression import zoo
    from compression.io import export_model, save_program

    directory = tmp_path_factory.mktemp("clean")
    torch.manual_seed(0)
    model = zoo.build("mlp", input_shape=(1, 8, 8), num_classes=3, hidden=(16,))
    path = save_program(export_model(model, (torch.randn(4, 1, 8, 8),)), directory / "model.pt2")
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, **{"train.x": rng.standard_normal((12, 1, 8, 8)).astype(np.float32),
                        "train.y": np.arange(12) % 3, "val.x": rng.standard_normal((6, 1, 8, 8)).astype(np.float32),
                        "val.y": np.arange(6) % 3})
    return {"model": path.read_bytes(), "dataset": buffer.getvalue()}


@pytest.fixture
def marker(tmp_path) -> Path:
    """Where a payload would write if it ever ran."""
    return tmp_path / "payload-ran"
