"""The `attrib` command line (installed as the `attrib_cli` package)."""
