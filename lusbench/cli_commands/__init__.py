"""One module per ``lusbench`` subcommand: ``add_parser(subparsers)`` wires ``func(args) -> exit code``."""
