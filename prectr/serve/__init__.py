"""Serving a trained run: the in-process ranker, its history store, the HTTP service, export."""
