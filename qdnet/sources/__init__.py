"""Photon sources described by the figures experimentalists measure."""
