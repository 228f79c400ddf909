"""openvpp.bus layer (see DESIGN.md)."""
