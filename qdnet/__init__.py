"""qdnet: reference software for quantum networks built on quantum-dot photon sources.

Layers (a lower layer never imports a higher one):
sources/optics -> protocols/attacks -> security -> postprocessing/transport -> kms -> cli.
"""

__version__ = "0.1.0"
