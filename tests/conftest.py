import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# as pipeline/run_all.py does: idle OpenMP threads must not spin (set before lightgbm is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
