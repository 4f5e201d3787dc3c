"""Schemewatch: auditing direct-benefit-transfer welfare payments."""

__version__ = "0.1.0"
