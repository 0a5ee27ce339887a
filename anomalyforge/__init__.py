"""anomalyforge: synthetic anomaly data for visual inspection."""

__version__ = "0.1.0"
