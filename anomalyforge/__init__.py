"""anomalyforge: synthetic anomaly data for visual inspection."""

from synth.version import __version__

__all__ = ["__version__"]
