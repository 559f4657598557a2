# Shared helpers: config validation (before any job starts), paths and target lists.
import sys
from pathlib import Path

# The package is imported from this checkout so that planning works even before `pip install -e .`.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

try:
    from iobs.config import validate_config
    from iobs.errors import ConfigError
except ImportError as err:
    sys.exit(f"iobs cannot be imported ({err}): run `make setup` or `pip install -e .` first")

try:
    validate_config(config)
except ConfigError as err:
    sys.exit(f"config error: {err}")

JOB_SCRIPT = "../scripts/job.py"
ENV = "../envs/iobs.yaml"
RESULTS = "results"
SYN = config["synthetic"]
