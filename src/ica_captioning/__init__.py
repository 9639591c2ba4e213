"""ICA captioning: Show-Attend-Tell with an object-detection attention loss."""

__version__ = "0.1.0"
