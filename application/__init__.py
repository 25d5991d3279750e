"""The application layer: one module per verb. It alone writes run directories, manifests and files, opens
progress bars and prints; the libraries below (calibration/, sim/) compute and return records."""
