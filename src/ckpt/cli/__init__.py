"""The ``ckpt`` command line. Commands parse arguments, call the library, and render what it returns."""
