"""Text encoders for relevance: LLM teachers, their adaptation and labels, and the student."""
