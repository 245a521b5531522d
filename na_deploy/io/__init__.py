"""Files of the IR: `save_net` / `load_net` for `*.nad.h5` (flat, versioned HDF5; see `nad_h5`).

Kept beside the IR, not inside it: `na_deploy.ir` never imports its file format.
"""
from na_deploy.io.nad_h5 import FORMAT_NAME, FORMAT_VERSION, h5_dataset, h5_group, load_intnet, load_net, save_net

__all__ = ["save_net", "load_net", "load_intnet", "h5_group", "h5_dataset", "FORMAT_NAME", "FORMAT_VERSION"]
