"""`python -m otelprobe.cli`."""

from __future__ import annotations

import sys

from otelprobe.cli import main

sys.exit(main())
