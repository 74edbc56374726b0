"""Objects: ingestion (builtin, local, Objaverse), cleaning, CoACD decomposition, and the object store."""
