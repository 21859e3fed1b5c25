"""The package version, at the bottom so that provenance can record it without importing ltlab itself."""
__version__ = "0.1.0"
