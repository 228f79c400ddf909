"""openvpp.store layer (see DESIGN.md)."""
