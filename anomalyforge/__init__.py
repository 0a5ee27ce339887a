"""anomalyforge: synthetic anomaly data for visual inspection."""

from synth.common.version import __version__

__all__ = ["__version__"]
