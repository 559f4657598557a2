"""Runs the iobs function a rule names in params.job (iobs.pipeline.runner). Kept to the one call on purpose."""
import sys
from pathlib import Path

# Import the package from this checkout even in a Snakemake-managed conda env where it is not pip-installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821

from iobs.pipeline.runner import run_from_snakemake  # noqa: E402

run_from_snakemake(snakemake)  # noqa: F821
