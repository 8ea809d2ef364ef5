"""Integer execution below the wrappers: exact int8 products, their backends and dispatch, the C kernels."""
