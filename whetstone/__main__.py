"""``python -m whetstone``: the same as the ``whetstone`` console script."""

from whetstone.cli import main

if __name__ == "__main__":
    main(prog_name="whetstone")
