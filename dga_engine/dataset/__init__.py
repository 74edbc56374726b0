"""The grasp dataset: versioned Arrow schema, Parquet shards with manifests, readers, verification."""
