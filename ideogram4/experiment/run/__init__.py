"""Running jobs and writing what they make: the job loop (`runner`, entered by `entry`), the pipeline cache,
output folders, manifest and records, metrics beside sampling (`scored_writer`), trackers, provenance and
the sweep callbacks."""
