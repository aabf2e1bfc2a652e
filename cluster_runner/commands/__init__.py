"""One module per ``runner`` subcommand, each imported only when its command runs."""
