"""Data: the lecture's toy generator, normalisation, patch sampling, augmentation, loaders."""
