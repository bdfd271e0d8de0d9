"""Text as the ranking features read it: the student's subword tokenizer, a saved student's
tokenizer and piece limits, and a frozen encoder's embedding cache.

Below both the features (:mod:`prectr.data.features`), which turn queries and titles into
pieces or cache rows, and the encoder (:mod:`prectr.encoder`), which trains the tokenizer and
the student and builds the cache; it imports neither (``tests/test_layers.py``).
"""
