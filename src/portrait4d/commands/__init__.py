"""One module per ``portrait4d`` subcommand (see :mod:`portrait4d.cli`)."""
