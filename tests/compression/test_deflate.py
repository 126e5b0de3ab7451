import zipfile

import torch

from compression.deflate import deflate_zip, deflated_size
from compression.io import export_model, load_model, save_program


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()


def test_programs_are_written_deflated_and_load_with_the_checked_loader_and_with_torch(tmp_path):
    model, inputs = _model(), (torch.randn(3, 32),)
    path = save_program(export_model(model, inputs), tmp_path / "m.pt2")
    with zipfile.ZipFile(path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    assert list(tmp_path.iterdir()) == [path]  # the stored intermediate is gone
    torch.testing.assert_close(load_model(path)(*inputs), model(*inputs))
    torch.testing.assert_close(torch.export.load(path).module()(*inputs), model(*inputs))  # the recipe's loader


def test_deflated_size_is_that_of_the_deflated_copy_and_smaller_than_torchs_stored_archive(tmp_path):
    model, inputs = _model(), (torch.randn(3, 32),)
    stored = tmp_path / "stored.pt2"
    torch.export.save(torch.export.export(model, inputs), stored)
    deflate_zip(stored, tmp_path / "copy.pt2")
    copy_size = (tmp_path / "copy.pt2").stat().st_size
    assert deflated_size(stored) == copy_size < stored.stat().st_size
    assert deflated_size(tmp_path / "copy.pt2") == copy_size  # already deflated: its own size, nothing rewritten
    with zipfile.ZipFile(stored) as a, zipfile.ZipFile(tmp_path / "copy.pt2") as b:
        assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
        assert all(a.read(name) == b.read(name) for name in a.namelist())
