"""Benchmarks that print figures: run each as a module from the project root, e.g.
``python -m benchmarks.detection``. They read the real defect datasets beside the project
(``../shared/data``, see :mod:`benchmarks.shared_data`) unless given other folders."""
