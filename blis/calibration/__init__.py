"""Fitting the latency model's coefficients to a user's own measurements (``blis calibrate``)."""
