import torch

from compression.context import RunContext
from compression.distill.features import capture_features, resolve_node
from compression.distill.kd import apply_kd
from compression.modes import train_mode, eval_mode
from compression.specs.distill import KDSpec
from compression.specs.training import TrainingSpec
from tests.compression.distill.conftest import image_task


def test_module_paths_and_node_names_capture_the_same_values_as_eager(conv_net):
    model, program, _ = conv_net
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        after_bn = model.bn(model.conv(x))
        after_relu = torch.relu(after_bn)
    code_before = program.code
    assert resolve_node(program, "bn").target == torch.ops.aten.batch_norm.default
    with capture_features(program, ["bn", "relu"]) as captured, torch.no_grad():
        program(x)
        torch.testing.assert_close(captured["bn"], after_bn)
        torch.testing.assert_close(captured["relu"], after_relu)
    assert program.code == code_before  # the taps are gone
    with capture_features(model, ["bn"]) as captured, torch.no_grad():
        model(x)
    torch.testing.assert_close(captured["bn"], after_bn)


def test_taps_survive_the_switch_to_training_mode(conv_net):
    _, program, _ = conv_net
    x = torch.randn(6, 3, 8, 8)
    with capture_features(program, ["bn"]) as captured:
        train_mode(program)
        program(x)
        eval_mode(program)
    # In training mode batch norm normalises with the batch's own statistics: per-channel mean ~ bias.
    torch.testing.assert_close(captured["bn"].mean((0, 2, 3)), program.bn.bias.detach(), atol=1e-4, rtol=0)


def test_feature_distillation_with_a_learned_projection_lowers_the_loss(tmp_path, conv_net):
    _, program, _ = conv_net
    task = image_task(tmp_path, program)
    # small_cnn's layer "0" is its first conv: 16 channels at 8x8 against the teacher conv's 24 at 4x4.
    spec = KDSpec(student={"kind": "zoo", "architecture": "small_cnn", "width": 1.0},
                  features=[{"student": "0", "teacher": "conv", "weight": 1.0}],
                  training=TrainingSpec(steps=40, batch_size=32, lr=1e-2))
    result = apply_kd(spec, program, task, RunContext())
    errors = result.metrics["feature_mse"]
    assert errors["after"]["0->conv"] < 0.7 * errors["before"]["0->conv"]
    assert result.metrics["student"]["top1_agreement"] > 0.3  # 10 classes: chance is about 0.1
    assert "_distill_tap_0" not in dict(program.named_modules())
