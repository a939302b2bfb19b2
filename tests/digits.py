"""Real labeled images for tests: scikit-learn's digits and small models trained on them (see data.digits)."""
from data.digits import (DIGIT_CLASSES, IMAGE_SIZE, INPUT_SIZE, digit_to_image, load_digits_arrays,  # noqa: F401
                         make_digits_split, save_state_dict, split_indices, train_digits_model, write_imagefolder)
