"""Helpers every layer shares (file I/O, locks, devices, PCA): they import nothing of the project,
so `features/`, `models/` and `pipeline/` can all use them and imports still run one way."""
