"""QKD protocols: expected statistics (analytic) and raw records (Monte Carlo)."""
