"""``python -m search search STUDY.yaml`` / ``python -m search report OUT_DIR``."""

import sys

from search.cli import main

sys.exit(main())
