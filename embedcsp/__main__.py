"""`python -m embedcsp` is the `embedcsp` command."""

from embedcsp.cli import main

main()
