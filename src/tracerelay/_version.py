"""The package version, read by the build backend and reported in the resource."""

__version__ = "0.1.0"
