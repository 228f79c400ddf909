"""openvpp.sim layer (see DESIGN.md)."""
