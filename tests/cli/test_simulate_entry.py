"""bids_harmonize-simulate in an install without the 'simulate' extra (the container image)."""

import subprocess
import sys

SCRIPT = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, path=None: None if name in ("nilearn", "matplotlib") else real(name, path)
from bids_harmonize.cli.simulate import main
code = main(["/nonexistent/out"])
assert not [m for m in sys.modules if m.startswith(("nilearn", "matplotlib", "bids_harmonize.simulate"))]
sys.exit(code)
"""


def test_the_simulator_entry_names_the_extra_without_importing_the_simulator():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "pip install 'bids_harmonize[simulate]'" in done.stderr and "Traceback" not in done.stderr
