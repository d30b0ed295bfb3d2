"""`python -m eclip.cli`: the same as the `eclip` command."""
from eclip.cli import main

main()
