"""``python -m mobileunet COMMAND``: the command line lives in ``mobileunet/cli.py``."""
from mobileunet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
