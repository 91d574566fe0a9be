"""lusbench's built-in plugins, registered through the ``lusbench`` entry-point group like any outside plugin."""
