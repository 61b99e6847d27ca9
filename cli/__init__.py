"""The `mimi` command line (installed as the `mimi_cli` package)."""
