"""Text encoders for relevance: LLM teachers, their adaptation and labels, the distilled
student and its tokenizer."""
