"""Loss terms beyond the click cross-entropy, one per file."""
