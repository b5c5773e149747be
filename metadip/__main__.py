"""``python -m metadip`` runs the command line."""

from metadip.cli import main

if __name__ == "__main__":
    main(prog_name="metadip")
