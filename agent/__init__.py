"""Landlord: agent."""
