import torch

from compression.distill.augment import augmented_view, make_generator, mixup, random_crop, random_flip
from compression.specs.distill import AugmentSpec


def test_crop_is_a_window_of_the_zero_padded_image():
    images = torch.randn(6, 2, 5, 7)
    cropped = random_crop(images, padding=2, generator=make_generator(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for image, crop in zip(padded, cropped):
        windows = [image[:, top:top + 5, left:left + 7] for top in range(5) for left in range(5)]
        assert any(torch.equal(crop, window) for window in windows)
    assert not torch.equal(cropped, images)  # 6 examples all drawing the centre has probability 25^-6
    assert torch.equal(random_crop(images, padding=0, generator=make_generator(0)), images)


def test_flip_mirrors_some_examples_and_keeps_the_others():
    images = torch.randn(32, 1, 4, 4)
    flipped = random_flip(images, make_generator(1))
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images)]
    kept = [torch.equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 4 < sum(mirrored) < 28


def test_mixup_blends_float_inputs_with_one_ratio_and_leaves_token_ids_alone():
    features = torch.randn(8, 3)
    other = torch.randn(8, 5)
    token_ids = torch.randint(0, 100, (8, 4))
    mixed_features, mixed_other, ids = mixup((features, other, token_ids), alpha=1.0, generator=make_generator(2))
    assert torch.equal(ids, token_ids)
    ratio = ((mixed_features - features.roll(1, 0)) / (features - features.roll(1, 0))).flatten()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-4)
    torch.testing.assert_close(mixed_other, ratio[0] * other + (1 - ratio[0]) * other.roll(1, 0))


def test_view_depends_only_on_the_seed_and_image_inputs_share_crops():
    image = torch.randn(16, 1, 8, 8)
    spec = AugmentSpec(crop_padding=3, flip=True, mixup_alpha=0.0)
    first, second = augmented_view((image, image.clone()), spec, make_generator(5))
    assert torch.equal(first, second)  # both image inputs of an example got the same crop and flip
    again, _ = augmented_view((image, image), spec, make_generator(5))
    assert torch.equal(first, again)
