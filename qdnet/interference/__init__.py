"""Two-photon interference of quantum-dot photons (HOM), the base of swapping and MDI-QKD."""
