"""Runs into the paper's tables, plots, claims and results page; two methods compared."""
