"""Offline data: the standard-library corpus, its tokenizer, text sources, token streams and windows."""
