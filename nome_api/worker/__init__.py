"""The run worker: claims runs with a lease and drives their harness."""
