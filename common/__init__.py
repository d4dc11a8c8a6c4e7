"""Landlord: common."""
