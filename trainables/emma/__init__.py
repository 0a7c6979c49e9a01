"""Task family `emma`: HRR-memory Needle-in-a-Haystack and ListOps-lite (spec: shared/specs/emma.md)."""
