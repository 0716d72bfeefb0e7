"""`python -m service.cli`: the same as the `cohort-match` console script."""

from service.cli.app import main

if __name__ == "__main__":
    main()
