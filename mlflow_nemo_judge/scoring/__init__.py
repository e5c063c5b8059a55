"""Scoring one sample: templating, judge-output parsing, built-in metrics, judge calls, statistics."""
