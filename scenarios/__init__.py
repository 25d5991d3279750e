"""Bundled data: the demo log and model, example scenarios, mappings of public logs."""
