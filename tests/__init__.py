"""aidnode tests."""
