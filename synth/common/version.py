"""The installed version, written into manifests, checkpoints and dataset cards (read from the package
metadata, so that pyproject.toml is its one source)."""

from importlib import metadata

try:
    __version__ = metadata.version("anomalyforge")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
