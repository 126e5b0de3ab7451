import io
import pickle
import pickletools

import pytest
import torch

from compression.archive import ArchiveLimits, InvalidUpload
from compression.archive.sample_inputs import check_sample_inputs
from compression.archive.zipread import BoundedZip
from tests.hostile.corpus import read_zip, write_zip


def _saved(value, protocol=2) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer, pickle_protocol=protocol)
    return buffer.getvalue()


def _check(data: bytes) -> None:
    check_sample_inputs(BoundedZip(io.BytesIO(data), ArchiveLimits(), "s"), "s", 1 << 20)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_tensors_in_tuples_and_dicts_pass_at_any_protocol(protocol):
    x = torch.randn(2, 3)
    _check(_saved(((x, x[:1], torch.arange(4)), {"mask": torch.ones(2, dtype=torch.bool), "scale": 2}), protocol))


@pytest.mark.parametrize("value, reason", [
    (((torch.zeros(1),), {"x=1": torch.zeros(1)}), "not a Python identifier"),
    (((torch.nn.Parameter(torch.zeros(1)),), {}), "_rebuild_parameter"),
    (((torch.zeros(1), "text"), {}), "str"),
    (([torch.zeros(1)], {}), "args tuple, kwargs dict"),
])
def test_anything_but_tensors_and_numbers_is_refused(value, reason):
    with pytest.raises(InvalidUpload, match=reason):
        _check(_saved(value))


def test_a_storage_entry_of_the_wrong_size_is_refused():
    members = read_zip(_saved(((torch.zeros(4),), {})))
    storage = next(name for name in members if "/data/" in name and not name.endswith("data.pkl"))
    members[storage] = members[storage][:8]
    with pytest.raises(InvalidUpload, match="holds 8 bytes; its storage needs 16"):
        _check(write_zip(members))


def test_globals_outside_the_allowlist_are_refused_whatever_opcode_names_them():
    for protocol in (2, 4):
        members = read_zip(_saved(((torch.zeros(1),), {})))
        pkl = next(name for name in members if name.endswith("data.pkl"))
        members[pkl] = pickle.dumps(((print,), {}), protocol=protocol)
        opcodes = {op.name for op, _, _ in pickletools.genops(members[pkl])}
        assert ("GLOBAL" if protocol == 2 else "STACK_GLOBAL") in opcodes
        with pytest.raises(InvalidUpload, match="print"):
            _check(write_zip(members))
