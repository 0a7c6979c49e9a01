from tuner.single_run import main
from trainables.flyvis.family import FAMILY

raise SystemExit(main(FAMILY))
