"""Preparing data: converters from public datasets' layouts, and the synthetic CT/MRI phantoms."""
