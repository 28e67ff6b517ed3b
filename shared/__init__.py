"""The system's logic: knows nothing of azure.functions nor devhost."""
