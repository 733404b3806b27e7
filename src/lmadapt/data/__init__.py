"""Data readers: files and dataset splits -> validated records in the shapes the stages read.

from lmadapt.data import load_split, shape_fields
fields = shape_fields("classify", text=["title", "abstract"], label="label")
train = load_split("pubmed-mesh", "train", fields, limit=1000, seed=0)
load_split(None, "data/test.csv", fields)       # a file path works as a split too
"""

from .check import check_file, summary_lines
from .fields import KINDS, SHAPES, Fields, guess_shape, shape_fields, validate_record, validate_records
from .load import available_splits, load_split, split_file, subset
from .readers import FORMATS, Record, no_records, read_records

__all__ = [
    "FORMATS",
    "Fields",
    "KINDS",
    "SHAPES",
    "Record",
    "available_splits",
    "check_file",
    "guess_shape",
    "load_split",
    "no_records",
    "read_records",
    "shape_fields",
    "split_file",
    "subset",
    "summary_lines",
    "validate_record",
    "validate_records",
]
