"""segcli: train, run and evaluate 2D/3D medical image segmentation networks.

Importing the package is cheap (no torch); the heavy modules load on demand.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
