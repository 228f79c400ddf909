"""openvpp.services layer (see DESIGN.md)."""
