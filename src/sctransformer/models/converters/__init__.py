"""Converters from published checkpoint layouts to this package's model."""
