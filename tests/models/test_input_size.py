"""Issue 9 point 5: a model that cannot take the crops fails before the run, naming the size it needs."""

import pytest

from sotakit.models import InputSizeError, check_input_size


def test_vit_at_28_px_names_224_and_where_to_look():
    with pytest.raises(InputSizeError) as e:
        check_input_size("vit_b_16", (28, 28), num_classes=10, small_input=True, data="fashion-mnist")
    assert str(e.value) == ("vit_b_16 needs 224x224 inputs, not 28x28 (AssertionError: Wrong image height! "
                            "Expected 224 but got 28!); choose a model that runs at 28 px: `sotakit models "
                            "--data fashion-mnist` lists them")


def test_larger_images_get_the_crop_flags():
    want = (r"inception_v3 needs inputs of at least 75x75, not 32x32 .*; pass --train-crop-size 75 "
            r"--val-crop-size 75 --val-resize-size 75$")
    with pytest.raises(InputSizeError, match=want):
        check_input_size("inception_v3", (32, 32), num_classes=10)


def test_a_model_that_runs_passes():
    check_input_size("resnet9_w16", (28, 28, 0), num_classes=3, small_input=True)
