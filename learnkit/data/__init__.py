"""Data: blocks, splitters, DataBlock → DataBunch. Knows nothing of images or tokens."""
from learnkit.data.blocks import (CategoryBlock, MultiCategoryBlock, RegressionBlock, TensorBlock,
                                  TransformBlock, block_from_config, register_block)
from learnkit.data.bunch import DataBunch
from learnkit.data.datablock import DataBlock
from learnkit.data.idx import read_idx
from learnkit.data.pipeline import PipelineError
from learnkit.data.splitters import ColumnSplitter, FolderSplitter, FuncSplitter, IndexSplitter, RandomSplitter
from learnkit.data.transforms import Normalize, register_transform, transform_from_config

__all__ = [
    "CategoryBlock", "ColumnSplitter", "DataBlock", "DataBunch", "FolderSplitter", "FuncSplitter",
    "IndexSplitter", "MultiCategoryBlock", "Normalize", "PipelineError", "RandomSplitter", "RegressionBlock",
    "TensorBlock", "TransformBlock", "block_from_config", "read_idx", "register_block", "register_transform",
    "transform_from_config",
]
