"""prectr: relevance-aware CTR ranking for search (PRECTR and PRECTR-V2)."""

__version__ = "0.3.0"
