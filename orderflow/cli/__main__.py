"""`python -m orderflow.cli`: the same command line as the `orderflow` script, for child processes of the dev stack."""

from orderflow.cli import main

if __name__ == "__main__":
    main(prog_name="orderflow")
