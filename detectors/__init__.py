"""Detectors trained on synthetic anomalies (see the detectors issue)."""
