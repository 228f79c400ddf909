"""openvpp.adapters layer (see DESIGN.md)."""
