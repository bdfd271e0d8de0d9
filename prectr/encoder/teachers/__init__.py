"""Relevance teachers: an LLM, a sentence encoder or any local model, adapted and labelling."""
