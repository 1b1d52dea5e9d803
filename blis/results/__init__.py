"""Turning a finished run's raw samples into the reported metrics, and printing them like the Go
original does."""
