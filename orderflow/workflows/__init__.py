"""The sagas: one module per saga, plus the compensation helper. Workflow code only; no I/O."""
