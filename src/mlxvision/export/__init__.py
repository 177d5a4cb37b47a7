"""Export: trained models to files that run without mlxvision.

Example:
    >>> from mlxvision.export import export_mlxfn, load_mlxfn
"""

from .mlxfn import export_mlxfn, load_mlxfn, read_mlxfn_metadata

__all__ = ["export_mlxfn", "load_mlxfn", "read_mlxfn_metadata"]
