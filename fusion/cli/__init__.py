"""`python -m fusion ...`: the command line."""
