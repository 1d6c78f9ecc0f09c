"""Passes over lowered programs and graphs, one a file, each with its own
test on a small program."""
