"""openvpp.cli layer (see DESIGN.md)."""
