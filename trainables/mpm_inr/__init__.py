"""Task family `mpm_inr`: SIREN fits of MLS-MPM particle fields (spec: shared/specs/mpm_inr.md)."""
