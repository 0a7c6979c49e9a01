from trainables.hartmann.family import FAMILY
from tuner.single_run import main

raise SystemExit(main(FAMILY))
