"""Data (contract C4): images as raw uint8 pixels with their labels, the per-channel normalisation, seeded batches.

Modules:
  arrays        the embedded digits and user .npz files (`Dataset`); `load_dataset` for any `--data` value
  image_folder  image-folder data sets, streamed from disk (`FolderDataset`, `load_folder`)
  loaders       seeded batch iterators for training and evaluation (`make_loaders` -> `Loaders`)
  transforms    training augmentations and evaluation views of uint8 images (`AUGMENTATIONS`)
  checks        what both sources share: the C4 normalisation (`Normalization`) and the label checks

Start with `load_dataset(path, seed)` (None: the embedded digits; a folder: an image folder; a file: an .npz),
then `make_loaders(dataset, batch_size, seed)`.
"""
from na_deploy.data.arrays import Dataset, load_dataset, load_digits_dataset, load_npz
from na_deploy.data.checks import Normalization
from na_deploy.data.image_folder import FolderDataset, load_folder
from na_deploy.data.loaders import Loaders, eval_inputs, first_test_images, make_loaders, test_batches
from na_deploy.data.transforms import AUGMENTATIONS, check_augment

__all__ = ["load_dataset", "load_digits_dataset", "load_npz", "Dataset", "FolderDataset", "load_folder",
           "Normalization", "make_loaders", "Loaders", "test_batches", "first_test_images", "eval_inputs",
           "AUGMENTATIONS", "check_augment"]
