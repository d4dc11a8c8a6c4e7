"""Landlord: coordinator/cli."""
