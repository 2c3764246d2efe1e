"""Secret-key length: entropy, asymptotic and finite-key bounds, PLOB."""
