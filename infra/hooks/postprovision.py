"""azd postprovision hook: the first tenant registry, and the one role its upload needs.

azd runs it after `azd provision` / `azd up` with the environment's values (the Bicep outputs)
as environment variables, in a virtual environment made from `infra/hooks/requirements.txt`.
What it does and why: shared/admin/bootstrap.py. Run by hand the same way:
`azd env get-values > .azure/env && set -a && . .azure/env && set +a &&
python infra/hooks/postprovision.py`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: shared/

from shared.admin.bootstrap import main

sys.exit(main())
