"""Offline data preparation, written beside the raw data and never into it: the demo dataset, background removal."""
