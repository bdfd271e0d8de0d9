"""`python -m prectr.cli` (as `torchrun ... -m prectr.cli train` runs it): the `prectr` command."""

from prectr.cli import main

main()
