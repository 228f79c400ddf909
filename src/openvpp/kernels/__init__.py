"""openvpp.kernels layer (see DESIGN.md)."""
