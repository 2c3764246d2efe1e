"""Post-processing: sifting, estimation, reconciliation, verification, amplification."""
