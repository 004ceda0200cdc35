"""perkflow: benefit operations and precision marketing for telecom operators."""

__version__ = "0.1.0"
