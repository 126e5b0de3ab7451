"""Every hostile input is refused by the library's own loaders (and by the torch-free inspectors the API uses)
with a message naming the offending entry, and no payload ever runs."""

import io

import pytest
import torch

from compression.archive import InvalidUpload
from compression.data import Dataset
from compression.inspect import inspect_npz, inspect_pt2
from compression.io import load_program
from tests.hostile.conftest import SMALL_LIMITS
from tests.hostile.corpus import attacks

ATTACKS = attacks()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_loader_refuses_and_names_the_entry(attack, clean_files, marker, tmp_path):
    path = tmp_path / ("upload.pt2" if attack.kind == "model" else "upload.npz")
    path.write_bytes(attack.build(clean_files[attack.kind], marker))
    with pytest.raises(InvalidUpload) as refused:
        if attack.kind == "model":
            load_program(path, SMALL_LIMITS)
        else:
            Dataset.load(path, ["x"], limits=SMALL_LIMITS)
    assert attack.entry in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_the_inspectors_refuse_and_name_the_entry(attack, clean_files, marker):
    data = attack.build(clean_files[attack.kind], marker)
    with pytest.raises(InvalidUpload) as refused:
        (inspect_pt2 if attack.kind == "model" else inspect_npz)(io.BytesIO(data), SMALL_LIMITS)
    assert attack.entry in str(refused.value)
    assert not marker.exists()


def test_the_clean_files_pass_the_same_checks(clean_files, tmp_path):
    model, dataset = tmp_path / "model.pt2", tmp_path / "data.npz"
    model.write_bytes(clean_files["model"])
    dataset.write_bytes(clean_files["dataset"])
    signature = inspect_pt2(model, SMALL_LIMITS)
    assert signature.inputs[0].shape == [None, 1, 8, 8] and signature.layers == ["1", "3"]
    assert inspect_npz(dataset, SMALL_LIMITS).label_range == {"train": [0, 2], "val": [0, 2]}
    loaded = load_program(model, SMALL_LIMITS)
    reference = torch.export.load(model)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(loaded.module()(x), reference.module()(x), rtol=0, atol=0)
    data = Dataset.load(dataset, ["x"], limits=SMALL_LIMITS)
    assert len(data.split("train")) == 12 and data.num_classes == 3


@pytest.mark.parametrize("name", ["sample inputs pickle", "opaque_obj constant", "sympy expression"])
def test_the_payloads_are_live_under_torch_export_load(name, clean_files, marker, tmp_path):
    """Control: torch's own loader runs these payloads, so the refusals above are what keeps them from running."""
    attack = next(a for a in ATTACKS if a.name == name)
    path = tmp_path / "upload.pt2"
    path.write_bytes(attack.build(clean_files["model"], marker))
    try:
        torch.export.load(path)
    except Exception:  # torch fails after the payload has run; only the marker matters here
        pass
    assert marker.read_text() == "payload ran"
