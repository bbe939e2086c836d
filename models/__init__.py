"""Network trunks."""
