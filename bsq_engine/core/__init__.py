"""The method itself: bit-plane numerics, BSQ and fixed-precision layers, the prepare verbs,
the bit-level group Lasso and weight packing. Torch only: no I/O, no store, no threads."""
