"""`python -m cat_jax.cli ...` is `cat-jax ...`."""
import sys

from cat_jax.cli.app import main

sys.exit(main())
