"""The package's version, in a room of its own so the command line need not import the root."""

__version__ = "0.1.0"
