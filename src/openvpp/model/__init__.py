"""openvpp.model layer (see DESIGN.md)."""
