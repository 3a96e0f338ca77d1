import sys

from lifecycle.cli import main

# Guarded: Airflow's plugin manager imports every module under plugins/, this one included.
if __name__ == "__main__":
    sys.exit(main())
