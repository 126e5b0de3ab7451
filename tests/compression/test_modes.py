import torch
from torch import nn

from compression.modes import eval_mode, evaluating, is_training, train_mode


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)).eval()


def _exported():
    x = torch.randn(4, 4)
    return torch.export.export(_model(), (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()


def test_exported_module_switches_dropout_and_batch_norm():
    model = _exported()
    x = torch.randn(16, 4)
    assert not is_training(model) and torch.equal(model(x), model(x))
    train_mode(model)
    assert is_training(model) and not torch.equal(model(x), model(x))  # dropout active
    running_mean = next(b for name, b in model.named_buffers() if "running_mean" in name)
    assert running_mean.abs().sum() > 0  # batch norm updated its statistics
    eval_mode(model)
    assert not is_training(model) and torch.equal(model(x), model(x))


def test_evaluating_restores_training_mode_for_plain_and_exported_modules():
    for model in (_model(), _exported()):
        train_mode(model)
        with evaluating(model):
            assert not is_training(model) and not torch.is_grad_enabled()
        assert is_training(model)


def _frozen_statistics_model():
    """torchcrepe's convention: batch norms with momentum 0, whose running statistics no batch updates."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, momentum=0.0), nn.Linear(8, 8), nn.BatchNorm1d(8))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model.eval()



def test_a_batch_norm_with_momentum_0_trains_as_the_affine_map_inference_computes():
    plain = _frozen_statistics_model()
    exported = torch.export.export(_frozen_statistics_model(), (torch.randn(4, 4),),
                                   dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    x = torch.randn(16, 4) * 3 + 1
    with torch.no_grad():
        inference_hidden = plain[:2](x)
    train_mode(plain)
    assert plain[3].training and not plain[1].training
    train_mode(exported)
    flags = [node.args[5] for node in exported.graph.nodes if node.target is torch.ops.aten.batch_norm.default]
    assert flags == [False, True]
    frozen_before = exported.get_buffer("1.running_mean").clone()
    with torch.no_grad():
        torch.testing.assert_close(plain[:2](x), inference_hidden)
        # The exported module computes what the plain one does: the first norm inference's affine map, the second
        # batch statistics (and both update the second norm's running statistics alike).
        torch.testing.assert_close(exported(x), plain(x))
    torch.testing.assert_close(exported.get_buffer("1.running_mean"), frozen_before)
    torch.testing.assert_close(exported.get_buffer("3.running_mean"), plain[3].running_mean)
    assert plain[3].running_mean.abs().sum() > 0


def test_a_program_decomposed_to_core_aten_switches_mode_in_place_and_keeps_frozen_statistics_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.BatchNorm1d(8, momentum=0.0)).eval()
    exported = torch.export.export(model, (torch.randn(4, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    program = exported.run_decompositions().module()

    def norms():
        return [str(n.target).split(".")[1] for n in program.graph.nodes if "batch_norm" in str(n.target)]

    assert norms() == ["_native_batch_norm_legit_no_training"] * 2
    x = torch.randn(16, 4) * 3 + 1
    code = program.code
    train_mode(model)
    train_mode(program)
    # No re-trace (torchao's fallback): the same graph with the first norm's op swapped for its training form.
    assert norms() == ["_native_batch_norm_legit", "_native_batch_norm_legit_no_training"]
    assert is_training(program) and program.code != code
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x))
    torch.testing.assert_close(program.get_buffer("1.running_mean"), model[1].running_mean)
    eval_mode(program)
    eval_mode(model)
    assert norms() == ["_native_batch_norm_legit_no_training"] * 2
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x))


def test_in_place_dropout_switches_in_place_and_batch_norms_keep_their_eps_and_momentum():
    # transformers' MobileNetV2: in-place dropout sent the graph to torchao's re-tracing, which rebuilt its batch
    # norms (eps 0.001, momentum 0.997) with the defaults, and every stage computed another function.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3, momentum=0.997), nn.Flatten(),
                          nn.Dropout(0.5, inplace=True), nn.Linear(4 * 6 * 6, 2)).eval()
    x = torch.randn(8, 3, 8, 8)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    with torch.no_grad():
        train_mode(exported)
        assert not torch.equal(exported(x), exported(x))  # dropout active
        eval_mode(exported)
        assert not is_training(exported) and torch.equal(exported(x), exported(x))
    norms = [node for node in exported.graph.nodes if "batch_norm" in str(node.target)]
    assert norms and all(0.001 in node.args and 0.997 in node.args for node in norms)


class WeightStandardizedConv(nn.Conv2d):
    """BiT's convolution: its weight normalised by its own statistics through a batch norm without running ones."""

    def forward(self, x):
        weight = nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                                          momentum=0.0, eps=1e-8).reshape_as(self.weight)
        return nn.functional.conv2d(x, weight, self.bias, padding=1)


def test_a_batch_norm_without_running_statistics_normalises_by_its_input_in_both_modes():
    """Switched to eval mode as a batch norm with statistics is, aten refused it ("running_mean must be defined in
    evaluation mode"), and every job on a BiT model failed before its baseline."""
    torch.manual_seed(0)
    model = nn.Sequential(WeightStandardizedConv(3, 4, 3), nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    exported = torch.export.export(model, (x,)).module()
    for switch in (eval_mode, train_mode, eval_mode):
        switch(exported)
        if switch is eval_mode:
            torch.testing.assert_close(exported(x), expected)
    batch_norms = [node for node in exported.graph.nodes if node.target is torch.ops.aten.batch_norm.default]
    assert [node.args[5] for node in batch_norms] == [True, False]  # the standardization, the real batch norm
