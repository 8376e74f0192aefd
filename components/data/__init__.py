"""Data sources, dataset reading and webdataset shards."""
