"""Photon-level Monte Carlo of QKD links (issue 3): engines, time tags, analysis."""
