"""Tenant proof, safe ids and blob paths, content safety (issue 12)."""
