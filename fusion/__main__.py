"""`python -m fusion ...`: see fusion/cli/main.py."""
from fusion.cli.main import main

raise SystemExit(main())
