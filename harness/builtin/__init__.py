"""Built-in plugins, registered through the same ``mimic_harness`` entry-point group as any other."""
