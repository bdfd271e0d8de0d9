"""`python -m prectr`: the `prectr` command."""

from prectr.cli import main

main()
