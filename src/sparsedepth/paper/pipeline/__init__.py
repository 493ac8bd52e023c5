"""From a profile to results on disk: the run cache, parallel scheduling and the notebook driver."""
