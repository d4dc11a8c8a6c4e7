"""Landlord: coordinator."""
