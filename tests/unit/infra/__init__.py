"""Offline checks of the Bicep in infra/ (no Bicep CLI, no Azure subscription)."""
