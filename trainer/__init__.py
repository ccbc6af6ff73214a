"""Everything an instructor touches: job config, datasets, the training worker, the job store, publishing."""
