import subprocess
import sys


def test_the_api_process_never_imports_torch():
    """Every method's spec is imported by the API; none of them may pull torch into the API process."""
    code = "import sys, app.main, modelpress.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
