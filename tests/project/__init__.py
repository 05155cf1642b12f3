"""The repository as users read it: layers, generated references, compose, dashboards."""
