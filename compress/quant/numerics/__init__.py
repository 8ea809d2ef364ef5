"""Pure quantization math: range-linear primitives and clip modes (tensors in, tensors out, no state)."""
