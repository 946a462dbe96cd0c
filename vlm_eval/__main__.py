import sys

from vlm_eval.cli import main

sys.exit(main())
