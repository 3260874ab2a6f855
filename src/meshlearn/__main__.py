"""`python -m meshlearn` is the `meshlearn` command."""

from meshlearn.cli import main

main()
