"""Latent Lab: sparse-autoencoder interpretability on TransformerLens models.

All the logic of the app and the offline scripts lives here. Nothing in this package imports
streamlit: the Streamlit glue lives in ``lab_ui.py`` at the repository root.
"""
