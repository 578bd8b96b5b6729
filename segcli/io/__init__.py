"""File I/O: images (SimpleITK), dataset discovery (MSD layout) and checkpoints."""
