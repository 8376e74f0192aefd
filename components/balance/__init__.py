"""Balancing methods for modality imbalance, one module each, behind the hooks in `base`."""
