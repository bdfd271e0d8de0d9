"""The text encoder of PRECTR-V2: teachers, the distilled student and its tokenizer."""
