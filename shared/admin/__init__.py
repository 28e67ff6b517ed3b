"""Operator commands: onboard and offboard tenants (`python -m shared.admin tenants ...`).

One operation per tenant change, the same against Azure and against devhost:
- `tenants.py`  the registry document's changes (pure; applied through `RegistryStore.update`),
- `queues.py`   the tenant's reply queue (`ServiceBusAdministrationClient`),
- `grants.py`   the tenant app's role assignments on its queues (Azure Resource Manager),
- `connect.py`  where those live, from the app's own settings or an env file,
- `cli.py`      the command line.

Nothing here runs inside the Function app; it imports no `azure.functions` and no `devhost`.
"""
