"""The embedded default: a corpus, tokenizer, tiny Qwen3 LM, SAE and latent index the project builds itself."""
