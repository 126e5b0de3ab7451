import torch

from compression import zoo
from compression.inspect import inspect_pt2
from compression.io import export_model, input_dtypes, input_names, inputs_at_batch, load_model, save_program
from compression.modes import is_training


def test_round_trip_keeps_outputs_names_and_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = zoo.build("small_cnn", image_size=8, width=4)
    program = export_model(model, (torch.randn(1, 1, 8, 8),))  # a batch of one must not pin the batch size
    path = save_program(program, tmp_path / "m.pt2")
    loaded = load_model(path)
    assert not is_training(loaded)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert input_names(program) == ["input"] and input_dtypes(program) == {"input": torch.float32}
    signature = inspect_pt2(path)  # the torch-free reader the API uses agrees
    assert [t.name for t in signature.inputs] == ["input"] and signature.inputs[0].shape == [None, 1, 8, 8]


def test_re_exporting_an_exported_module_keeps_the_dynamic_batch():
    exported = export_model(zoo.build("mlp", input_shape=4, hidden=(8,)), (torch.randn(3, 4),)).module()
    again = export_model(exported, (torch.randn(3, 4),)).module()
    assert again(torch.randn(7, 4)).shape == (7, 10)


def test_inputs_at_batch_tiles_and_cuts():
    x = torch.arange(3).reshape(3, 1)
    assert inputs_at_batch((x,), 7)[0].flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert inputs_at_batch((x,), 2)[0].flatten().tolist() == [0, 1]
