"""openvpp.web layer (see DESIGN.md)."""
