from tuner.single_run import main
from trainables.mpm_inr.family import FAMILY

raise SystemExit(main(FAMILY))
