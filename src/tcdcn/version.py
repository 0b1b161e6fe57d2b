"""The package version, in a module of its own so that any room can read it without importing the package's
front door (``tcdcn/__init__.py``, which reaches up to the inference API)."""

__version__ = "0.1.0"
