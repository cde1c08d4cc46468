"""A dry-run of a pipeline: its whole run on a sample, in a scratch home production never
sees (`platformctl dry-run`, and the dry-run stage of `platformctl ci`)."""
