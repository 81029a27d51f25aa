"""The package version, read by setup.py and exported by the package."""

__version__ = "0.2.0"
