"""The ingestion pipeline (see pipeline.py)."""
