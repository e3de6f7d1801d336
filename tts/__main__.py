"""`python -m tts` is the same as the `tts` command."""
import sys

from tts.cli import main

sys.exit(main())
