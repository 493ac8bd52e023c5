"""Data pipeline: corpus loading, tokenizers, cached uint16 token shards and deterministic batches.

    from sparsedepth.data import load_documents, prepare_data, TokenData, get_batch, val_windows, DataError
"""
from .corpus import DataError, load_documents, split_documents
from .shards import TokenData, at_root, cache_key, get_batch, prepare_data, val_windows
from .tokenizer import EOS_TOKEN, get_tokenizer, train_bpe

__all__ = ["DataError", "load_documents", "split_documents", "TokenData", "at_root", "cache_key", "get_batch",
           "prepare_data", "val_windows", "EOS_TOKEN", "get_tokenizer", "train_bpe"]
