import pytest
import torch

from compression import zoo
from compression.io import export_model

CASES = [
    ("mlp", {"input_shape": (1, 8, 8), "hidden": (16,)}, (1, 8, 8), torch.float32),
    ("small_cnn", {"image_size": 8, "width": 4}, (1, 8, 8), torch.float32),
    ("small_cnn", {"in_channels": 3, "image_size": 32, "width": 4}, (3, 32, 32), torch.float32),
    ("resnet", {"width_mult": 0.25, "depth_mult": 0.5}, (1, 28, 28), torch.float32),
    ("resnet", {"in_channels": 3, "width_mult": 0.25, "depth_mult": 0.5}, (3, 32, 32), torch.float32),
    ("tiny_transformer", {"vocab_size": 50, "max_length": 12, "dim": 16, "heads": 2, "layers": 1}, (12,),
     torch.int64),
]


@pytest.mark.parametrize("name,kwargs,shape,dtype", CASES)
def test_architectures_export_with_dynamic_batch_and_match_eager(name, kwargs, shape, dtype):
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=5, **kwargs)
    make = (lambda n: torch.randint(0, 50, (n, *shape))) if dtype == torch.int64 else \
        (lambda n: torch.randn(n, *shape))
    exported = export_model(model, (make(2),)).module()
    for batch in (1, 3):
        x = make(batch)
        with torch.no_grad():
            expected = model(x)
        assert expected.shape == (batch, 5)
        torch.testing.assert_close(exported(x), expected)


def test_multipliers_scale_the_resnet_and_unknown_names_are_refused():
    small = sum(p.numel() for p in zoo.build("resnet", width_mult=0.5).parameters())
    large = sum(p.numel() for p in zoo.build("resnet", width_mult=1.0, depth_mult=2.0).parameters())
    assert large > 4 * small
    with pytest.raises(ValueError, match="small_cnn"):
        zoo.build("vgg")
