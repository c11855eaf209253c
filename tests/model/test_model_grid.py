import numpy as np

from bids_harmonize.model.slices import model_image_size


def test_model_image_size_holds_the_brain_with_a_margin_and_is_a_multiple_of_16():
    mask = np.zeros((96, 114, 96), bool)
    mask[13:83, 10:104, 20:70] = True  # x extent 70 around centre 47.5, y extent 94 around 56.5
    size = model_image_size(mask)
    assert size % 16 == 0
    assert size >= 94 + 8 and size - 16 < 94 + 8
    off_centre = np.zeros((96, 114, 96), bool)
    off_centre[0:20, 0:20, :] = True  # a corner: needs the full width around the centre
    assert model_image_size(off_centre) >= 114
