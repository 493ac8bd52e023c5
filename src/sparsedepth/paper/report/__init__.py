"""Figures, tables and the functions the notebooks call to show them."""
