"""openvpp.api layer (see DESIGN.md)."""
