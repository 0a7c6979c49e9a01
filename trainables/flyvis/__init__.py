"""Task family `flyvis`: the fly visual-system connectome GNN (spec: shared/specs/flyvis.md)."""
