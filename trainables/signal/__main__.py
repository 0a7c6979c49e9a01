from tuner.single_run import main
from trainables.signal.family import FAMILY

raise SystemExit(main(FAMILY))
