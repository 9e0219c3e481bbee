"""LM-written explanations of latents and their delphi-style scores (prompts, generator, scoring, store)."""
