"""Reporting components: comparisons across steps."""
