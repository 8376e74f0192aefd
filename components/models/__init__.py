"""Encoders, fusions and the multimodal classifier with its structured output."""
