"""The tenant and deployment registry, where it is read from, and routing over it."""
