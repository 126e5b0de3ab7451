"""modelpress for its users: the Python client of the service and the `modelpress` command line (which also
starts the service's processes). Importing it never imports torch or the server packages."""
