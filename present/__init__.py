"""Presentation: figures (each computes its data, then draws) and the HTML report, from run records."""
