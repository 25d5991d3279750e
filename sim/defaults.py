"""Defaults the command line shares with the libraries, importable without numpy."""

DEFAULT_DRAWS = 200  # parameter draws behind every data interval; 0 = simulation noise only
