"""``python -m segcli`` (also what ``torchrun -m segcli`` runs)."""

from segcli.cli import main

if __name__ == "__main__":
    main()
