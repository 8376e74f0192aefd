"""Tasks: training and evaluation components."""
