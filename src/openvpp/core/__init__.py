"""openvpp.core layer (see DESIGN.md)."""
