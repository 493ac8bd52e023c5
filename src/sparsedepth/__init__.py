"""sparsedepth: reproduce "When Does Sparsity Mitigate the Curse of Depth in LLMs" (ICML 2026)."""
__version__ = "0.1.0"
