"""Files of the IR: `save_net` / `load_net` for `*.nad.h5`, NIR in and out, provenance records (contract C8).

Modules:
  nad_h5       `*.nad.h5`: flat, versioned, byte-deterministic HDF5 (`save_net`, `load_net`, `load_intnet`)
  nir_io       NIR graphs in and out (`to_nir`, `write_nir`, `from_nir`, `load_nir`; `nir` 1.0.8)
  nir_foreign  a NIR graph another framework wrote -> FloatNet in mode zero (used by `nir_io.from_nir`)
  made_from    the provenance records: file hashes and `made_from` entries (a leaf module)

Kept beside the IR, not inside it: `na_deploy.ir` never imports its file formats. The NIR functions load on first
use (`__getattr__`): the `nir` package stays out of `import na_deploy.io` (and of `na-deploy convert --help`).
"""
from na_deploy.io.made_from import made_from, sha256_file
from na_deploy.io.nad_h5 import FORMAT_NAME, FORMAT_VERSION, h5_dataset, h5_group, load_intnet, load_net, save_net

NIR_FUNCTIONS = ("to_nir", "write_nir", "from_nir", "load_nir")

__all__ = ["save_net", "load_net", "load_intnet", "h5_group", "h5_dataset", "FORMAT_NAME", "FORMAT_VERSION",
           "made_from", "sha256_file", *NIR_FUNCTIONS]


def __getattr__(name: str):
    """The NIR functions of `na_deploy.io.nir_io`, imported when first asked for (PEP 562)."""
    if name in NIR_FUNCTIONS:
        from na_deploy.io import nir_io

        return getattr(nir_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
