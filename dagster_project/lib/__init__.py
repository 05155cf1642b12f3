"""The pipeline's library: windows, batches, storage, hour summaries, feedback, retention. No Dagster here
(an import-linter contract holds it): the definitions in `dagster_project.defs` are shells over it."""
