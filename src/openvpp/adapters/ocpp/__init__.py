"""OCPP 1.6J / 2.0.1 central system (``csms``)."""
