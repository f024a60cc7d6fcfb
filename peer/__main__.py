"""``python -m peer``: the same as the ``peer`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
