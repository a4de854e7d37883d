"""Small shared helpers (hashing)."""
