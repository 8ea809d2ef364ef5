"""Fused integer time loops of quantized LSTM/GRU cells (above the wrappers whose codes and tables they read)."""
