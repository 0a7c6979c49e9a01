"""Task family `hartmann`: the multi-fidelity Hartmann-3 and Hartmann-6 functions, a synthetic benchmark for
the searchers (issue 14): known optima, cheap trials, so the full Ray + Optuna + ASHA path is what is measured."""
