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
