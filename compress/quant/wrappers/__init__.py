"""Module wrappers that simulate quantized inference exactly (and run it on integer kernels when exact)."""
