"""TFDS builder for SIRST-style infrared small target datasets (see sirst_dataset_builder.py)."""
from tfds_sirst.sirst_dataset_builder import Builder, DataError, SirstConfig, read_split_ids

__all__ = ["Builder", "DataError", "SirstConfig", "read_split_ids"]
