"""Pipeline families: the denoising loops that call Triton, one module per family."""
